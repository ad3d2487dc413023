"""The JSON data files shipped in `data_manifests/` (schemas, texts, models, recipes, ablation variants).

They load through importlib.resources, so a wheel install finds them as a source checkout does. Where
a name is expected, a user may give the path of their own JSON file instead.
"""
from __future__ import annotations

import json
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any

from .errors import ParError


def shipped(kind: str) -> Traversable:
    """The folder of shipped files of one kind, e.g. `schemas` or `models/clip`."""
    folder = resources.files("data_manifests")
    for part in kind.split("/"):
        folder = folder / part
    return folder


def shipped_names(kind: str) -> list[str]:
    return sorted(p.name[:-5] for p in shipped(kind).iterdir() if p.name.endswith(".json"))


def load_json(kind: str, name_or_path: str) -> dict[str, Any]:
    """A shipped file `data_manifests/<kind>/<name>.json`, or a user's JSON file given by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".json" and candidate.is_file():
        source: Any = candidate
    else:
        source = shipped(kind) / f"{name_or_path}.json"
        if not source.is_file():
            raise ParError(f"unknown {kind.split('/')[-1].rstrip('s')} '{name_or_path}': give one of "
                           f"{shipped_names(kind)} or the path of a .json file")
    try:
        return json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ParError(f"{source}: not valid JSON ({exc}); fix or restore the file") from None
