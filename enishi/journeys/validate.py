"""Every mistake in a journey source, each with its line, column and path.

Three layers run in order and each reports all it finds: the YAML/JSON reader (syntax), the
models (shape and field types), then the rules that need the whole journey (step graph,
templates, expressions in context). `validate` never raises, whatever the input.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import jinja2
import jinja2.meta
import jinja2.sandbox
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from enishi.errors import FieldError, InvalidArgument
from enishi.journeys import conditions, model
from enishi.journeys.conditions import CUSTOMER, EVENT, TRIGGER
from enishi.journeys.diagnostics import Diagnostic, Path, Severity, has_errors, path_text, sort_key
from enishi.journeys.loader import Mark, SourceMap, load_source

# Codes our own validators raise; any other pydantic error is reported as "schema".
_OWN_CODES: Final = frozenset(
    {
        "bad-id",
        "bad-event-name",
        "bad-locale",
        "bad-duration",
        "invalid-cel",
        "unknown-channel",
        "bad-time",
        "unknown-timezone",
        "unknown-calendar",
        "bad-cron",
        "bad-holdout",
        "bad-weight",
    }
)
# What a template is rendered with (docs/journeys.md, "Templates").
TEMPLATE_VARIABLES: Final = frozenset({CUSTOMER, EVENT, TRIGGER, "journey"})
_TYPE_NAMES: Final = {
    str: "text",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "a mapping",
    type(None): "nothing (null)",
}
_MAPPING_ERRORS: Final = frozenset({"model_type", "dict_type", "model_attributes_type"})
_LIST_ERRORS: Final = frozenset({"tuple_type", "list_type"})


@dataclass(frozen=True)
class Validation:
    """The outcome of validating a source: the journey (None when there are errors) and findings."""

    journey: model.Journey | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is an error (warnings allowed): the journey can be registered."""
        return not has_errors(self.diagnostics)


class JourneyInvalid(InvalidArgument):
    """A journey source with errors; `diagnostics` has them all (INVALID_ARGUMENT over gRPC)."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity is Severity.ERROR] or list(
            self.diagnostics
        )
        super().__init__(
            FieldError(d.path, f"{d.message} (line {d.line}, column {d.column})") for d in errors
        )


def validate(source: str) -> Validation:
    """Read and check a journey source (YAML or JSON); never raises."""
    try:
        return _validate(source)
    except Exception as exc:  # noqa: BLE001 - a validator bug must not take a service down
        internal = Diagnostic(
            Severity.ERROR, "internal", f"the validator failed: {type(exc).__name__}: {exc}"
        )
        return Validation(None, (internal,))


def parse_journey(source: str) -> model.Journey:
    """The journey in `source`; raises JourneyInvalid listing every error."""
    result = validate(source)
    if result.journey is None:
        raise JourneyInvalid(result.diagnostics)
    return result.journey


def _validate(source: str) -> Validation:
    loaded = load_source(source)
    found = list(loaded.diagnostics)
    if loaded.data is None and has_errors(found):
        return Validation(None, tuple(sorted(found, key=sort_key)))
    if not isinstance(loaded.data, dict):
        found.append(
            _at(loaded.source_map, (), "schema", "a journey is a mapping (id, name, trigger, ...)")
        )
        return Validation(None, tuple(sorted(found, key=sort_key)))
    try:
        journey = model.Journey.model_validate(loaded.data)
    except ValidationError as exc:
        found.extend(schema_diagnostics(exc, loaded.data, loaded.source_map))
        return Validation(None, tuple(sorted(found, key=sort_key)))
    found.extend(check_journey(journey, loaded.source_map))
    ordered = tuple(sorted(found, key=sort_key))
    return Validation(None if has_errors(ordered) else journey, ordered)


# --- schema errors (pydantic) → diagnostics ------------------------------------------------


def schema_diagnostics(exc: ValidationError, data: Any, source_map: SourceMap) -> list[Diagnostic]:
    """Translate pydantic's errors into findings at the source position of each value."""
    errors = exc.errors(include_url=False)
    paths = [_source_path(err["loc"], data) for err in errors]
    found = []
    for err, (path, on_key) in zip(errors, paths, strict=True):
        if err["type"] == "too_short" and any(
            other != path and other[: len(path)] == path for other, _ in paths
        ):
            continue  # "at least 1 item after validation": its items failed and say why
        found.append(_schema_diagnostic(err, path, on_key, data, source_map))
    return found


