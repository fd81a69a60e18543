"""Alerts: a workspace's owners and admins hear it from Postroom when mail stops flowing.

An *incident* (:class:`~postroom.alerts.models.Incident`) is opened when an integration enters
Needs reconnect, Admin consent missing or Access denied, when a mailbox is stopped (access
denied), or when a mailbox's sync lags more than ``POSTROOM_ALERT_LAG_MINUTES``; it is resolved
when that is over. Each incident sends one message when it opens and one when it is resolved —
by email to every owner and admin (:mod:`postroom.mail`) and, if configured, to Slack or
Teams incoming webhooks (JSON ``{"text": ...}``): the operator's (``POSTROOM_ALERT_WEBHOOK_URL``,
every workspace's alerts) and the workspace's own, set on its Alerts page.

* :mod:`.messages` composes what is said (pure): what happened, why, and the one button to press.
* :mod:`.service` finds the problems in the database, opens and resolves incidents and sends,
  from the reconcile job (every minute), never from a web request. Level-triggered like the rest
  of sync: the truth is the statuses and sync times in the database; a message that could not be
  sent is tried again at the next reconcile, and each channel is recorded once it is sent.
* :mod:`.webhook` posts to a workspace's own webhook, whose URL is hostile: SSRF rules, checked
  at save and at every send, the connection pinned to the checked address.
* :mod:`.views` is the Alerts page (owners and admins): set, test and remove that webhook.
"""
