"""Postroom's own users, workspaces (organizations) and roles."""
