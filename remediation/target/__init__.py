"""A target environment: its typed inventory (`runbooks/targets/<name>.toml`), secret references
resolved at the last moment, evidence profiles, and `connect` — the one place clients are built."""
