"""The web application: pages, forms, OAuth callbacks (and, later, webhooks)."""
