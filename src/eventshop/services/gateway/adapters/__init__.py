"""The gateway's adapters: tokens and sessions (auth), rate limits, the upstream services."""
