"""Journey source text (YAML or JSON) → plain data, with the line and column of every node.

YAML is read with PyYAML's safe composer and the YAML 1.2 core schema (only `true`/`false`
are booleans, `10:00` stays a string, no timestamps), so what a designer writes is what the
validator sees. JSON is YAML; tabs between JSON tokens are read as spaces. Anchors and
aliases work; merge keys (`<<`), custom tags, duplicate keys and non-string keys are errors.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from enishi.journeys.diagnostics import Diagnostic, Path, Severity, path_text

MAX_SOURCE_CHARS: Final = 1_000_000
MAX_NODES: Final = 100_000  # aliases can multiply a small text into a huge tree
MAX_DEPTH: Final = 40  # the language nests a few levels; more is a mistake or an attack

_STR: Final = "tag:yaml.org,2002:str"
_INT: Final = "tag:yaml.org,2002:int"
_FLOAT: Final = "tag:yaml.org,2002:float"
_BOOL: Final = "tag:yaml.org,2002:bool"
_NULL: Final = "tag:yaml.org,2002:null"
_MAP: Final = "tag:yaml.org,2002:map"
_SEQ: Final = "tag:yaml.org,2002:seq"


class _CoreLoader(yaml.SafeLoader):
    """SafeLoader resolving plain scalars by the YAML 1.2 core schema."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}


_CoreLoader.add_implicit_resolver(
    _NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
_CoreLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_CoreLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.nan|\.NaN|\.NAN)$"
    ),
    list("-+.0123456789"),
)


@dataclass(frozen=True)
class Mark:
    """A 1-based position in the source."""

    line: int
    column: int


@dataclass
class SourceMap:
    """Where each value (and each mapping key) of the loaded data sits in the source."""

    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)
    # Scalar style per path: None plain, "'" or '"' quoted, "|" or ">" block.
    styles: dict[Path, str | None] = field(default_factory=dict)

    def value(self, path: Path) -> Mark:
        """The position of the value at `path`, or of its nearest ancestor that exists."""
        return self._nearest(self.values, path)

    def key(self, path: Path) -> Mark:
        """The position of the key naming `path` (for unknown or misplaced fields)."""
        if path in self.keys:
            return self.keys[path]
        return self.value(path)

    @staticmethod
    def _nearest(table: dict[Path, Mark], path: Path) -> Mark:
        for end in range(len(path), -1, -1):
            mark = table.get(path[:end])
            if mark is not None:
                return mark
        return Mark(0, 0)


@dataclass(frozen=True)
class Loaded:
    """The outcome of reading a source: data (None when unreadable), positions, findings."""

    data: Any
    source_map: SourceMap
    diagnostics: tuple[Diagnostic, ...]


def load_source(text: str) -> Loaded:
    """Parse YAML or JSON text; never raises: syntax problems come back as diagnostics."""
    source_map = SourceMap()
    if len(text) > MAX_SOURCE_CHARS:
        return Loaded(None, source_map, (_error("too-large", _too_large(len(text)), Mark(0, 0)),))
    try:
        root = yaml.compose(_yaml_text(text), Loader=_CoreLoader)
    except yaml.MarkedYAMLError as exc:
        return Loaded(None, source_map, (_syntax_error(exc),))
    except yaml.reader.ReaderError as exc:
        mark = _mark_of_offset(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character[:1] or " ")
        message = f"character U+{code:04X} is not allowed in YAML ({exc.reason})"
        return Loaded(None, source_map, (_error("yaml", message, mark),))
    except yaml.YAMLError as exc:
        return Loaded(None, source_map, (_error("yaml", f"YAML: {exc}", Mark(0, 0)),))
    except RecursionError:
        message = f"nesting too deep (the limit is {MAX_DEPTH} levels)"
        return Loaded(None, source_map, (_error("too-deep", message, Mark(0, 0)),))
    if root is None:
        return Loaded(None, source_map, (_error("empty", "the source is empty", Mark(1, 1)),))
    builder = _Builder(source_map)
    data = builder.build(root)
    return Loaded(data, source_map, tuple(builder.diagnostics))


