"""Attribute schemas: which CSV columns become which binary attributes, in which groups.

A schema is data (`data_manifests/schemas/*.json`): an ordered list of groups, each reading one CSV column. A
binary group yields one attribute (value 1 = present); a multi-class group yields one one-hot attribute per
value, in value order. Each attribute carries a `phrase` (our wording) and a `word` (the reference
implementation's text input, verbatim).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ParError
from ..resources import load_json


@dataclass(frozen=True)
class AttributeGroup:
    name: str
    column: str
    kind: str  # "binary" or "multiclass"
    num_values: int
    attributes: tuple[str, ...]
    phrases: tuple[str, ...]
    words: tuple[str, ...]
    value_names: tuple[str, ...]  # what each answer is called: ("no", "yes") or the multi-class values
    start: int
    end: int

    @property
    def is_binary(self) -> bool:
        return self.kind == "binary"


@dataclass(frozen=True)
class AttributeSchema:
    name: str
    id_columns: Mapping[str, str]
    csv_columns: tuple[str, ...]  # the annotation CSV's columns, in its order
    quality_columns: tuple[str, ...]  # per-tracklet quality flags of the CSV (not attributes)
    groups: tuple[AttributeGroup, ...]
    source: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def attributes(self) -> list[str]:
        return [a for g in self.groups for a in g.attributes]

    @property
    def phrases(self) -> list[str]:
        return [p for g in self.groups for p in g.phrases]

    @property
    def words(self) -> list[str]:
        return [w for g in self.groups for w in g.words]

    @property
    def num_attributes(self) -> int:
        return self.groups[-1].end

    @property
    def boundaries(self) -> list[int]:
        return [0] + [g.end for g in self.groups]

    @property
    def group_names(self) -> list[str]:
        return [g.name for g in self.groups]

    @property
    def label_columns(self) -> list[str]:
        return [g.column for g in self.groups]

    def check_columns(self, header: Sequence[str], path: str) -> None:
        """Fail naming the file and the missing columns when a CSV does not fit this schema."""
        missing = [c for c in [*self.id_columns.values(), *self.label_columns] if c not in header]
        if missing:
            raise ParError(f"{path}: missing column(s) {missing} required by schema '{self.name}'; found "
                           f"{list(header)}; use the original annotation file or --schema for its layout")

    def encode_row(self, row: Mapping[str, str], where: str) -> np.ndarray:
        """One CSV row -> A labels (uint8 0/1) in schema order; out-of-range values fail."""
        labels = np.zeros(self.num_attributes, dtype=np.uint8)
        for g in self.groups:
            raw = row[g.column]
            try:
                value = int(str(raw).strip())
            except ValueError:
                raise ParError(f"{where}: column '{g.column}' has non-integer value {raw!r}; fix the row") from None
            if not 0 <= value < g.num_values:
                raise ParError(f"{where}: column '{g.column}' has value {value}, outside 0..{g.num_values - 1}; "
                               f"fix the row")
            labels[g.start + (0 if g.is_binary else value)] = value if g.is_binary else 1
        return labels

    def check_labels(self, labels: Sequence[int], where: str) -> None:
        """A label vector read back (manifest, store) must have A entries of 0/1."""
        if len(labels) != self.num_attributes or any(v not in (0, 1) for v in labels):
            raise ParError(f"{where}: expected {self.num_attributes} labels of 0/1 for schema '{self.name}', got "
                           f"{len(labels)}; rebuild it with `par manifest`")

    def to_dict(self) -> dict[str, Any]:
        return self.source


def schema_from_dict(data: dict[str, Any]) -> AttributeSchema:
    groups: list[AttributeGroup] = []
    start = 0
    name = data.get("name", "?")
    for g in data["groups"]:
        attrs = g["attributes"]
        if g["kind"] == "binary":
            if len(attrs) != 1 or g["values"] != 2:
                raise ParError(f"schema '{name}': binary group '{g['name']}' needs one attribute and 2 values")
            value_names = ("no", "yes")
        elif g["kind"] == "multiclass":
            if [a["value"] for a in attrs] != list(range(g["values"])):
                raise ParError(f"schema '{name}': group '{g['name']}' must list values 0..{g['values'] - 1} in order")
            value_names = tuple(a["name"][len(g["name"]):].strip() if a["name"].startswith(g["name"]) else a["name"]
                                for a in attrs)
        else:
            raise ParError(f"schema '{name}': group '{g['name']}' has unknown kind '{g['kind']}'")
        end = start + len(attrs)
        groups.append(AttributeGroup(
            name=g["name"], column=g["column"], kind=g["kind"], num_values=g["values"],
            attributes=tuple(a["name"] for a in attrs), phrases=tuple(a["phrase"] for a in attrs),
            words=tuple(a.get("word", a["phrase"]) for a in attrs), value_names=value_names, start=start, end=end,
        ))
        start = end
    return AttributeSchema(
        name=name, id_columns=data["id_columns"], csv_columns=tuple(data.get("csv_columns", ())),
        quality_columns=tuple(data.get("quality_columns", ())), groups=tuple(groups), source=data,
    )


def load_schema(name_or_path: str) -> AttributeSchema:
    """A shipped schema by name (`mars`, `duke`) or a schema JSON file."""
    return schema_from_dict(load_json("schemas", name_or_path))
