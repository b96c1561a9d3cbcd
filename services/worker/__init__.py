"""The journey worker: runs JourneyWorkflow and its activities on the `enishi-journeys` queue."""
