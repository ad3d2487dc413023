"""The manifest: JSON Lines, a header object then one object per tracklet (format documented in README).

A manifest is data a user may receive from someone else, so reading one checks every record: the label
count, and frame paths that must stay inside the recorded dataset root.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParError
from ..outputs import write_output_file
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
    source: str = ""  # the file it was read from (not written into it): stores record it for par report's thumbnails

    def header(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "schema": self.schema.name, "layout": self.layout,
            "root": self.root, "attributes": self.schema.attributes, "group_boundaries": self.schema.boundaries,
            "groups": self.schema.group_names, "schema_definition": self.schema.to_dict(), **self.extra,
        }

    def split(self, name: str) -> list[TrackletRecord]:
        return [r for r in self.records if r.split == name]

    def resolve(self, frame: str) -> Path:
        return Path(self.root) / frame


def frame_path_problem(frame: str) -> str | None:
    """Why a manifest frame path may not be used, or None: it must be relative and stay inside the root."""
    if os.path.isabs(frame) or frame.startswith("~"):
        return "is an absolute path"
    if os.path.normpath(frame).split(os.sep)[0] == "..":
        return "leaves the dataset root"
    return None


def is_manifest(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return json.loads(f.readline()).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_manifest(manifest: Manifest, path: str | Path) -> None:
    """Write atomically: the file appears only when complete, and only replaces an earlier manifest."""
    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest.header()) + "\n")
            for rec in manifest.records:
                f.write(json.dumps(asdict(rec), separators=(",", ":")) + "\n")
    write_output_file(path, "manifest", is_manifest, write)


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.is_file():
        raise ParError(f"{path}: manifest not found; create it with `par manifest mars ROOT --out {path}`")
    with open(path, encoding="utf-8") as f:
        try:
            header = json.loads(f.readline())
        except json.JSONDecodeError:
            header = None
        if not isinstance(header, dict) or header.get("format") != MANIFEST_FORMAT:
            raise ParError(f"{path}: not a par manifest (its first line is not a par-manifest header); rebuild it "
                           f"with `par manifest`")
        if header.get("version") != MANIFEST_VERSION:
            raise ParError(f"{path}: manifest version {header.get('version')} is not supported (this par reads "
                           f"{MANIFEST_VERSION}); rebuild it with `par manifest`")
        schema = (schema_from_dict(header["schema_definition"]) if "schema_definition" in header
                  else load_schema(header["schema"]))
        records = []
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = TrackletRecord(**json.loads(line))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ParError(f"{where}: malformed tracklet record ({exc}); rebuild the manifest") from None
            schema.check_labels(rec.labels, f"{where} (tracklet {rec.tracklet})")
            for frame in rec.frames:
                problem = frame_path_problem(frame)
                if problem:
                    raise ParError(f"{where}: tracklet {rec.tracklet} frame '{frame}' {problem}; frame paths must be "
                                   f"relative to the manifest root {header['root']} - rebuild the manifest")
            records.append(rec)
    if not records:
        raise ParError(f"{path}: the manifest has no tracklet records; rebuild it with `par manifest`")
    known = {"format", "version", "schema", "layout", "root", "attributes", "group_boundaries", "groups",
             "schema_definition"}
    return Manifest(schema=schema, root=header["root"], records=records, layout=header.get("layout", ""),
                    extra={k: v for k, v in header.items() if k not in known}, source=str(path.resolve()))
