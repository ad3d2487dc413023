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

COMMAND_LINE = "the command line"  # the layer whose values are named by their flags in messages


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


def flag(name: str) -> str:
    """The command-line flag of a config field."""
    return "--" + name.replace("_", "-")


def _named(where: str, name: str) -> str:
    """An option as the user wrote it: its flag on the command line, its key in a file."""
    return flag(name) if where == COMMAND_LINE else f"{where}: '{name}'"


def _hint(cls: type, f: dataclasses.Field) -> Any:
    """A field's type without its `| None`."""
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    return next(a for a in args if a is not type(None)) if type(None) in args else hint


def list_item_type(cls: type, f: dataclasses.Field) -> type:
    """The element type of a list field (list[float] -> float)."""
    return typing.get_args(_hint(cls, f))[0]


def parse_numbers(name: str, text: str, item: type = int) -> list[Any]:
    """Numbers (or names) from the command line, separated by commas or spaces (`--sweep-frames "1,2 4"`)."""
    try:
        return [item(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ParError(f"{flag(name)} takes {item.__name__}s separated by commas or spaces, not '{text}'") from None


def parse_list(cls: type, name: str, text: str) -> list[Any]:
    """A list option of a config class from the command line (`parse_numbers` of its element type)."""
    f = next(f for f in fields(cls) if f.name == name)
    return parse_numbers(name, text, list_item_type(cls, f))


def base_type(cls: type, f: dataclasses.Field) -> tuple[type, bool]:
    """(value type, optional) of a field: int | None -> (int, True); list[float] -> (list, False)."""
    optional = type(None) in typing.get_args(typing.get_type_hints(cls)[f.name])
    hint = _hint(cls, f)
    return (list if typing.get_origin(hint) is list else hint), optional


def coerce(cls: type, name: str, value: Any, where: str) -> Any:
    """Check one value against its field (type, choices, bounds); ints are accepted for floats."""
    f = next((f for f in fields(cls) if f.name == name), None)
    if f is None:
        known = sorted(f.name for f in fields(cls))
        raise ParError(f"{where}: unknown option '{name}'; known: {known}")
    kind, optional = base_type(cls, f)
    spec = spec_of(f)
    named = _named(where, name)
    if value is None:
        if optional:
            return None
        raise ParError(f"{named} needs a value")
    if not _has_type(value, kind, list_item_type(cls, f) if kind is list else None):
        what = f"a list of {list_item_type(cls, f).__name__}" if kind is list else kind.__name__
        raise ParError(f"{named} must be {what}{' or null' if optional else ''}, got {value!r}; fix the value")
    if kind is float:
        value = float(value)
    for choice in (value if kind is list else [value]) if spec.choices is not None else []:
        if choice not in spec.choices:
            raise ParError(f"{named} must be {'each ' if kind is list else ''}one of {list(spec.choices)}, "
                           f"not {choice!r}")
    for number in (value if kind is list else [value]):
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            if spec.minimum is not None and number < spec.minimum:
                raise ParError(f"{named} must be at least {spec.minimum:g}, got {number}")
            if spec.maximum is not None and number > spec.maximum:
                raise ParError(f"{named} must be at most {spec.maximum:g}, got {number}")
            if spec.above is not None and number <= spec.above:
                raise ParError(f"{named} must be greater than {spec.above:g}, got {number}")
    return value


def _is_number(value: Any, kind: type) -> bool:
    """ints for int; ints or floats for float; never a bool."""
    return not isinstance(value, bool) and isinstance(value, int if kind is int else (int, float))


def _has_type(value: Any, kind: type, item: type | None) -> bool:
    if kind in (int, float):
        return _is_number(value, kind)
    if kind is list:
        return isinstance(value, list) and all(_has_type(x, item, None) for x in value)
    return isinstance(value, kind)


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
