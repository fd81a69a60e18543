"""The demo: m365sim with a demo tenant, Postroom pointed at it, and a stream of new mail."""
