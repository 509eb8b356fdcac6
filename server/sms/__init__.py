"""The SMS bridge: providers, the outbox worker, inbound SMS, keywords and segments."""
