"""Postroom: self-hostable inbox automation for Microsoft 365.

Reads every incoming email of connected Outlook mailboxes in real time, categorizes it with
coloured Outlook categories, files it into folders and, where configured, forwards it. Never
deletes an email and stores no mailbox content. See PRODUCT.md and ARCHITECTURE.md in shared/
and docs/ in this repository.
"""

__version__ = "0.1.0"