def _source_path(loc: tuple[str | int, ...], data: Any) -> tuple[Path, bool]:
    """The error's path in the source (union tags dropped) and whether it names a key."""
    path: list[str | int] = []
    on_key = False
    for part in loc:
        if isinstance(part, str) and part in model.UNION_TAGS and not _has_key(data, path, part):
            continue
        if part == "[key]":
            on_key = True
            continue
        path.append(part)
    return tuple(path), on_key


def _has_key(data: Any, path: list[str | int], key: str) -> bool:
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(node, dict) and key in node


def _schema_diagnostic(
    err: ErrorDetails, path: Path, on_key: bool, data: Any, source_map: SourceMap
) -> Diagnostic:
    kind = err["type"]
    code = kind if kind in _OWN_CODES else "schema"
    message = err["msg"]
    mark = source_map.key(path) if on_key else source_map.value(path)
    if kind == "extra_forbidden" and path:
        mark = source_map.key(path)
        message = _unknown_field_message(path)
    elif kind == "missing" and path:
        message = f"missing field {path[-1]!r}"
    elif kind in _MAPPING_ERRORS:
        message = f"expected a mapping, got {_type_name(err['input'])}"
    elif kind in _LIST_ERRORS:
        message = f"expected a list, got {_type_name(err['input'])}"
    elif kind == "invalid-cel":
        mark = _cel_mark(mark, source_map, path, err.get("ctx") or {})
    return Diagnostic(Severity.ERROR, code, message, path_text(path), mark.line, mark.column)


def _unknown_field_message(path: Path) -> str:
    key = path[-1]
    parent = path[:-1]
    if len(parent) == 2 and parent[0] == "steps" and key in model.STEP_KINDS:
        return f"a step does one thing, this one also has {key!r}: make it a step of its own"
    message = f"unknown field {key!r}"
    close = difflib.get_close_matches(str(key), sorted(_known_fields()), n=1, cutoff=0.75)
    return f"{message}; did you mean {close[0]!r}?" if close else message


@functools.cache
def _known_fields() -> frozenset[str]:
    """Every field name of the language, for "did you mean" hints."""
    models = [c for c in vars(model).values() if isinstance(c, type) and issubclass(c, BaseModel)]
    return frozenset(
        info.alias or name for cls in models for name, info in cls.model_fields.items()
    )


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _cel_mark(mark: Mark, source_map: SourceMap, path: Path, ctx: dict[str, Any]) -> Mark:
    """Point inside a one-line expression at the column CEL complained about."""
    line, column = int(ctx.get("line", 0)), int(ctx.get("column", 0))
    style = source_map.styles.get(path, "|")
    if line != 1 or column < 1 or style not in (None, "'", '"') or not mark.line:
        return mark
    quote = 0 if style is None else 1
    return Mark(mark.line, mark.column + quote + column - 1)


# --- whole-journey rules -------------------------------------------------------------------


def check_journey(journey: model.Journey, source_map: SourceMap | None = None) -> list[Diagnostic]:
    """The rules that need the whole journey: steps, templates, expressions in context."""
    rules = _Rules(journey, source_map or SourceMap())
    rules.run()
    return rules.found


