"""Outlook integrations: connection, setup wizard, mailboxes and status."""
