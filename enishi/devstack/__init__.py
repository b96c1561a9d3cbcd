"""The embedded local stack behind `enishi dev up` and the integration test fixtures.

Real servers from PyPI wheels (Tansu, the Temporal dev server, Valkey) plus every enishi
service in the catalogue, each its own process, supervised through a state directory.
"""
