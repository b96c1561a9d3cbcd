"""Conditions in CEL (Common Expression Language): compiled, never `eval`-ed.

Which variables an expression may use depends on where it sits (see docs/journeys.md):
`customer` is the customer's memory, `event` the event being matched (or, in a branch, the
event that woke the enrollment last), `trigger` the event that started the enrollment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cel

CUSTOMER: Final = "customer"
EVENT: Final = "event"
TRIGGER: Final = "trigger"
MAX_EXPRESSION_CHARS: Final = 2_000

_POSITION: Final = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
# Macros that bind a loop variable: `items.exists(x, x > 1)` binds `x`.
_BINDING_MACRO: Final = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,"
)


@dataclass(frozen=True)
class ConditionError(ValueError):
    """A CEL expression that does not compile; line and column are 1-based within it."""

    message: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        return self.message


def compile_condition(expression: str) -> cel.Program:
    """Compile `expression`; raises ConditionError naming the first syntax error and where."""
    if not expression.strip():
        raise ConditionError("empty expression")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ConditionError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        return cel.compile(expression)
    except BaseException as exc:  # noqa: BLE001 - the Rust side raises PanicException on odd input
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise _condition_error(str(exc)) from None


def free_variables(program: cel.Program) -> set[str]:
    """Top-level names `program` reads, without those bound by comprehension macros."""
    bound = set(_BINDING_MACRO.findall(program.source))
    return {name.split(".", 1)[0] for name in program.variables()} - bound


def evaluate(program: cel.Program, variables: Mapping[str, Any]) -> Any:
    """Run a compiled condition over `variables` (plain dicts, lists and scalars)."""
    return program.execute(dict(variables))


def _condition_error(text: str) -> ConditionError:
    for raw in text.splitlines():
        match = _POSITION.search(raw)
        if match:
            return ConditionError(
                f"invalid CEL: {match.group(3).strip()}",
                line=int(match.group(1)),
                column=int(match.group(2)),
            )
    first = text.splitlines()[0] if text else "does not compile"
    return ConditionError(f"invalid CEL: {first}")
