"""Sync: from a change notification (or a poll, or a reconcile) to processed messages.

Level-triggered: the truth is in the database (delta links, subscriptions, the ledger); jobs
only say "look now". ``models`` holds the per-folder state, ``engine`` the work, ``jobs`` the
procrastinate tasks, ``webhooks`` the endpoint Graph calls.
"""
