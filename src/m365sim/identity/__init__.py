"""The Microsoft identity platform (Entra ID v2.0 endpoints), as MSAL and browsers meet it.

Layout, from the outside in:
  routes.py          the Starlette routes (Microsoft's endpoints, the pages' form posts, and
                     the emulator's control endpoints for security events and the clock)
  discovery.py       OpenID configuration, JWKS, MSAL instance discovery, userinfo
  authorize.py       /authorize and /logout: request validation, then a sign-in flow
  adminconsent.py    /v2.0/adminconsent and the legacy /adminconsent
  signin.py          the sign-in, MFA, password-update and account-picker steps
  consent.py         user and admin consent screens; authorization codes; error redirects
  token.py           /token: authorization_code, refresh_token, client_credentials
  events.py          security events (password resets, revocation, MFA, consent, secrets)
  emulator_routes.py the control API for those events and the clock
  web.py             one browser exchange: cookies, pages (Jinja2), responses to the app
  protocol.py        authorities, form parsing, flows and sessions, redirect-borne errors
  permissions.py     Graph's delegated/application permission names, scope parsing

Everything Microsoft-facing follows reference/graph.md section 1; docs/m365sim/identity.md
describes the behaviour, the control endpoints and the known deviations.
"""
