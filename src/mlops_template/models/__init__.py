"""Scoring, targets, flavours, the registry and its gate, promotion between environments."""
