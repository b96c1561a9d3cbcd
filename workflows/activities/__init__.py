"""Temporal activities of the journey workflow: each module one concern, each a class holding
its injected clients (Redis, Kafka), registered by the worker service (services/worker)."""
