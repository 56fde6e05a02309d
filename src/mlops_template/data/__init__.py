"""Tables as content-addressed snapshots: hashing, reading, manifests, diffs, predictions."""
