"""The authors' released VTF-PAR checkpoints (Event-AHU/VTF_PAR) as par's fusion model.

The reference's `TransformerClassifier` (models/base_block.py) keeps its whole ImageNet ViT as `vit`, and its
fusion block and final norm are the same modules as `vit.blocks[-1]` and `vit.norm` (so its state dict holds them
twice: `blocks.0.*` = `vit.blocks.11.*`, `norm.*` = `vit.norm.*`); the forward uses only those, `word_embed`,
`visual_embed`, one `weight_layer.<i>` = `Linear(768, 1)` per attribute and `bn` = `BatchNorm1d(A)`. Its text
side is not in the file: it encodes its attribute words with CLIP at run time, which is what a store's `words`
text features are. Every tensor the forward uses is mapped exactly once; the rest of `vit.*` is the unused
ImageNet backbone.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from ..errors import ParError
from .state import CONTAINERS, unwrap_state_dict

BLOCK_PARAMS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight",
                "mlp.fc2.bias")
NORM_PARAMS = ("weight", "bias")
BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
HEAD = re.compile(r"^weight_layer\.(\d+)\.(weight|bias)$")


def read_reference_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict in a reference checkpoint file (a `torch.save`d dict: `model_state_dict`, a bare state dict,
    `state_dict`/`state_dicts`; DataParallel's `module.` prefix dropped) and what else the file says (its epoch)."""
    if not path.is_file():
        raise ParError(f"{path}: checkpoint file not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, pickled objects beyond tensors: many types
        raise ParError(f"{path}: cannot read it as a torch checkpoint ({type(exc).__name__}); give the reference's "
                       f"saved .pth file") from None
    state, info = unwrap_state_dict(raw)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ParError(f"{path}: no state dict of tensors in it (looked in {list(CONTAINERS)} and at the top level); "
                       f"this is not a VTF-PAR checkpoint")
    return state, info


def reference_to_par(state: dict[str, torch.Tensor], where: str) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """par's VTF-PAR state dict (text features aside) from a reference state dict, and the sizes it implies
    (`attributes`, `hidden`, `input_dim`). Missing or left-over (beyond the unused `vit.*`) tensors are an error
    naming them; shapes are checked against the model they go into (`check_shapes`)."""
    heads = sorted({int(m.group(1)) for k in state if (m := HEAD.match(k))})
    wanted = {"word_embed.weight": "text_embed.weight", "word_embed.bias": "text_embed.bias",
              "visual_embed.weight": "visual_embed.weight", "visual_embed.bias": "visual_embed.bias",
              **{f"blocks.0.{p}": f"blocks.0.{p}" for p in BLOCK_PARAMS},
              **{f"norm.{p}": f"norm.{p}" for p in NORM_PARAMS}, **{f"bn.{p}": f"bn.{p}" for p in BN_PARAMS}}
    missing = [k for k in wanted if k not in state]
    if not heads:
        missing.append("weight_layer.<i>.weight/bias")
    missing += [f"weight_layer.{i}.{p}" for i in range(max(heads, default=-1) + 1) for p in ("weight", "bias")
                if f"weight_layer.{i}.{p}" not in state]
    if missing:
        raise ParError(f"{where}: missing tensor(s) {missing[:6]}{' ...' if len(missing) > 6 else ''}; this is not a "
                       f"complete VTF-PAR TransformerClassifier state dict")
    used = set(wanted) | {k for k in state if HEAD.match(k)}
    extra = sorted(k for k in state if k not in used and not k.startswith("vit."))
    if extra:
        raise ParError(f"{where}: tensor(s) the VTF-PAR model does not have: {extra[:6]}; this is not a VTF-PAR "
                       f"TransformerClassifier state dict (or one of another version)")
    _check_aliases(state, where)
    A = len(heads)
    H, D = state["word_embed.weight"].shape
    for i in range(A):  # each head is its own Linear(H, 1); par holds them as one [A, H] weight
        for p, shape in (("weight", (1, H)), ("bias", (1,))):
            if tuple(state[f"weight_layer.{i}.{p}"].shape) != shape:
                raise ParError(f"{where}: weight_layer.{i}.{p} is {tuple(state[f'weight_layer.{i}.{p}'].shape)}, "
                               f"expected {shape} (word_embed is {(H, D)})")
    out = {ours: state[theirs].clone() for theirs, ours in wanted.items()}
    out["head_weight"] = torch.cat([state[f"weight_layer.{i}.weight"] for i in range(A)]).clone()
    out["head_bias"] = torch.cat([state[f"weight_layer.{i}.bias"] for i in range(A)]).clone()
    return out, {"attributes": A, "hidden": int(H), "input_dim": int(D)}


def reference_name(par_key: str) -> str:
    """The reference's name of a tensor of par's model (for messages)."""
    renamed = {"text_embed": "word_embed", "head_weight": "weight_layer.<i>.weight",
               "head_bias": "weight_layer.<i>.bias"}
    first, _, rest = par_key.partition(".")
    return renamed.get(first, first) + (f".{rest}" if rest else "")


def _check_aliases(state: dict[str, torch.Tensor], where: str) -> None:
    """The fusion block and norm are also stored under `vit.` (the same modules): when both copies are there they
    must agree, else the file was edited or mixed."""
    numbers = [int(m.group(1)) for k in state if (m := re.match(r"^vit\.blocks\.(\d+)\.", k))]
    pairs = {f"norm.{p}": f"vit.norm.{p}" for p in NORM_PARAMS}
    if numbers:
        pairs.update({f"blocks.0.{p}": f"vit.blocks.{max(numbers)}.{p}" for p in BLOCK_PARAMS})
    for ours, alias in pairs.items():
        if alias in state and not torch.equal(state[ours], state[alias]):
            raise ParError(f"{where}: {ours} differs from {alias}, which is the same module in the reference model; "
                           f"the checkpoint is inconsistent")


def check_shapes(mapped: dict[str, torch.Tensor], model: torch.nn.Module, where: str) -> None:
    """Every mapped tensor has the shape of the model's: a mismatch names the reference's tensor."""
    expected = model.state_dict()
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ParError(f"{where}: {reference_name(key)} is {tuple(value.shape)}, the VTF-PAR model needs "
                           f"{tuple(expected[key].shape)}; the file is not a consistent VTF-PAR checkpoint")
