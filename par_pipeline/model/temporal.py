"""Temporal models over per-frame tokens, as variants of the paper's temporal mean (configs in
`data_manifests/models/temporal/`). Each takes frames [B, T, N, D] and gives the visual tokens [B, N, D] the fusion
reads, plus optional extra tokens [B, K, H] that join the fusion sequence.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ParError
from .block import ModelConfig, check_keys, fusion_block


class TemporalModel(nn.Module):
    KEYS: tuple[str, ...] = ()  # the keys of its config file besides `kind` and `description`

    def forward(self, frames: torch.Tensor, embed: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError


class AttentionPool(TemporalModel):
    """softmax_t(score(frame t)) weighted sum of the frames; the score reads the frame's CLS and mean patch token.
    The last layer starts at zero, so training starts from the plain temporal mean."""
    KEYS = ("hidden",)

    def __init__(self, cfg: ModelConfig, conf: dict[str, Any]):
        super().__init__()
        dim, hidden = cfg.input_dim, int(conf["hidden"])
        self.norm = nn.LayerNorm(2 * dim, eps=1e-6)
        self.score = nn.Sequential(nn.Linear(2 * dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.score[-1].weight)
        nn.init.zeros_(self.score[-1].bias)

    def forward(self, frames: torch.Tensor, embed: nn.Module) -> tuple[torch.Tensor, None]:
        desc = torch.cat([frames[:, :, 0], frames[:, :, 1:].mean(2)], dim=-1)
        weights = torch.softmax(self.score(self.norm(desc)).squeeze(-1).float(), dim=1).to(frames.dtype)
        return torch.einsum("bt,btnd->bnd", weights, frames), None


class TemporalTransformer(TemporalModel):
    """Per frame: the CLS token and a grid x grid average-pooled patch grid, embedded by the model's visual
    embedding, plus a learned time position; a small Transformer over all T*(1+grid^2) of them. The frames' mean
    stays the visual input; the outputs join the fusion sequence."""
    KEYS = ("grid", "depth", "heads", "max_frames")

    def __init__(self, cfg: ModelConfig, conf: dict[str, Any]):
        super().__init__()
        self.grid, self.max_frames = int(conf["grid"]), int(conf["max_frames"])
        self.time = nn.Parameter(torch.zeros(self.max_frames, cfg.hidden))
        nn.init.trunc_normal_(self.time, std=0.02)
        heads, depth = int(conf["heads"]), int(conf["depth"])
        self.blocks = nn.ModuleList(fusion_block(cfg, cfg.hidden, heads) for _ in range(depth))

    def forward(self, frames: torch.Tensor, embed: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, N, D = frames.shape
        if T > self.max_frames:
            raise ParError(f"the temporal Transformer takes at most {self.max_frames} frames, got {T}")
        side = int(round((N - 1) ** 0.5))
        patches = frames[:, :, 1:].reshape(B * T, side, side, D).permute(0, 3, 1, 2)
        pooled = nn.functional.adaptive_avg_pool2d(patches, self.grid).flatten(2).transpose(1, 2)
        summary = torch.cat([frames[:, :, :1], pooled.reshape(B, T, -1, D)], dim=2)
        x = embed(summary) + self.time[:T].view(1, T, 1, -1)
        x = x.reshape(B, -1, x.shape[-1])
        for blk in self.blocks:
            x = blk(x)
        return frames.mean(1), x


TEMPORAL_MODELS: dict[str, type[TemporalModel]] = {"attention-pool": AttentionPool, "transformer": TemporalTransformer}


def build_temporal(cfg: ModelConfig) -> TemporalModel:
    conf = cfg.temporal_config
    kind = TEMPORAL_MODELS.get(conf.get("kind"))
    if kind is None:
        raise ParError(f"temporal model '{cfg.temporal}': unknown kind {conf.get('kind')!r}; one of "
                       f"{list(TEMPORAL_MODELS)}")
    check_keys(conf, ("kind", "description", *kind.KEYS), f"temporal model '{cfg.temporal}'", optional=("description",))
    return kind(cfg, conf)
