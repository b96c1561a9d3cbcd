"""The LINE channel service: `dispatch.line` → Messaging API push; the webhook → touchpoints."""
