"""The manifest: JSON Lines, a header object then one object per tracklet (format documented in README).

A manifest is data a user may receive from someone else, so reading one checks every record: the label
count, and frame paths that must stay inside the recorded dataset root.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.dataclasses import dataclass as pydantic_dataclass

from ..errors import ParError
from ..outputs import write_output_file
from ..validation import validated
from .schema import AttributeSchema, SchemaFile, load_schema, schema_from_dict

MANIFEST_FORMAT = "par-manifest"
MANIFEST_VERSION = 1
FIX = "fix the line by hand or rebuild the manifest with `par manifest`"


@pydantic_dataclass(config=ConfigDict(extra="forbid"))
class TrackletRecord:
    """One manifest line: a tracklet, its frames (relative to the manifest root) and its labels in schema order.
    Declared for validation: a hand-edited line with a wrong field is one error naming the line and the field."""
    tracklet: StrictStr = Field(description="the tracklet's name (a string)")
    split: StrictStr = Field(description="the split the tracklet belongs to (a string: train or test)")
    person_id: StrictInt = Field(description="a whole number")
    camera_id: StrictInt = Field(description="a whole number")
    tracklet_no: StrictInt = Field(description="a whole number")
    frames: list[StrictStr] = Field(min_length=1, description="a non-empty list of file names")
    labels: list[StrictInt] = Field(description="a list of 0/1 labels in schema order")


class ManifestHeader(BaseModel):
    """The manifest's first line after its format and version (checked first, with their own messages); other keys
    are kept as the manifest's extras."""
    model_config = ConfigDict(strict=True, extra="allow")
    schema_name: str = Field(alias="schema", description="the attribute schema's name (a string)")
    layout: str = Field("", description="the dataset layout (a string)")
    root: str = Field(description="the dataset root the frame paths are relative to (a string)")
    schema_definition: SchemaFile | None = Field(None, description="an attribute schema object")


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
        validated(ManifestHeader, header, f"{path}:1", FIX)
        schema = (schema_from_dict(header["schema_definition"], f"{path}:1: schema_definition")
                  if "schema_definition" in header else load_schema(header["schema"]))
        records = []
        for n, line in enumerate(f, start=2):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ParError(f"{where}: not a JSON object ({exc}); {FIX}") from None
            rec = validated(TrackletRecord, data, where, FIX)
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


def manifest_digest(manifest: Manifest) -> str:
    h = hashlib.sha256()
    for r in manifest.records:
        h.update(f"{r.tracklet}|{r.split}|{r.person_id}|{','.join(r.frames)}|{r.labels}\n".encode())
    return h.hexdigest()
