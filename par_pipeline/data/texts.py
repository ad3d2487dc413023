"""The text CLIP reads for each attribute. Three sources, all encoded into every store:

- `words`: the reference implementation's bare attribute words, verbatim (schema field `word`);
- `prompts`: the paper's pipeline: split and expand the phrase ('Age<=40' -> 'age less than or equal to 40'),
  then the template 'the pedestrian has an attribute {phrase}' (`data_manifests/texts/paper.json`);
- `phrases`: the expanded phrases without a template.
"""
from __future__ import annotations

import re
from typing import Any

from ..errors import ParError
from ..resources import load_json
from .schema import AttributeSchema

TEXT_SOURCES = ("words", "prompts", "phrases")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def expand_phrase(text: str, expansions: dict[str, str]) -> str:
    """Split an attribute label into words and expand symbols: 'AgeLess<=40' -> 'age less less than or equal to 40'."""
    for symbol in sorted(expansions, key=len, reverse=True):  # longest first: '<=' before '<'
        text = text.replace(symbol, f" {expansions[symbol]} ")
    text = _CAMEL.sub(" ", text)
    text = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", text)  # 'age40' -> 'age 40'
    words = re.split(r"[\s_\-/]+", text.strip())
    return " ".join(w.lower() for w in words if w)


def load_prompt_config(name_or_path: str = "paper") -> dict[str, Any]:
    return load_json("texts", name_or_path)


def attribute_texts(schema: AttributeSchema, prompt_template: str | None = None) -> dict[str, list[str]]:
    """Every text source's A strings, in schema order. `prompt_template` overrides the paper's template."""
    cfg = load_prompt_config()
    template = cfg["template"] if prompt_template is None else prompt_template
    if "{phrase}" not in template:
        raise ParError(f"prompt template {template!r} has no '{{phrase}}' placeholder; add one")
    phrases = [expand_phrase(p, cfg["expansions"]) for p in schema.phrases]
    return {"words": list(schema.words), "prompts": [template.format(phrase=p) for p in phrases], "phrases": phrases}
