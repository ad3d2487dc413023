"""Locate the data files shipped in `data_manifests/` (schemas, prompts, model configs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ParError

DATA_DIR = Path(__file__).resolve().parent.parent / "data_manifests"


def data_file(kind: str, name_or_path: str) -> Path:
    """A shipped file `data_manifests/<kind>/<name>.json`, or a user path to a JSON file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" and candidate.exists():
        return candidate
    shipped = DATA_DIR / kind / f"{name_or_path}.json"
    if shipped.exists():
        return shipped
    choices = ", ".join(sorted(p.stem for p in (DATA_DIR / kind).glob("*.json")))
    raise ParError(f"unknown {kind[:-1]} '{name_or_path}': give one of [{choices}] or a path to a .json file")


def load_json(kind: str, name_or_path: str) -> dict[str, Any]:
    path = data_file(kind, name_or_path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ParError(f"{path}: not valid JSON ({exc}); fix or restore the file") from exc
