"""Stage configs as dataclasses whose fields say everything about an option: its help, allowed values, bounds,
and whether it changes results. The CLI builds its options from these fields, `--config` files and recipes are
checked against them, and resume / sweep keys use `affects_results`: one definition serves all.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from .errors import ParError


@dataclass(frozen=True)
class Spec:
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # strictly greater than
    affects_results: bool = True  # False: may differ between a run and its resume, and between sweep points
    cli: bool = True  # False: set by recipes or config files only


def option(default: Any, help: str, **spec: Any) -> Any:
    """A config field with its specification."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"spec": Spec(help, **spec)})
    return field(default=default, metadata={"spec": Spec(help, **spec)})


def spec_of(f: dataclasses.Field) -> Spec:
    return f.metadata["spec"]


def base_type(cls: type, f: dataclasses.Field) -> tuple[type, bool]:
    """(value type, optional) of a field: int | None -> (int, True); list[float] -> (list, False)."""
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    return (list if origin is list else hint), optional


def coerce(cls: type, name: str, value: Any, where: str) -> Any:
    """Check one value against its field (type, choices, bounds); ints are accepted for floats."""
    f = next((f for f in fields(cls) if f.name == name), None)
    if f is None:
        known = sorted(f.name for f in fields(cls))
        raise ParError(f"{where}: unknown option '{name}'; known: {known}")
    kind, optional = base_type(cls, f)
    spec = spec_of(f)
    if value is None:
        if optional:
            return None
        raise ParError(f"{where}: '{name}' needs a value")
    ok = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), str: lambda v: isinstance(v, str),
          list: lambda v: isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)}[kind]
    if not ok(value):
        raise ParError(f"{where}: '{name}' must be {kind.__name__}{' or null' if optional else ''}, "
                       f"got {value!r}; fix the value")
    if kind is float:
        value = float(value)
    if spec.choices is not None and value not in spec.choices:
        raise ParError(f"{where}: '{name}' must be one of {list(spec.choices)}, not {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            raise ParError(f"{where}: '{name}' must be at least {spec.minimum:g}, got {value}")
        if spec.maximum is not None and value > spec.maximum:
            raise ParError(f"{where}: '{name}' must be at most {spec.maximum:g}, got {value}")
        if spec.above is not None and value <= spec.above:
            raise ParError(f"{where}: '{name}' must be greater than {spec.above:g}, got {value}")
    return value


def build(cls: type, layers: list[tuple[str, Mapping[str, Any]]]) -> Any:
    """A config from defaults < each (where, values) layer in turn; every value is checked against its field."""
    values: dict[str, Any] = {}
    for where, layer in layers:
        for name, value in layer.items():
            values[name] = coerce(cls, name, value, where)
    return cls(**values)


def as_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def results_keys(cls: type) -> list[str]:
    """The options that change results (resume checks and sweep keys compare exactly these)."""
    return [f.name for f in fields(cls) if spec_of(f).affects_results]


def results_view(cfg: Any) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in results_keys(type(cfg))}


def cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in fields(cls) if spec_of(f).cli]
