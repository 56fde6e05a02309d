"""The `mlops` command line: parses, calls one library function, prints."""
