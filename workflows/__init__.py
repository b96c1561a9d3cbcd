"""Temporal workflows (deterministic code only) and their activities (in their own modules)."""
