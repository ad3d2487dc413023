"""The paper's text pipeline: split and expand an attribute into a phrase, then a prompt template."""
from __future__ import annotations

import re
from typing import Any

from .errors import ParError
from .resources import load_json
from .schema import AttributeSchema

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def expand_phrase(text: str, expansions: dict[str, str]) -> str:
    """Split an attribute label into words and expand symbols: 'AgeLess<=40' -> 'age less less than or equal to 40'."""
    for symbol in sorted(expansions, key=len, reverse=True):  # longest first: '<=' before '<'
        text = text.replace(symbol, f" {expansions[symbol]} ")
    text = _CAMEL.sub(" ", text)
    text = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", text)  # 'age40' -> 'age 40'
    words = re.split(r"[\s_\-/]+", text.strip())
    return " ".join(w.lower() for w in words if w)


def load_prompt_config(name_or_path: str = "default") -> dict[str, Any]:
    return load_json("prompts", name_or_path)


def build_prompts(schema: AttributeSchema, template: str | None = None, prompt_config: str = "default") -> list[str]:
    """One sentence per attribute, in schema order. `template` overrides the config's; '{phrase}' alone disables it."""
    cfg = load_prompt_config(prompt_config)
    template = cfg["template"] if template is None else template
    if "{phrase}" not in template:
        raise ParError(f"prompt template {template!r} has no '{{phrase}}' placeholder; add one")
    return [template.format(phrase=expand_phrase(p, cfg["expansions"])) for p in schema.phrases]
