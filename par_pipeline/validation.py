"""User-edited JSON (manifest headers and records, attribute schema files) checked against declared pydantic models:
the first problem becomes one line naming the place, the field and what it must be.

Each field's `description` is what it must be ("a list of file names"), so the message reads
`m.jsonl:2: 'frames' must be a list of file names, got a string`.
"""
from __future__ import annotations

import types
import typing
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import ParError

T = TypeVar("T")

_KINDS = ((bool, "true/false"), (str, "a string"), (int, "a number"), (float, "a number"), (list, "a list"),
          (dict, "an object"), (type(None), "null"))


def _kind(value: Any) -> str:
    if isinstance(value, (list, dict)) and not value:
        return f"an empty {'list' if isinstance(value, list) else 'object'}"
    return next((name for t, name in _KINDS if isinstance(value, t)), type(value).__name__)


def _fields(model: Any) -> dict[str, Any]:
    return getattr(model, "__pydantic_fields__", None) or {}


def _element(annotation: Any) -> Any:
    """The model inside list[X], tuple[X, ...], dict[K, X] and X | None."""
    while typing.get_origin(annotation) in (list, tuple, dict, typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a not in (type(None), Ellipsis)]
        annotation = args[-1]
    return annotation


def _describe(model: Any, loc: tuple[Any, ...]) -> tuple[str, str | None]:
    """The field's dotted name (list positions as [i]) and its description, walking nested models."""
    name, description, current = "", None, model
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
            continue
        name += ("." if name else "") + str(part)
        field = _fields(current).get(part)
        description = field.description if field is not None else None
        current = _element(field.annotation) if field is not None else None
    return name, description


def _got(err: dict[str, Any]) -> str:
    """What was found: its kind where the type is wrong, else the value itself."""
    value = err.get("input")
    if err["type"].endswith("_type") or isinstance(value, (list, dict)):
        return _kind(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problem(model: Any, exc: ValidationError) -> str:
    """The first error of `exc` as a phrase: `'frames' must be a list of file names, got a string`."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    field_loc = loc
    while field_loc and isinstance(field_loc[-1], int):  # an item of a list: the list's own description applies
        field_loc = field_loc[:-1]
    name, description = _describe(model, field_loc)
    if err["type"] == "missing":
        return f"'{name}' is missing" + (f" (it must be {description})" if description else "")
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"'{name}' is not a field of this object (a misspelling?)"
    if description is None:
        return f"'{_describe(model, loc)[0]}': {err['msg']}"
    if field_loc != loc:
        return f"'{name}' must be {description}; item {_describe(model, loc)[0][len(name):]} is {_got(err)}"
    if err["type"] == "value_error":
        return f"'{name}' must be {description} ({err['msg'].removeprefix('Value error, ')})"
    return f"'{name}' must be {description}, got {_got(err)}"


def validated(model: type[T], data: Any, where: str, fix: str) -> T:
    """`data` as `model` (a pydantic model or dataclass), or one ParError: `WHERE: PROBLEM; FIX`."""
    try:
        if isinstance(model, type) and issubclass(model, BaseModel):
            return model.model_validate(data)
        return TypeAdapter(model).validate_python(data)
    except ValidationError as exc:
        raise ParError(f"{where}: {problem(model, exc)}; {fix}") from None
