"""Built-in suites: `evals/suites/<name>/suite.json` (criteria, prompt, source, licence) + `items.jsonl`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    source: str
    license: str
    data_source_config: dict
    testing_criteria: list[dict]
    input_messages: dict | None
    sampling_params: dict
    items_path: Path

    def items(self) -> list[dict]:
        return [
            {"item": json.loads(line)} for line in self.items_path.read_text().splitlines() if line.strip()
        ]


def load(name: str) -> Suite | None:
    """The built-in suite called `name`; None for any other string (never a path: `../x` is no suite)."""
    return _load(name) if name in names() else None


@cache
def _load(name: str) -> Suite:
    folder = SUITES_DIR / name
    spec = json.loads((folder / "suite.json").read_text())
    return Suite(
        name=spec["name"],
        description=spec["description"],
        source=spec["source"],
        license=spec["license"],
        data_source_config=spec["data_source_config"],
        testing_criteria=spec["testing_criteria"],
        input_messages=spec.get("input_messages"),
        sampling_params=spec.get("sampling_params", {}),
        items_path=folder / "items.jsonl",
    )


@cache
def names() -> tuple[str, ...]:
    return tuple(sorted(p.parent.name for p in SUITES_DIR.glob("*/suite.json")))
