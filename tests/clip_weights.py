"""Tiny CLIP weights written in every form users hold: OpenAI's TorchScript archive, torch state dicts, safetensors."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn


class _Node(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write_torchscript(state: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive holding `state` under the same names, plus the three scalars OpenAI's archives carry
    (the clip package's ViT-B-16.pt has exactly this shape of state dict)."""
    root = _Node()
    full = {**state, "input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
            "vocab_size": torch.tensor(49408)}
    for key, value in full.items():
        *mods, leaf = key.split(".")
        mod = root
        for name in mods:
            if not hasattr(mod, name):
                mod.add_module(name, _Node())
            mod = getattr(mod, name)
        mod.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(str(path))
    trust(path)


def trust_file(basetemp: Path) -> Path:
    """The suite's PAR_TRUSTED_WEIGHTS file, shared by the test processes of one run (pytest-xdist's workers have
    basetemp folders side by side); made empty when missing."""
    shared = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    listed = shared / "trusted-weights.json"
    with FileLock(f"{listed}.lock"):
        if not listed.is_file():
            listed.write_text(json.dumps({"weights": {}}))
    return listed


def trust(path: Path) -> None:
    """List the archive's sha256 in the file PAR_TRUSTED_WEIGHTS names (the suite's own: conftest sets it), as a
    user trusts a TorchScript export of their own: par loads only known archives."""
    listed = Path(os.environ["PAR_TRUSTED_WEIGHTS"])
    with FileLock(f"{listed}.lock"):
        known = json.loads(listed.read_text()) if listed.is_file() else {"weights": {}}
        known["weights"][hashlib.sha256(path.read_bytes()).hexdigest()] = {"name": f"test archive {path.name}",
                                                                           "quick_gelu": True}
        tmp = listed.with_name(f"{listed.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, listed)


def tiny_clip_files(folder: Path, seed: int = 3) -> dict[str, Path]:
    """The same tiny-CLIP weights as ViT-B-16.pt (TorchScript), open_clip_pytorch_model.bin, model.pt (a dict with
    'state_dict', as training scripts save) and open_clip_model.safetensors."""
    from safetensors.torch import save_file

    from par_pipeline.model.clip import load_clip

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in load_clip("par-tiny-clip", None, True, seed).state_dict().items()}
    files = {"torchscript": folder / "ViT-B-16.pt", "bin": folder / "open_clip_pytorch_model.bin",
             "pt": folder / "model.pt", "safetensors": folder / "open_clip_model.safetensors"}
    write_torchscript(state, files["torchscript"])
    torch.save(state, files["bin"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, files["pt"])
    save_file(state, str(files["safetensors"]))
    return files
