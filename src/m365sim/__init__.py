"""m365sim: a local Microsoft 365 for tests, demos and benchmarks.

It serves the Microsoft identity platform (Entra ID v2.0 OAuth/OIDC) and the Microsoft Graph
v1.0 mail subset over HTTPS, with change notifications, throttling, fault injection, a control
API under ``/_emulator/`` and an Outlook-like viewer. It imports nothing from ``postroom``, so
the service and its test double cannot share a bug; MSAL Python and the msgraph-sdk work
against it unchanged, pointed at it by configuration only.

Layout:
  store.py         the in-memory Microsoft 365: tenants, users/mailboxes, apps, grants,
                   folders, messages, master categories, change logs, audits
  clock.py         the emulator's clock (advanceable, so expiry is testable without waiting)
  tokens.py        signing keys, access/id/refresh tokens, authorization codes
  identity/        the identity platform: discovery, authorize, token, admin consent, pages
  graph/           Graph v1.0: request dispatch, auth, permissions, throttling, mail endpoints
  notifications/   subscriptions, validation handshake, delivery, lifecycle events
  control.py       the control API (not Microsoft's): scenario setup, events, counters
  viewer.py        the Outlook-like viewer
  app.py           the ASGI application that mounts all of the above
"""

__version__ = "0.1.0"
