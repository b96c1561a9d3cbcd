"""The SMS channel service: `dispatch.sms` → a REST SMS provider → receipts."""
