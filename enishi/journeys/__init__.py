"""The journey language: models, loader with source positions, validator, JSON Schema.

`validate(source)` reports every mistake; `parse_journey(source)` returns a `Journey` or
raises `JourneyInvalid`. The grammar is in docs/journeys.md.
"""

from enishi.journeys.diagnostics import Diagnostic, Severity
from enishi.journeys.model import Journey
from enishi.journeys.validate import JourneyInvalid, Validation, parse_journey, validate

__all__ = [
    "Diagnostic",
    "Journey",
    "JourneyInvalid",
    "Severity",
    "Validation",
    "parse_journey",
    "validate",
]
