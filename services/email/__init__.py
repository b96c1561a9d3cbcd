"""The email channel service: `dispatch.email` → SMTP → receipts."""
