"""JourneyRegistry: immutable versioned journey definitions, their status and the trigger index."""
