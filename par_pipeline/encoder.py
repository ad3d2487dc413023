"""The frozen CLIP encoder (open_clip): per-frame tokens [N, D] and attribute text embeddings [A, D]."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

from .errors import ParError
from .preprocess import Preprocess, normalize
from .resources import DATA_DIR

CLIP_CONFIG_DIR = DATA_DIR / "models" / "clip"
_registered = False


def register_model_configs() -> None:
    """Make the shipped CLIP-shaped configs (e.g. `par-tiny-clip`) known to open_clip."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CLIP_CONFIG_DIR)
        _registered = True


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_identity(pretrained: str | None, allow_random_init: bool, seed: int) -> dict[str, Any]:
    if pretrained is None:
        return {"kind": "random-init", "seed": seed} if allow_random_init else {}
    path = Path(pretrained)
    if path.exists():
        return {"kind": "file", "name": path.name, "sha256": file_sha256(path)}
    return {"kind": "open_clip-tag", "tag": pretrained}


class ClipEncoder:
    """Frozen open_clip model; `encode_frames` gives CLS + patch tokens after ln_post, times proj."""

    def __init__(self, model_name: str = "ViT-B-16", pretrained: str | None = None, allow_random_init: bool = False,
                 device: str = "cpu", precision: str = "auto", seed: int = 0):
        import open_clip

        register_model_configs()
        if model_name not in open_clip.list_models():
            raise ParError(f"unknown CLIP model '{model_name}'; use an open_clip name (e.g. ViT-B-16) or par-tiny-clip")
        if pretrained is None and not allow_random_init:
            raise ParError(
                f"no CLIP weights given for {model_name}: pass --pretrained openai (downloads when online) or "
                f"--pretrained /path/to/checkpoint.pt; --allow-random-init is for tests and the demo only"
            )
        self.model_name = model_name
        self.device = torch.device(device)
        self.weights = weights_identity(pretrained, allow_random_init, seed)
        torch.manual_seed(seed)
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # open_clip warns on random init
        try:
            if pretrained is not None and not Path(pretrained).exists():
                model = open_clip.create_model(model_name, pretrained=pretrained, pretrained_text=False)
            else:
                model = open_clip.create_model(model_name, pretrained=None, pretrained_text=False, load_weights=False)
                if pretrained is not None:
                    open_clip.load_checkpoint(model, str(pretrained))
        except ParError:
            raise
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ParError(f"{pretrained}: cannot load {model_name} weights ({first}); give a matching open_clip "
                           f"checkpoint file or a tag from open_clip.list_pretrained()") from None
        except Exception as exc:  # network failures of tag downloads come in many types
            raise ParError(f"cannot fetch '{pretrained}' weights for {model_name} ({type(exc).__name__}); "
                           f"download them where you are online and pass the local file with --pretrained") from None
        model.eval().requires_grad_(False)
        self.model = model.to(self.device)
        self.visual = model.visual
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = self.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        self.preprocess = Preprocess(
            size=size, mean=tuple(cfg.get("mean", Preprocess.mean)), std=tuple(cfg.get("std", Preprocess.std)),
            interpolation=cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in ("bicubic", "bilinear") else "bicubic",
        )
        self.autocast_dtype = _autocast_dtype(self.device, precision)
        grid = size // self.visual.patch_size[0]
        self.num_tokens = grid * grid + 1
        self.dim = int(self.visual.proj.shape[1]) if self.visual.proj is not None else int(self.visual.ln_post.normalized_shape[0])
        self.tokenizer = open_clip.get_tokenizer(model_name)

    @torch.inference_mode()
    def encode_frames(self, images_uint8: torch.Tensor, out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> [B, N, D] in `out_dtype` (all tokens after ln_post, projected).

        Casting to the store dtype on the device halves the bytes moved back for float16 stores.
        """
        x = normalize(images_uint8.to(self.device, non_blocking=True), self.preprocess)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            v = self.visual
            h = v.transformer(v._embeds(x))
            h = v.ln_post(h)
            if v.proj is not None:
                h = h @ v.proj
        return h.to(out_dtype)

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """A prompts -> float32 [A, D]: the projected end-of-text features (not normalised)."""
        tokens = self.tokenizer(prompts).to(self.device)
        return self.model.encode_text(tokens).float()


def _autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":  # on a GPU: bf16 where the card has it, else fp16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    raise ParError(f"unknown precision '{precision}'; use auto, fp32, fp16 or bf16")
