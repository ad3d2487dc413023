"""Checkpoints: safetensors weights + a JSON config beside them (format documented in README)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


from . import __version__
from .atomic import atomic_path, write_json_atomic
from .errors import ParError
from .model import VTFPAR, ModelConfig
from .store import check_identity

CHECKPOINT_FORMAT = "par-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(model: VTFPAR, path_stem: Path, meta: dict[str, Any]) -> None:
    """Write `<stem>.safetensors` then `<stem>.json` (each atomically; the JSON names the weights it goes with)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = path_stem.with_suffix(".safetensors")
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata={"format": CHECKPOINT_FORMAT})
    write_json_atomic(path_stem.with_suffix(".json"), {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "par_version": __version__,
        "weights": weights.name, "model_config": model.cfg.to_dict(), **meta,
    })


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (-> best), a .json or a .safetensors path -> the checkpoint's JSON."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.json"
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise ParError(f"{path}: checkpoint not found; give a run folder from `par train` or its best.json / last.json")
    return path


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[VTFPAR, dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta_path = resolve_checkpoint(path)
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise ParError(f"{meta_path}: not a valid checkpoint config (broken JSON); use another checkpoint") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ParError(f"{meta_path}: not a par checkpoint; give the .json written by `par train`")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ParError(f"{meta_path}: checkpoint version {meta.get('version')} is not supported (this par reads {CHECKPOINT_VERSION})")
    cfg = ModelConfig.from_dict(meta["model_config"])
    weights = meta_path.with_name(meta["weights"])
    try:
        state = load_file(str(weights))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise ParError(f"{weights}: cannot read checkpoint weights ({exc}); re-save or retrain") from None
    if "text_features" not in state:
        raise ParError(f"{weights}: no text_features tensor; this is not a par checkpoint")
    model = VTFPAR(cfg, state["text_features"])
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ParError(f"{weights}: weights do not match the model config in {meta_path.name} "
                       f"({str(exc).splitlines()[0]}); the two files belong together") from None
    return model.to(device).eval(), meta


def check_store_matches(meta: dict[str, Any], store_identity: dict[str, Any], store_path: str, ckpt_path: str) -> None:
    check_identity(meta["store_identity"], store_identity, "token store", store_path,
                   f"the checkpoint {ckpt_path} needs a store extracted with the same CLIP model, weights, schema, "
                   f"prompts and preprocessing")
