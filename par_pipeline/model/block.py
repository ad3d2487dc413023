"""The fusion model's configuration and its Transformer block: the leaf that the fusion model and the temporal
models both build on.

A model config file (`data_manifests/models/<name>.json`) holds the architecture, every key of `ARCHITECTURE`
and nothing else; what a run varies (fusion or not, text tokens, DropPath, the temporal model, and optionally the
depth) comes from the training options, and the input sizes from the store.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from functools import partial
from typing import Any

from torch import nn

from ..errors import ParError
from ..imports import timm_module
from ..resources import load_json

Block = timm_module("timm.models.vision_transformer").Block  # par's first import of timm: without wandb

ARCHITECTURE = ("name", "hidden", "depth", "heads", "mlp_ratio", "qkv_bias", "head_batchnorm")


@dataclass
class ModelConfig:
    name: str
    hidden: int
    depth: int
    heads: int
    mlp_ratio: float
    qkv_bias: bool
    head_batchnorm: bool
    fusion: bool  # False: the paper's "w/o FusionFormer" (fully connected layers instead)
    text_tokens: bool  # False: learned attribute queries instead of CLIP text features
    drop_path: float
    temporal: str  # "mean" or a temporal model config name
    input_dim: int
    num_attributes: int
    temporal_config: dict[str, Any] = field(default_factory=dict)  # the temporal model file's contents

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "model config") -> "ModelConfig":
        """A config saved with a checkpoint: every key known, every field present."""
        check_keys(d, [f.name for f in fields(cls)], where, optional=("temporal_config",))
        return cls(**d)

    @property
    def needs_frames(self) -> bool:
        """Whether the model reads every frame's tokens (a temporal model) or only their mean."""
        return self.temporal != "mean"


def check_keys(d: dict[str, Any], keys: Any, where: str, optional: Any = ()) -> None:
    """A user's or a saved file holds exactly these keys: a typo is an error naming the key, not a silent default."""
    unknown = sorted(set(d) - set(keys))
    if unknown:
        raise ParError(f"{where}: unknown key(s) {unknown}; the keys are {list(keys)}")
    missing = [k for k in keys if k not in d and k not in optional]
    if missing:
        raise ParError(f"{where}: missing key(s) {missing}")


def load_model_config(name_or_path: str, *, fusion: bool, text_tokens: bool, drop_path: float, temporal: str,
                      input_dim: int, num_attributes: int, depth: int | None = None) -> ModelConfig:
    """The architecture from its file, the run's choices and the store's sizes."""
    arch = load_json("models", name_or_path)
    check_keys(arch, ARCHITECTURE, f"model config {name_or_path}")
    cfg = ModelConfig(**arch, fusion=fusion, text_tokens=text_tokens, drop_path=drop_path, temporal=temporal,
                      input_dim=input_dim, num_attributes=num_attributes)
    if depth is not None:
        cfg.depth = depth
    if cfg.temporal != "mean":
        cfg.temporal_config = load_json("models/temporal", cfg.temporal)
        if not cfg.fusion:
            raise ParError(
                f"temporal model '{cfg.temporal}' feeds the fusion Transformer; it cannot go with --no-fusion"
            )
    if cfg.hidden % cfg.heads:
        raise ParError(f"model config {cfg.name}: hidden {cfg.hidden} is not divisible by heads {cfg.heads}")
    return cfg


def fusion_block(cfg: ModelConfig, width: int, heads: int) -> Block:
    """timm's ViT block as the reference builds it: pre-norm, qkv bias, exact GELU, DropPath, LayerNorm eps 1e-6."""
    return Block(width, heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, drop_path=cfg.drop_path,
                 norm_layer=partial(nn.LayerNorm, eps=1e-6))
