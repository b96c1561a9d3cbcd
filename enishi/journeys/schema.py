"""The journey language's JSON Schema, generated from the models: docs/journey.schema.json.

`python -m enishi.journeys.schema` rewrites the file; `--check` exits 1 when it is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Final

from enishi.journeys.model import Journey

SCHEMA_ID: Final = "https://enishi.dev/schemas/journey.schema.json"
SCHEMA_FILE: Final = Path(__file__).resolve().parents[2] / "docs" / "journey.schema.json"


def journey_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a journey source, as editors and CI can use it."""
    schema = Journey.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def render() -> str:
    """The schema file's exact text."""
    return json.dumps(journey_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text(encoding="utf-8") != text:
            print(f"{SCHEMA_FILE} is stale: run python -m enishi.journeys.schema", file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
