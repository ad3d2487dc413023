"""Attribute schemas: which CSV columns become which binary attributes, in which groups.

A schema is data (`data_manifests/schemas/*.json`): an ordered list of groups, each reading one
CSV column. A binary group yields one attribute (value 1 = present); a multi-class group yields
one one-hot attribute per value, in value order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ParError
from .resources import load_json


@dataclass(frozen=True)
class AttributeGroup:
    name: str
    column: str
    kind: str  # "binary" or "multiclass"
    num_values: int
    attributes: tuple[str, ...]
    phrases: tuple[str, ...]
    value_names: tuple[str, ...]
    start: int
    end: int

    @property
    def is_binary(self) -> bool:
        return self.kind == "binary"


@dataclass(frozen=True)
class AttributeSchema:
    name: str
    description: str
    id_columns: Mapping[str, str]
    ignored_columns: tuple[str, ...]
    groups: tuple[AttributeGroup, ...]
    source: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def attributes(self) -> list[str]:
        return [a for g in self.groups for a in g.attributes]

    @property
    def phrases(self) -> list[str]:
        return [p for g in self.groups for p in g.phrases]

    @property
    def num_attributes(self) -> int:
        return self.groups[-1].end

    @property
    def boundaries(self) -> list[int]:
        return [0] + [g.end for g in self.groups]

    @property
    def label_columns(self) -> list[str]:
        return [g.column for g in self.groups]

    @property
    def required_columns(self) -> list[str]:
        return list(self.id_columns.values()) + self.label_columns

    def check_columns(self, header: Sequence[str], path: str) -> None:
        """Fail naming the file and the missing columns when a CSV does not fit this schema."""
        missing = [c for c in self.required_columns if c not in header]
        if missing:
            raise ParError(
                f"{path}: missing column(s) {missing} required by schema '{self.name}'; "
                f"found {list(header)}; use the original annotation file or --schema for its layout"
            )

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
                raise ParError(
                    f"{where}: column '{g.column}' has value {value}, outside 0..{g.num_values - 1}; fix the row"
                )
            if g.is_binary:
                labels[g.start] = value
            else:
                labels[g.start + value] = 1
        return labels

    def to_dict(self) -> dict[str, Any]:
        return self.source


def schema_from_dict(data: dict[str, Any]) -> AttributeSchema:
    groups: list[AttributeGroup] = []
    start = 0
    for g in data["groups"]:
        attrs = g["attributes"]
        if g["kind"] == "binary":
            if len(attrs) != 1 or g["values"] != 2:
                raise ParError(f"schema '{data['name']}': binary group '{g['name']}' needs one attribute and 2 values")
            value_names = ("no", "yes")
        elif g["kind"] == "multiclass":
            if [a["value"] for a in attrs] != list(range(g["values"])):
                raise ParError(f"schema '{data['name']}': group '{g['name']}' must list values 0..{g['values'] - 1} in order")
            value_names = tuple(a["name"][len(g["name"]):].strip() or a["name"] for a in attrs)
        else:
            raise ParError(f"schema '{data['name']}': group '{g['name']}' has unknown kind '{g['kind']}'")
        end = start + len(attrs)
        groups.append(AttributeGroup(
            name=g["name"], column=g["column"], kind=g["kind"], num_values=g["values"],
            attributes=tuple(a["name"] for a in attrs), phrases=tuple(a["phrase"] for a in attrs),
            value_names=value_names, start=start, end=end,
        ))
        start = end
    return AttributeSchema(
        name=data["name"], description=data.get("description", ""), id_columns=data["id_columns"],
        ignored_columns=tuple(data.get("ignored_columns", ())), groups=tuple(groups), source=data,
    )


def load_schema(name_or_path: str) -> AttributeSchema:
    """A shipped schema by name (`mars`, `duke`) or a schema JSON file."""
    return schema_from_dict(load_json("schemas", name_or_path))
