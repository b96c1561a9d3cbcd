"""Validation findings: one `Diagnostic` per mistake, mapping 1:1 onto `enishi.v1.Diagnostic`."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from enishi.errors import field_path
from enishi.v1 import journey_pb2

Path = tuple[str | int, ...]


class Severity(enum.StrEnum):
    """How bad a finding is: errors block registration, warnings and infos do not."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    def to_proto(self) -> journey_pb2.DiagnosticSeverity.ValueType:
        return _SEVERITY_TO_PROTO[self]


_SEVERITY_TO_PROTO = {
    Severity.ERROR: journey_pb2.DIAGNOSTIC_SEVERITY_ERROR,
    Severity.WARNING: journey_pb2.DIAGNOSTIC_SEVERITY_WARNING,
    Severity.INFO: journey_pb2.DIAGNOSTIC_SEVERITY_INFO,
}


@dataclass(frozen=True)
class Diagnostic:
    """One finding; `code` is stable ("unknown-step"), line and column 1-based (0: unknown)."""

    severity: Severity
    code: str
    message: str
    path: str = ""
    line: int = 0
    column: int = 0

    def to_proto(self) -> journey_pb2.Diagnostic:
        """The same finding as the registry's `enishi.v1.Diagnostic`."""
        return journey_pb2.Diagnostic(
            severity=self.severity.to_proto(),
            code=self.code,
            message=self.message,
            path=self.path,
            line=self.line,
            column=self.column,
        )

    def format(self, filename: str) -> str:
        """Compiler style: `f.yaml:12:7: error: unknown step 'nudge2' (steps[3].next)`."""
        where = f"{filename}:{self.line}:{self.column}" if self.line else filename
        suffix = f" ({self.path})" if self.path else ""
        return f"{where}: {self.severity.value}: {self.message}{suffix}"


def path_text(path: Path) -> str:
    """`("steps", 3, "wait_for", "timeout")` → `"steps[3].wait_for.timeout"`."""
    return field_path(*path)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    """True when any finding is an error (the journey cannot be registered)."""
    return any(d.severity is Severity.ERROR for d in diagnostics)


def sort_key(diagnostic: Diagnostic) -> tuple[int, int, str, str]:
    """Source order; findings without a position last."""
    line = diagnostic.line or 1 << 30
    return (line, diagnostic.column, diagnostic.path, diagnostic.code)
