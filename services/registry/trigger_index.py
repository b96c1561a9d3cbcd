"""Publishing the trigger index: replace one journey's entries, leave every other journey's.

Pure: given the index as read (field → JSON list) and the journey's new entries, compute the
fields to write and the fields to delete. `store.JourneyStore` applies the change in the same
MULTI/EXEC as the journey's status, with `INCR` of the revision, so a reader never sees half
an index (docs/registry.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from enishi.registry import TriggerEntry, decode_entries, encode_entries


@dataclass(frozen=True)
class IndexChange:
    """Fields to set (with their new JSON) and fields to delete (left with no entry)."""

    set: dict[str, bytes] = field(default_factory=dict)
    delete: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.set and not self.delete


def replace_journey(
    index: Mapping[str, bytes],
    journey_id: str,
    entries: Mapping[str, TriggerEntry],
) -> IndexChange:
    """The change that makes `entries` the only index entries of `journey_id`.

    `entries` empty removes the journey (pause, archive). Entries of other journeys are kept
    as they are; a field whose list becomes empty is deleted.
    """
    current = dict(index)
    to_set: dict[str, bytes] = {}
    to_delete: list[str] = []
    for name in sorted(set(current) | set(entries)):
        old = decode_entries(current[name]) if name in current else []
        kept = [e for e in old if e.journey_id != journey_id]
        new = kept + ([entries[name]] if name in entries else [])
        if not new:
            if name in current:
                to_delete.append(name)
            continue
        value = encode_entries(new)
        if current.get(name) != value:
            to_set[name] = value
    return IndexChange(to_set, tuple(to_delete))


def journey_entries(index: Mapping[str, bytes], journey_id: str) -> dict[str, TriggerEntry]:
    """The entries of `journey_id` in the index as read, per field."""
    found: dict[str, TriggerEntry] = {}
    for name, value in index.items():
        for entry in decode_entries(value):
            if entry.journey_id == journey_id:
                found[name] = entry
    return found
