"""`par manifest`: a dataset layout on disk plus its attribute CSV -> the manifest file."""
from __future__ import annotations

from pathlib import Path

from ..data.layouts import LayoutSummary, layout_named
from ..data.manifest import Manifest, write_manifest
from ..data.schema import load_schema
from ..errors import ParError


def make_manifest(layout: str, root: Path, out: Path, attributes: Path | None = None,
                  schema: str | None = None) -> tuple[Manifest, LayoutSummary]:
    manifest, summary = layout_named(layout, "layout").build_manifest(Path(root), load_schema(schema or layout),
                                                                       attributes)
    if not manifest.records:
        raise ParError(f"{root}: no labelled tracklets found; check the dataset root and the attribute CSV")
    write_manifest(manifest, out)
    return manifest, summary
