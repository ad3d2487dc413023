"""Typer options generated from the stage configs' fields (par_pipeline.config): one definition per option, so the
command line, `--config` files, recipes, the ablation and the bench cannot drift apart."""
from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from par_pipeline.errors import ParError
from par_pipeline.options import base_type, cli_fields, flag, parse_list, spec_of

PANEL = "Options (defaults, recipe values for extract and train; --config FILE and the command line override them)"


def config_parameters(cls: type, exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    """One keyword parameter per CLI field of `cls`, defaulting to None (= not given on the command line)."""
    params = []
    defaults = _shown_defaults(cls)
    for f in cli_fields(cls):
        if f.name in exclude:
            continue
        kind, _ = base_type(cls, f)
        spec = spec_of(f)
        text = spec.help + (f" [{'|'.join(spec.choices)}]" if spec.choices else "") + defaults.get(f.name, "")
        if kind is bool:
            option = typer.Option(None, f"{flag(f.name)}/--no-{f.name.replace('_', '-')}", help=text,
                                  rich_help_panel=PANEL, show_default=False)
            annotation: Any = Optional[bool]
        else:
            option = typer.Option(None, flag(f.name), help=text + (" (separated by commas or spaces)" if kind is list
                                                                   else ""),
                                  rich_help_panel=PANEL, show_default=False)
            annotation = Optional[str if kind is list else kind]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    return params


def _shown_defaults(cls: type) -> dict[str, str]:
    """' (default: X)' per option (for extract and train, the default recipe's value: it is what a run gets);
    options whose default is nothing (None, off, empty) show none."""
    from par_pipeline.config import DEFAULT_RECIPE, STAGES, load_recipe

    values = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    where = "default"
    stage = next((name for name, c in STAGES.items() if c is cls), None)
    if stage is not None:
        values.update(load_recipe(DEFAULT_RECIPE).get(stage, {}))
        where = DEFAULT_RECIPE
    return {k: f" (default: {v})" if where == "default" else f" ({where}: {v})" for k, v in values.items()
            if v not in (None, False, "", [])}


def given_options(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The config values given on the command line (None = not given); lists parsed from their text."""
    out = {}
    for f in cli_fields(cls):
        value = values.get(f.name)
        if value is not None:
            out[f.name] = parse_list(cls, f.name, value) if base_type(cls, f)[0] is list else value
    return out


def read_config_file(path: Optional[Path]) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.is_file():
        raise ParError(f"{path}: config file not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ParError(f"{path}: not valid JSON ({exc}); fix the file") from None
    if not isinstance(data, dict):
        raise ParError(f"{path}: a config file holds one JSON object of option: value")
    return data


def command_with_config(app: typer.Typer, name: str, cls: type, own: list[inspect.Parameter],
                        run: Callable[[dict[str, Any], dict[str, Any]], None], help: str,
                        exclude: tuple[str, ...] = ()) -> None:
    """Register `name` with its own parameters plus every CLI option of `cls`; `run(own values, given config
    values)`."""
    generated = config_parameters(cls, exclude)
    own_names = [p.name for p in own]

    def command(**kwargs: Any) -> None:
        run(
            {k: kwargs[k] for k in own_names},
            given_options(cls, {k: v for k, v in kwargs.items() if k not in own_names}),
        )

    command.__signature__ = inspect.Signature(own + generated)  # type: ignore[attr-defined]
    command.__doc__ = help
    command.__name__ = name
    app.command(name)(command)


def parameter(name: str, default: Any, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
