"""The stream processor: touchpoints from Kafka into customer memory (Redis)."""
