"""Attribute schemas: which CSV columns become which binary attributes, in which groups.

A schema is data (`data_manifests/schemas/*.json`): an ordered list of groups, each reading one CSV column. A
binary group yields one attribute (value 1 = present); a multi-class group yields one one-hot attribute per
value, in value order. Each attribute carries a `phrase` (our wording) and a `word` (the reference
implementation's text input, verbatim).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ParError
from ..resources import load_json
from ..validation import validated


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

    def csv_row(self, person_id: int, camera_id: int, tracklet_no: int, values: Mapping[str, int]) -> list[int]:
        """One annotation-CSV row in this schema's column order: the ids in the schema's id columns, `values` by
        column name, 0 in every other column."""
        ids = {self.id_columns["person_id"]: person_id, self.id_columns["camera_id"]: camera_id,
               self.id_columns["tracklet_no"]: tracklet_no}
        row = {**values, **ids}
        return [row.get(c, 0) for c in self.csv_columns]

    def to_dict(self) -> dict[str, Any]:
        return self.source


class SchemaAttribute(BaseModel):
    """One attribute of a group, as a schema file writes it."""
    model_config = ConfigDict(strict=True)
    name: str = Field(description="the attribute's name (a string)")
    phrase: str = Field(description="the attribute's text phrase (a string)")
    word: str | None = Field(None, description="the reference's word for it (a string)")
    value: int | None = Field(None, description="the CSV value it stands for (a whole number)")


class SchemaGroup(BaseModel):
    """One group: a CSV column read as one binary attribute or as one-hot multi-class attributes."""
    model_config = ConfigDict(strict=True)
    name: str = Field(description="the group's name (a string)")
    column: str = Field(description="the CSV column it reads (a string)")
    kind: Literal["binary", "multiclass"] = Field(description="'binary' or 'multiclass'")
    values: int = Field(ge=2, description="how many values the column takes (a whole number, 2 or more)")
    attributes: list[SchemaAttribute] = Field(min_length=1, description="a non-empty list of attribute objects")


class SchemaFile(BaseModel):
    """An attribute schema file (`data_manifests/schemas/*.json`, `--schema FILE`, a manifest's
    `schema_definition`); other keys (description, format_version, ...) are kept as written."""
    model_config = ConfigDict(strict=True, extra="allow")
    name: str = Field(description="the schema's name (a string)")
    id_columns: dict[str, str] = Field(description="an object naming the CSV's id columns")
    csv_columns: list[str] = Field([], description="a list of column names")
    quality_columns: list[str] = Field([], description="a list of column names")
    groups: list[SchemaGroup] = Field(min_length=1, description="a non-empty list of group objects")


SCHEMA_FIX = "fix the schema (see data_manifests/schemas/mars.json for the form)"


def schema_from_dict(data: dict[str, Any], where: str = "schema") -> AttributeSchema:
    """The schema a file or a stored `schema_definition` describes; `where` names it in errors."""
    checked = validated(SchemaFile, data, where, SCHEMA_FIX)
    groups: list[AttributeGroup] = []
    start = 0
    name = checked.name
    for g in checked.groups:
        attrs = g.attributes
        if g.kind == "binary":
            if len(attrs) != 1 or g.values != 2:
                raise ParError(f"{where}: schema '{name}': binary group '{g.name}' needs one attribute and 2 values; "
                               f"{SCHEMA_FIX}")
            value_names = ("no", "yes")
        else:
            if [a.value for a in attrs] != list(range(g.values)):
                raise ParError(f"{where}: schema '{name}': group '{g.name}' must list values 0..{g.values - 1} in "
                               f"order; {SCHEMA_FIX}")
            value_names = tuple(a.name[len(g.name):].strip() if a.name.startswith(g.name) else a.name for a in attrs)
        end = start + len(attrs)
        groups.append(AttributeGroup(
            name=g.name, column=g.column, kind=g.kind, num_values=g.values,
            attributes=tuple(a.name for a in attrs), phrases=tuple(a.phrase for a in attrs),
            words=tuple(a.word if a.word is not None else a.phrase for a in attrs), value_names=value_names,
            start=start, end=end,
        ))
        start = end
    return AttributeSchema(
        name=name, id_columns=checked.id_columns, csv_columns=tuple(checked.csv_columns),
        quality_columns=tuple(checked.quality_columns), groups=tuple(groups), source=data,
    )


def load_schema(name_or_path: str) -> AttributeSchema:
    """A shipped schema by name (`mars`, `duke`) or a schema JSON file."""
    where = name_or_path if name_or_path.endswith(".json") else f"schema '{name_or_path}'"
    return schema_from_dict(load_json("schemas", name_or_path), where)
