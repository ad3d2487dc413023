"""The state dict inside a weights file as training scripts save them: bare, or under a container key
(`model_state_dict`, `state_dict`, `state_dicts` (a list of one), `model`), with DataParallel's `module.` prefix.
One reading for the CLIP weights, the fusion init, the authors' checkpoint and torchvision detectors."""
from __future__ import annotations

from typing import Any

CONTAINERS = ("model_state_dict", "state_dict", "state_dicts", "model")


def unwrap_state_dict(raw: Any) -> tuple[Any, dict[str, Any]]:
    """(the state dict in `raw`, what else the file says: its `epoch` when it has one). The result is whatever was
    found; callers check it is a non-empty dict of tensors and say what they expected."""
    info: dict[str, Any] = {}
    state = raw
    if isinstance(raw, dict):
        for key in CONTAINERS:
            if isinstance(raw.get(key), dict):
                state = raw[key]
                if isinstance(raw.get("epoch"), int):
                    info["epoch"] = raw["epoch"]
                break
        if isinstance(state, dict) and isinstance(state.get("state_dicts"), list) and state["state_dicts"]:
            state = state["state_dicts"][0]  # the reference saves a list of one
    if isinstance(state, dict) and state and all(isinstance(k, str) and k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, info
