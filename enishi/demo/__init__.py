"""`enishi demo`: synthetic customers, their journeys, live progress and the accounting."""
