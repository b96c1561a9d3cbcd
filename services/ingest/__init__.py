"""The ingest service: touchpoints in over gRPC (`IngestService`), out to Kafka `touchpoints`."""