def _yaml_text(text: str) -> str:
    # JSON allows tabs between tokens, YAML does not; a raw tab cannot occur inside a JSON
    # string, so in a source that is valid JSON every tab is whitespace and a space is the
    # same width for column numbers.
    if "\t" in text and text.lstrip().startswith("{"):
        try:
            json.loads(text)
        except ValueError:
            return text
        return text.replace("\t", " ")
    return text


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, recording positions."""

    def __init__(self, source_map: SourceMap) -> None:
        self.source_map = source_map
        self.diagnostics: list[Diagnostic] = []
        self.nodes = 0
        self.stopped = False
        self.open: set[int] = set()

    def build(self, root: Node) -> Any:
        value = self._node(root, ())
        return None if self.stopped else value

    def _node(self, node: Node, path: Path) -> Any:
        if self.stopped:
            return None
        self.nodes += 1
        mark = _mark(node)
        self.source_map.values.setdefault(path, mark)
        if self.nodes > MAX_NODES:
            self._stop("too-large", f"more than {MAX_NODES} values (aliases expand)", mark)
            return None
        if len(path) > MAX_DEPTH:
            self._stop("too-deep", f"nesting deeper than {MAX_DEPTH} levels", mark)
            return None
        if id(node) in self.open:
            self._stop("yaml", "an alias refers to a node that contains it", mark)
            return None
        if isinstance(node, ScalarNode):
            self.source_map.styles[path] = node.style
            return self._scalar(node, path)
        self.open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._check_tag(node, _SEQ, path)
                return [self._node(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self._check_tag(node, _MAP, path)
                return self._mapping(node, path)
        finally:
            self.open.discard(id(node))
        return None

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_mark = _mark(key_node)
            if not isinstance(key_node, ScalarNode) or key_node.tag not in (_STR, _INT):
                self._add("schema", "keys must be plain strings", path, key_mark)
                continue
            key = str(key_node.value)
            if key == "<<" and key_node.style is None:
                self._add(
                    "yaml", "merge keys (<<) are not supported; repeat the fields", path, key_mark
                )
                continue
            if key in result:
                first = self.source_map.keys.get((*path, key), Mark(0, 0))
                self._add(
                    "duplicate-key",
                    f"duplicate key {key!r} (first at line {first.line})",
                    (*path, key),
                    key_mark,
                )
                continue
            self.source_map.keys[(*path, key)] = key_mark
            result[key] = self._node(value_node, (*path, key))
        return result

    def _scalar(self, node: ScalarNode, path: Path) -> Any:
        text = str(node.value)
        tag = node.tag
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return text.lower() == "true"
        if tag == _INT:
            return _int(text)
        if tag == _FLOAT:
            return _float(text)
        if tag != _STR:
            self._add("yaml", f"unsupported YAML tag {tag!r}", path, _mark(node))
        return text

    def _check_tag(self, node: Node, expected: str, path: Path) -> None:
        if node.tag != expected:
            self._add("yaml", f"unsupported YAML tag {node.tag!r}", path, _mark(node))

    def _add(self, code: str, message: str, path: Path, mark: Mark) -> None:
        self.diagnostics.append(_error(code, message, mark, path))

    def _stop(self, code: str, message: str, mark: Mark) -> None:
        self.stopped = True
        self.diagnostics.append(_error(code, message, mark))


def _int(text: str) -> int | float:
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    if len(text) > 30:
        # CPython refuses to parse decimals of thousands of digits; nothing here needs a
        # number that big, and an infinite float fails every integer field cleanly.
        return float(text)
    return int(text)


def _float(text: str) -> float:
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(text)


def _mark(node: Node) -> Mark:
    return Mark(node.start_mark.line + 1, node.start_mark.column + 1)


def _mark_of_offset(text: str, offset: int) -> Mark:
    before = text[:offset]
    return Mark(before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


def _syntax_error(exc: yaml.MarkedYAMLError) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    where = Mark(mark.line + 1, mark.column + 1) if mark is not None else Mark(0, 0)
    problem = exc.problem or "syntax error"
    context = f" {exc.context}" if exc.context else ""
    return _error("yaml", f"YAML: {problem}{context}", where)


def _too_large(size: int) -> str:
    return f"the source has {size} characters; the limit is {MAX_SOURCE_CHARS}"


def _error(code: str, message: str, mark: Mark, path: Path = ()) -> Diagnostic:
    return Diagnostic(Severity.ERROR, code, message, path_text(path), mark.line, mark.column)
