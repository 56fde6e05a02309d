"""The team's own helpers, shared by steps."""
