"""The provider sandbox: local SMTP, LINE, SMS and FCM stand-ins with a ledger and faults."""
