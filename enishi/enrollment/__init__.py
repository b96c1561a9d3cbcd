"""Enrolling customers in journeys: the one path every trigger takes to Temporal.

The stream processor (event and condition triggers, identity merges) and the worker's
audience runs (schedule triggers, the condition sweep) share it: the trigger index as its
readers need it (`index`), the enrollment records that decide re-entry and caps
(`records`), the two Temporal calls (`calls`) and the enrolling step that ties them together
(`enroller`). Contract: docs/journey-runtime.md.
"""
