"""The VTF-PAR fusion model (SPEC §2): embeddings, pre-norm ViT block(s), per-attribute heads, BatchNorm.

Parameter names follow timm's ViT (`blocks.N.norm1`, `attn.qkv`, `attn.proj`, `mlp.fc1`, ...), so the
last block of an ImageNet ViT-B/16 checkpoint loads into the fusion block by name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ParError
from .resources import load_json


@dataclass
class ModelConfig:
    name: str = "vtf-par"
    hidden: int = 768
    depth: int = 1
    heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    fusion: bool = True  # False: the paper's "w/o FusionFormer" (fully connected layers instead)
    text_tokens: bool = True  # False: learned attribute queries instead of CLIP text embeddings
    head_batchnorm: bool = True
    input_dim: int = 512
    num_attributes: int = 43

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def load_model_config(name_or_path: str = "vtf-par", **overrides: Any) -> ModelConfig:
    cfg = ModelConfig.from_dict(load_json("models", name_or_path))
    for k, v in overrides.items():
        if v is not None:
            setattr(cfg, k, v)
    return cfg


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool):
        super().__init__()
        if dim % heads:
            raise ParError(f"model config: hidden {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, L, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block: x + attn(norm1(x)); x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VTFPAR(nn.Module):
    """[text tokens (A); visual tokens (N)] -> fusion -> head i reads token i -> BatchNorm1d(A)."""

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
        if cfg.fusion:
            self.blocks = nn.ModuleList(Block(H, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias) for _ in range(cfg.depth))
            self.norm = nn.LayerNorm(H, eps=1e-6)
        else:
            self.fc = nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.Linear(H, H), nn.LayerNorm(H, eps=1e-6))
        # A separate Linear(H, 1) heads, held as one [A, H] weight: head i only ever sees token i.
        self.head_weight = nn.Parameter(torch.empty(A, H))
        self.head_bias = nn.Parameter(torch.zeros(A))
        nn.init.trunc_normal_(self.head_weight, std=0.02)
        self.bn = GlobalBatchNorm1d(A) if cfg.head_batchnorm else nn.Identity()
        self.apply(_init_linear)

    def attribute_tokens(self) -> torch.Tensor:
        return self.text_embed(self.text_features) if self.cfg.text_tokens else self.attribute_queries

    def forward(self, visual: torch.Tensor) -> torch.Tensor:
        """visual: [B, N, D] frame tokens averaged over time -> logits [B, A]."""
        B = visual.shape[0]
        v = self.visual_embed(visual)
        t = self.attribute_tokens().unsqueeze(0).expand(B, -1, -1)
        A = t.shape[1]
        if self.cfg.fusion:
            x = torch.cat([t, v], dim=1)
            for blk in self.blocks:
                x = blk(x)
            tokens = self.norm(x)[:, :A]
        else:
            pooled = self.fc(v.mean(dim=1))
            tokens = pooled.unsqueeze(1) + t  # each head still reads its own attribute token
        logits = (tokens * self.head_weight).sum(-1) + self.head_bias
        return self.bn(logits)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics span every rank's part of the batch (any backend, CPU too).

    torch's SyncBatchNorm needs GPU modules; this keeps DDP on CPU (gloo) equal to one process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as tdist

        if not (self.training and tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        stats = all_reduce(torch.cat([x.sum(0), (x * x).sum(0), x.new_full((1,), float(x.shape[0]))]))
        C = x.shape[1]
        n = stats[-1]
        mean = stats[:C] / n
        var = stats[C:2 * C] / n - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach() * n / (n - 1))
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def load_fusion_init(model: VTFPAR, path: str | Path) -> int:
    """Copy the LAST block of a timm ViT-B/16 checkpoint into the fusion block(s); returns tensors loaded."""
    path = Path(path)
    if not path.is_file():
        raise ParError(f"{path}: --fusion-init checkpoint not found; give a local timm ViT-B/16 file (.safetensors/.pth)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model"):
                if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                    state = state[key]
    except Exception as exc:
        raise ParError(f"{path}: cannot read checkpoint ({type(exc).__name__}); give a timm ViT checkpoint file") from None
    if not model.cfg.fusion:
        raise ParError(f"{path}: --fusion-init needs the fusion Transformer; drop --no-fusion")
    numbers = sorted({int(k.split(".")[1]) for k in state if k.startswith("blocks.") and k.split(".")[1].isdigit()})
    if not numbers:
        raise ParError(f"{path}: no 'blocks.N.*' tensors; this is not a timm ViT checkpoint")
    last = numbers[-1]
    loaded = 0
    for i, blk in enumerate(model.blocks):
        src = numbers[-len(model.blocks) + i] if len(numbers) >= len(model.blocks) else last
        for name, tensor in blk.state_dict().items():
            key = f"blocks.{src}.{name}"
            if key not in state or tuple(state[key].shape) != tuple(tensor.shape):
                got = tuple(state[key].shape) if key in state else "missing"
                raise ParError(f"{path}: {key} is {got}, the fusion block needs {tuple(tensor.shape)}; "
                               f"use a ViT-B/16 checkpoint or a model config with a matching width")
        blk.load_state_dict({n: state[f"blocks.{src}.{n}"] for n in blk.state_dict()})
        loaded += len(blk.state_dict())
    return loaded
