"""The `enishi` command line."""
