"""Steps, their context, the runner, cross-process coordination, provenance and replay."""
