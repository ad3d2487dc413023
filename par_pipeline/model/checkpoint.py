"""Checkpoint files with their model: writing a checkpoint's weights (safetensors), JSON and resume state, and
loading a model back with its weights verified against the sha256 its JSON records. The run folder and checkpoint
JSON themselves (no torch needed to read them) are `par_pipeline.run`'s."""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from ..errors import ParError
from ..run import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint_meta, verify_file
from .block import ModelConfig
from .fusion import VTFPAR


def checkpoint_files(model: VTFPAR, stem: str, meta: dict[str, Any], state: dict[str, Any] | None = None,
                     ) -> dict[str, Callable[[Path], None]]:
    """The writers of `<stem>.safetensors` and `<stem>.json` (and `<stem>.state.pt`): the JSON names the weights
    and their sha256, computed from the bytes written."""
    from safetensors.torch import save as save_bytes

    weights = save_bytes({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                         metadata={"format": CHECKPOINT_FORMAT})
    record = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "par_version": __version__,
              "weights": f"{stem}.safetensors", "weights_sha256": hashlib.sha256(weights).hexdigest(),
              "model_config": model.cfg.to_dict(), **meta}
    files: dict[str, Callable[[Path], None]] = {f"{stem}.safetensors": lambda p: p.write_bytes(weights)}
    if state is not None:
        buf = io.BytesIO()
        torch.save(state, buf)
        blob = buf.getvalue()
        record.update({"state": f"{stem}.state.pt", "state_sha256": hashlib.sha256(blob).hexdigest()})
        files[f"{stem}.state.pt"] = lambda p: p.write_bytes(blob)
    text = json.dumps(record, indent=2) + "\n"
    files[f"{stem}.json"] = lambda p: p.write_text(text)
    return files


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[VTFPAR, dict[str, Any]]:
    """The model of a checkpoint (weights verified against the sha256 in its JSON) and its JSON."""
    from safetensors.torch import load_file

    meta_path, meta = read_checkpoint_meta(path)
    weights = meta_path.with_name(meta["weights"])
    verify_file(weights, meta["weights_sha256"], "the weights file")
    state = load_file(str(weights))
    if "text_features" not in state:
        raise ParError(f"{weights}: no text_features tensor; this is not a par checkpoint")
    model = VTFPAR(ModelConfig.from_dict(meta["model_config"], f"{meta_path}: model_config"), state["text_features"])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ParError(f"{weights}: weights do not match the model config in {meta_path.name} "
                       f"({str(exc).splitlines()[0]}); the two files belong together") from None
    meta["_path"] = str(meta_path)
    return model.to(device).eval(), meta


def load_state(meta_path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The resume state a `last.json` names (sha256 verified)."""
    path = meta_path.with_name(meta["state"])
    verify_file(path, meta["state_sha256"], "the resume state")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a file that passed its checksum but cannot be unpickled: version skew
        raise ParError(f"{path}: cannot read the resume state ({type(exc).__name__}); start a new run") from None
