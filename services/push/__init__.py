"""The push channel service: `dispatch.push` → FCM HTTP v1 → receipts."""
