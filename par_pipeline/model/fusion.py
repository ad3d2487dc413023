"""The VTF-PAR fusion model: embeddings, timm ViT block(s), per-attribute heads, BatchNorm over the logits.

As the reference (models/base_block.py): `Linear(D, H)` on the frames' tokens combined over time (the temporal
mean, or a temporal model from `data_manifests/models/temporal/`) and on the A attribute text features; the
sequence [text (A); visual (N)] goes through timm's ViT `Block` (pre-norm, qkv bias, exact GELU, DropPath on both
residual branches, LayerNorm eps 1e-6) and a final LayerNorm; head i = `Linear(H, 1)` on output token i; the A
logits go through `BatchNorm1d(A)`. Embeddings and heads keep PyTorch's default Linear initialisation; the block
and the final norm come from block 11 and `norm` of an ImageNet ViT-B/16 (`load_fusion_init`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ParError
from ..outputs import file_sha256
from .block import ModelConfig, fusion_block
from .state import unwrap_state_dict
from .temporal import TemporalModel, build_temporal


class VTFPAR(nn.Module):
    """[text tokens (A); visual tokens (N); temporal tokens] -> fusion -> head i reads token i -> BatchNorm1d(A)."""

    def __init__(self, cfg: ModelConfig, text_features: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        A, H = cfg.num_attributes, cfg.hidden
        if tuple(text_features.shape) != (A, cfg.input_dim):
            raise ParError(f"text features {tuple(text_features.shape)} do not fit the model ({A}, {cfg.input_dim})")
        self.register_buffer("text_features", text_features.float().clone())
        self.visual_embed = nn.Linear(cfg.input_dim, H)
        if cfg.text_tokens:
            self.text_embed = nn.Linear(cfg.input_dim, H)
        else:
            self.attribute_queries = nn.Parameter(torch.randn(A, H) * 0.02)
        self.temporal: TemporalModel | None = build_temporal(cfg) if cfg.needs_frames else None
        if cfg.fusion:
            self.blocks = nn.ModuleList(fusion_block(cfg, H, cfg.heads) for _ in range(cfg.depth))
            self.norm = nn.LayerNorm(H, eps=1e-6)
        else:
            self.fc = nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.Linear(H, H), nn.LayerNorm(H, eps=1e-6))
        # A separate Linear(H, 1) heads held as one [A, H] weight (head i only ever sees token i), initialised as
        # PyTorch initialises each Linear(H, 1): uniform(+-1/sqrt(H)) for weight and bias.
        bound = 1 / math.sqrt(H)
        self.head_weight = nn.Parameter(torch.empty(A, H).uniform_(-bound, bound))
        self.head_bias = nn.Parameter(torch.empty(A).uniform_(-bound, bound))
        self.bn = GlobalBatchNorm1d(A) if cfg.head_batchnorm else nn.Identity()
        self.exporting = False  # par export's graph (head_logits)

    def attribute_tokens(self) -> torch.Tensor:
        return self.text_embed(self.text_features) if self.cfg.text_tokens else self.attribute_queries

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        """visual: [B, N, D] frame tokens averaged over time, or [B, T, N, D] for a temporal model -> logits [B, A]."""
        extra = None
        if self.temporal is not None:
            visual, extra = self.temporal(visual, self.visual_embed)
        B = visual.shape[0]
        v = self.visual_embed(visual)
        t = self.attribute_tokens().unsqueeze(0).expand(B, -1, -1)
        A = t.shape[1]
        if self.cfg.fusion:
            x = torch.cat([t, v] if extra is None else [t, v, extra], dim=1)
            for blk in self.blocks:
                x = blk(x)
            tokens = self.norm(x)[:, :A]
        else:
            pooled = self.fc(v.mean(dim=1))
            tokens = pooled.unsqueeze(1) + t  # each head still reads its own attribute token
        return self.bn(self.head_logits(tokens))

    def head_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Head i (a Linear(H, 1)) on attribute token i: [B, A, H] -> [B, A]. Exported graphs take the same sum as one
        batched matrix product (`exporting`): OpenVINO's CPU plugin (2026.4) computes the Mul -> ReduceSum -> Add that
        the elementwise form exports to wrongly, by up to 0.5 in a logit."""
        if self.exporting:
            return torch.einsum("bah,ah->ba", tokens, self.head_weight) + self.head_bias
        return (tokens * self.head_weight).sum(-1) + self.head_bias


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics span every rank's part of the batch (any backend, CPU too).

    torch's SyncBatchNorm needs GPU modules; this keeps DDP on CPU (gloo) equal to one process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as tdist

        if not (self.training and tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        # Two passes (sum, then the sum of squared deviations): E[x^2] - mean^2 loses float32 precision when the
        # logits' mean is large against their spread.
        sums = all_reduce(torch.cat([x.sum(0), x.new_full((1,), float(x.shape[0]))]))
        n = sums[-1]
        mean = sums[:-1] / n
        var = all_reduce(((x - mean) ** 2).sum(0)) / n
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach() * n / (n - 1))
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


