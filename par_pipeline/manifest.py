"""The manifest: JSON Lines, a header object then one object per tracklet (format documented in README)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .atomic import atomic_path
from .errors import ParError
from .schema import AttributeSchema, load_schema, schema_from_dict

MANIFEST_FORMAT = "par-manifest"
MANIFEST_VERSION = 1


@dataclass
class TrackletRecord:
    tracklet: str
    split: str
    person_id: int
    camera_id: int
    tracklet_no: int
    frames: list[str]
    labels: list[int]


@dataclass
class Manifest:
    schema: AttributeSchema
    root: str
    records: list[TrackletRecord]
    layout: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "schema": self.schema.name,
            "layout": self.layout,
            "root": self.root,
            "attributes": self.schema.attributes,
            "group_boundaries": self.schema.boundaries,
            "groups": [g.name for g in self.schema.groups],
            "schema_definition": self.schema.to_dict(),
            **self.extra,
        }

    def split(self, name: str) -> list[TrackletRecord]:
        return [r for r in self.records if r.split == name]

    def resolve(self, frame: str) -> Path:
        return Path(self.root) / frame


def write_manifest(manifest: Manifest, path: str | Path) -> None:
    """Write atomically: the file appears only when complete."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(json.dumps(manifest.header()) + "\n")
            for rec in manifest.records:
                f.write(json.dumps(asdict(rec), separators=(",", ":")) + "\n")


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ParError(f"{path}: manifest not found; create it with `par manifest mars ROOT --out {path}`")
    with open(path) as f:
        lines: Iterable[str] = f
        try:
            header = json.loads(next(iter(lines)))
        except (StopIteration, json.JSONDecodeError):
            raise ParError(f"{path}: not a par manifest (first line is not a JSON header); rebuild it with `par manifest`") from None
        if header.get("format") != MANIFEST_FORMAT:
            raise ParError(f"{path}: not a par manifest (format {header.get('format')!r}); rebuild it with `par manifest`")
        if header.get("version") != MANIFEST_VERSION:
            raise ParError(f"{path}: manifest version {header.get('version')} is not supported (this par reads {MANIFEST_VERSION}); rebuild it")
        schema = schema_from_dict(header["schema_definition"]) if "schema_definition" in header else load_schema(header["schema"])
        records = []
        for n, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            try:
                records.append(TrackletRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ParError(f"{path}:{n}: malformed tracklet record ({exc}); rebuild the manifest") from None
    known = {"format", "version", "schema", "layout", "root", "attributes", "group_boundaries", "groups", "schema_definition"}
    return Manifest(schema=schema, root=header["root"], records=records, layout=header.get("layout", ""),
                    extra={k: v for k, v in header.items() if k not in known})
