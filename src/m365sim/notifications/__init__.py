"""Change notifications: subscriptions, the validation handshake, delivery, lifecycle events."""