# --- fusion initialisation ------------------------------------------------------------------------------------------

def _vit_state(source: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, record) of an ImageNet ViT: a local file, or `timm:<model name>` (downloads, online only)."""
    if source.startswith("timm:"):
        from ..imports import import_timm

        import_timm()
        import timm

        name = source[len("timm:"):]
        try:
            vit = timm.create_model(name, pretrained=True)
        except Exception as exc:  # unknown name, no network: many types
            raise ParError(f"--fusion-init {source}: cannot load timm model '{name}' ({type(exc).__name__}); download "
                           f"the weights where you are online and pass the file") from None
        return vit.state_dict(), {"kind": "timm", "name": name}
    path = Path(source)
    if not path.is_file():
        raise ParError(f"{path}: --fusion-init file not found; give an ImageNet ViT-B/16 checkpoint "
                       f"(jx_vit_base_p16_224-80ecf9dd.pth or a timm .safetensors), timm:<name>, or random")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state, _ = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # corrupt pickle / safetensors header
        raise ParError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}); give a timm ViT checkpoint file"
        ) from None
    return state, {"kind": "file", "name": path.name, "sha256": file_sha256(path)}


def load_fusion_init(model: VTFPAR, source: str) -> dict[str, Any]:
    """Copy the LAST block(s) and the final `norm` of an ImageNet ViT into the fusion block(s) and norm; returns a
    record of the source. `random` keeps PyTorch's initialisation (and says so in the record)."""
    if source == "random":
        return {"kind": "random"}
    if not model.cfg.fusion:
        raise ParError(f"--fusion-init {source}: needs the fusion Transformer; drop --no-fusion")
    state, record = _vit_state(source)
    numbers = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()})
    if not numbers or "norm.weight" not in state:
        raise ParError(f"{source}: no 'blocks.N.*' and 'norm.*' tensors; this is not a timm ViT checkpoint")
    if len(numbers) < len(model.blocks):
        raise ParError(f"{source}: has {len(numbers)} blocks, the model needs {len(model.blocks)}")
    wanted: dict[str, tuple[nn.Module, str]] = {}
    for i, blk in enumerate(model.blocks):
        src = numbers[len(numbers) - len(model.blocks) + i]
        wanted.update({f"blocks.{src}.{n}": (blk, n) for n in blk.state_dict()})
    wanted.update({f"norm.{n}": (model.norm, n) for n in model.norm.state_dict()})
    for key, (module, name) in wanted.items():
        need = tuple(module.state_dict()[name].shape)
        got = tuple(state[key].shape) if key in state else "missing"
        if got != need:
            raise ParError(f"{source}: {key} is {got}, the fusion model needs {need}; use a ViT-B/16 checkpoint or a "
                           f"model config of its width")
    with torch.no_grad():
        for key, (module, name) in wanted.items():
            module.state_dict()[name].copy_(state[key])
    record["source_blocks"] = sorted({int(k.split(".")[1]) for k in wanted if k.startswith("blocks.")})
    return record