class _Rules:
    def __init__(self, journey: model.Journey, source_map: SourceMap) -> None:
        self.journey = journey
        self.source_map = source_map
        self.found: list[Diagnostic] = []
        self.ids = {s.id for s in journey.steps}

    def run(self) -> None:
        unique = self.duplicate_steps()
        self.references()
        if unique:  # with two steps of one id the graph is ambiguous: fix that first
            self.reachability()
            self.loops_without_wait()
        self.unused_next()
        self.sends()
        self.templates()
        self.waits()
        self.branches()
        self.updates()
        self.expressions()
        self.holdout()

    def error(self, path: Path, code: str, message: str, *, key: bool = False) -> None:
        self.found.append(_at(self.source_map, path, code, message, Severity.ERROR, key=key))

    def warning(self, path: Path, code: str, message: str, *, key: bool = False) -> None:
        self.found.append(_at(self.source_map, path, code, message, Severity.WARNING, key=key))

    def default_next(self, index: int) -> str | None:
        steps = self.journey.steps
        return steps[index + 1].id if index + 1 < len(steps) else None

    def edges(self) -> Iterator[tuple[int, model.AnyStep, model.Transition]]:
        for index, step in enumerate(self.journey.steps):
            for edge in model.step_transitions(step, self.default_next(index)):
                yield index, step, edge

    def duplicate_steps(self) -> bool:
        """Report repeated step ids; True when every id is unique."""
        first: dict[str, int] = {}
        for index, step in enumerate(self.journey.steps):
            if step.id in first:
                line = self.source_map.value(("steps", first[step.id], "id")).line
                self.error(
                    ("steps", index, "id"),
                    "duplicate-step",
                    f"duplicate step id {step.id!r} (first at line {line})",
                )
            else:
                first[step.id] = index
        return len(first) == len(self.journey.steps)

    def references(self) -> None:
        for index, _, edge in self.edges():
            if edge.path and edge.target is not None and edge.target not in self.ids:
                hint = difflib.get_close_matches(edge.target, sorted(self.ids), n=1)
                suffix = f"; did you mean {hint[0]!r}?" if hint else ""
                self.error(
                    ("steps", index, *edge.path),
                    "unknown-step",
                    f"{edge.label}: unknown step {edge.target!r}{suffix}",
                )

    def graph(self) -> dict[str, list[str]]:
        """Step id → targets, for the first step of each id and known targets only."""
        graph: dict[str, list[str]] = {}
        for _, step, edge in self.edges():
            if self.journey.steps_by_id.get(step.id) is not step:
                continue
            targets = graph.setdefault(step.id, [])
            if edge.target is not None and edge.target in self.ids:
                targets.append(edge.target)
        return graph

    def reachability(self) -> None:
        graph = self.graph()
        start = self.journey.steps[0].id
        seen = {start}
        pending = [start]
        while pending:
            for target in graph.get(pending.pop(), []):
                if target not in seen:
                    seen.add(target)
                    pending.append(target)
        for index, step in enumerate(self.journey.steps):
            if step.id not in seen:
                self.warning(
                    ("steps", index, "id"),
                    "unreachable-step",
                    f"step {step.id!r} is never reached: no step leads to it",
                )

    def loops_without_wait(self) -> None:
        graph = self.graph()
        moving = {
            sid: [t for t in targets if not _waits(self.journey.steps_by_id[t])]
            for sid, targets in graph.items()
            if not _waits(self.journey.steps_by_id[sid])
        }
        order = {s.id: i for i, s in reversed(list(enumerate(self.journey.steps)))}
        for component in _strongly_connected(moving):
            if len(component) == 1 and component[0] not in moving[component[0]]:
                continue
            members = sorted(component, key=order.__getitem__)
            cycle = " → ".join([*members, members[0]])
            self.error(
                ("steps", order[members[0]], "id"),
                "loop-without-wait",
                f"loop without a wait: {cycle}; put a wait or wait_for on it",
            )

    def unused_next(self) -> None:
        for index, step in enumerate(self.journey.steps):
            if isinstance(step, model.ExitStep) or step.next is None:
                continue
            used = any(
                edge.path == ("next",)
                for edge in model.step_transitions(step, self.default_next(index))
            )
            if not used:
                self.warning(
                    ("steps", index, "next"),
                    "unused-next",
                    f"next is never taken: every way out of {step.kind} {step.id!r} is explicit",
                )

    def sends(self) -> None:
        used: set[str] = set()
        for index, step in enumerate(self.journey.steps):
            if not isinstance(step, model.SendStep):
                continue
            send = step.send
            path: Path = ("steps", index, "send")
            used.add(send.template)
            seen: set[str] = set()
            for j, channel in enumerate(send.fallback):
                if channel in seen:
                    self.error(
                        (*path, "fallback", j),
                        "duplicate-channel",
                        f"{channel!r} is already in the fallback list",
                    )
                elif channel == send.channel:
                    self.warning(
                        (*path, "fallback", j),
                        "duplicate-channel",
                        f"{channel!r} is the step's channel already",
                    )
                seen.add(channel)
            template = self.journey.templates.get(send.template)
            if template is None:
                hint = difflib.get_close_matches(send.template, sorted(self.journey.templates), n=1)
                suffix = f"; did you mean {hint[0]!r}?" if hint else ""
                self.error(
                    (*path, "template"),
                    "unknown-template",
                    f"unknown template {send.template!r}{suffix}",
                )
                continue
            wanted = [((*path, "channel"), send.channel)] + [
                ((*path, "fallback", j), c) for j, c in enumerate(send.fallback)
            ]
            for where, channel in wanted:
                if channel != model.PREFERRED and template.content(channel) is None:
                    self.error(
                        where,
                        "template-missing-channel",
                        f"template {send.template!r} has no {channel} content",
                    )
        for template_id in self.journey.templates:
            if template_id not in used:
                self.warning(
                    ("templates", template_id),
                    "unused-template",
                    f"template {template_id!r} is never sent",
                    key=True,
                )

    def templates(self) -> None:
        env = jinja2.sandbox.SandboxedEnvironment(autoescape=False)
        del env.globals["lipsum"]  # the renderer does not offer it (enishi/sending/render.py)
        declared = set(self.journey.locales)
        for template_id, template in self.journey.templates.items():
            for channel in template.channels():
                contents = template.content(channel) or {}
                path: Path = ("templates", template_id, channel)
                for locale in self.journey.locales:
                    if locale not in contents:
                        self.error(
                            path,
                            "missing-locale",
                            f"template {template_id!r} has no {locale!r} {channel} content; "
                            f"the journey's locales are {', '.join(self.journey.locales)}",
                            key=True,
                        )
                for locale, content in contents.items():
                    if locale not in declared:
                        self.warning(
                            (*path, locale),
                            "undeclared-locale",
                            f"locale {locale!r} is not in the journey's locales",
                            key=True,
                        )
                    for field, text in content.model_dump(exclude_none=True).items():
                        self._template_syntax(env, (*path, locale, field), text)

    def _template_syntax(self, env: jinja2.Environment, path: Path, text: str) -> None:
        try:
            tree = env.parse(text)
        except jinja2.TemplateSyntaxError as exc:
            self.error(
                path,
                "template-syntax",
                f"template syntax (line {exc.lineno} of the text): {exc.message}",
            )
        except (jinja2.TemplateError, RecursionError) as exc:
            self.error(path, "template-syntax", f"template syntax: {exc}")
        else:
            unknown = sorted(jinja2.meta.find_undeclared_variables(tree) - TEMPLATE_VARIABLES)
            for name in unknown:
                self.warning(
                    path,
                    "unknown-template-variable",
                    f"unknown template variable {name!r}; templates see "
                    f"{', '.join(sorted(TEMPLATE_VARIABLES))}",
                )

    def waits(self) -> None:
        for index, step in enumerate(self.journey.steps):
            if not isinstance(step, model.WaitStep):
                continue
            wait = step.wait
            path: Path = ("steps", index, "wait")
            if wait.skip_holidays and wait.calendar is None and self.journey.calendar is None:
                self.error(
                    (*path, "skip_holidays"),
                    "no-calendar",
                    "skip_holidays needs a calendar (here or at the journey level)",
                )
            if wait.calendar is not None and not wait.skip_holidays:
                self.warning(
                    (*path, "calendar"),
                    "unused-calendar",
                    "calendar has no effect without skip_holidays: true",
                )
            if wait.weekdays is not None and len(set(wait.weekdays)) != len(wait.weekdays):
                self.warning((*path, "weekdays"), "duplicate-weekday", "a weekday is listed twice")

    def branches(self) -> None:
        for index, step in enumerate(self.journey.steps):
            if not isinstance(step, model.BranchStep):
                continue
            cases = step.branch
            for i, case in enumerate(cases):
                if isinstance(case, model.BranchElse) and i != len(cases) - 1:
                    self.error(
                        ("steps", index, "branch", i),
                        "else-not-last",
                        "else must be the last case: the cases after it never run",
                    )
            if all(isinstance(c, model.BranchElse) for c in cases):
                self.warning(
                    ("steps", index, "branch"),
                    "branch-without-if",
                    "a branch with only else always goes one way; use next",
                )

    def updates(self) -> None:
        for index, step in enumerate(self.journey.steps):
            if isinstance(step, model.UpdateStep):
                both = set(step.update.tag) & set(step.update.untag)
                if both:
                    self.error(
                        ("steps", index, "update", "untag"),
                        "tag-conflict",
                        f"tagged and untagged at once: {', '.join(sorted(both))}",
                    )

    def expressions(self) -> None:
        for path, expression, allowed in _expressions(self.journey):
            try:
                program = conditions.compile_condition(expression)
            except conditions.ConditionError:
                continue  # reported by the schema layer
            unknown = sorted(conditions.free_variables(program) - allowed)
            for name in unknown:
                self.error(
                    path,
                    "unknown-variable",
                    f"unknown variable {name!r}; here you can use {', '.join(sorted(allowed))}",
                )

    def holdout(self) -> None:
        if self.journey.holdout > 0 and self.journey.goal is None:
            self.warning(
                ("holdout",),
                "holdout-without-goal",
                "a holdout measures goal lift, and this journey has no goal",
            )


def _waits(step: model.AnyStep) -> bool:
    """True for steps that always take time, so a loop through them cannot spin."""
    if isinstance(step, model.WaitForStep):
        return True
    if isinstance(step, model.WaitStep):
        wait = step.wait
        trait = wait.until_trait
        return (
            wait.for_ is not None
            or wait.at_local is not None
            or (trait is not None and trait.yearly)
        )
    return False


def _expressions(journey: model.Journey) -> Iterator[tuple[Path, str, set[str]]]:
    """Every CEL expression, its path, and the variables it may use there."""
    running = {CUSTOMER, EVENT, TRIGGER}
    trigger: model.AnyTrigger = journey.trigger
    if isinstance(trigger, model.EventTrigger) and trigger.where is not None:
        yield ("trigger", "where"), trigger.where, {CUSTOMER, EVENT}
    elif isinstance(trigger, model.ConditionTrigger):
        yield ("trigger", "condition"), trigger.condition, {CUSTOMER}
    elif isinstance(trigger, model.ScheduleTrigger) and trigger.where is not None:
        yield ("trigger", "where"), trigger.where, {CUSTOMER}
    if journey.goal is not None and journey.goal.where is not None:
        yield ("goal", "where"), journey.goal.where, running
    for i, exit_event in enumerate(journey.exit):
        if exit_event.where is not None:
            yield ("exit", i, "where"), exit_event.where, running
    for index, step in enumerate(journey.steps):
        if isinstance(step, model.WaitForStep) and step.wait_for.where is not None:
            yield ("steps", index, "wait_for", "where"), step.wait_for.where, running
        elif isinstance(step, model.BranchStep):
            for i, case in enumerate(step.branch):
                if isinstance(case, model.BranchIf):
                    yield ("steps", index, "branch", i, "if"), case.if_, running


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm without recursion (journeys may have many steps)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            advanced = False
            for target in targets:
                if target not in graph:
                    continue
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
    return components


def _at(
    source_map: SourceMap,
    path: Path,
    code: str,
    message: str,
    severity: Severity = Severity.ERROR,
    *,
    key: bool = False,
) -> Diagnostic:
    mark = source_map.key(path) if key else source_map.value(path)
    return Diagnostic(severity, code, message, path_text(path), mark.line, mark.column)
