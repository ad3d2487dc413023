"""Frame preprocessing of SPEC §2: zero-pad to a square, resize, CLIP normalisation.

Decoding, padding and resizing happen in loader workers and give uint8 [3, S, S]; the
normalisation runs on the device (a quarter of the bytes to move). Extract and predict use
these same functions, and the store records the parameters.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocess:
    size: int = 224
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    pad: str = "zero-square"
    interpolation: str = "bicubic"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]), pad=d["pad"],
                   interpolation=d["interpolation"])


def pad_to_square(img: Image.Image) -> Image.Image:
    """Centre the image on a black square (MARS crops are 256x128 -> 256x256)."""
    w, h = img.size
    if w == h:
        return img
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(img, ((side - w) // 2, (side - h) // 2))
    return canvas


def prepare_image(img: Image.Image, pp: Preprocess) -> np.ndarray:
    """PIL image (any mode, any size) -> uint8 [3, size, size]."""
    img = img.convert("RGB")
    if pp.pad == "zero-square":
        img = pad_to_square(img)
    img = img.resize((pp.size, pp.size), _RESAMPLE[pp.interpolation])
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def load_frame(path: str | Path, pp: Preprocess) -> tuple[np.ndarray | None, str]:
    """Decode and prepare one frame; (None, reason) for a missing, empty, corrupt or truncated file."""
    try:
        with Image.open(path) as img:
            img.load()  # decode fully now: truncated files fail here, not later
            return prepare_image(img, pp), ""
    except FileNotFoundError:
        return None, "file not found"
    except UnidentifiedImageError:
        return None, "not a readable image (empty or corrupt)"
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"corrupt or truncated image ({exc})"


def normalize(batch: torch.Tensor, pp: Preprocess, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, S, S] on any device -> normalised float [B, 3, S, S]."""
    mean = torch.tensor(pp.mean, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
    return ((batch.float() / 255.0 - mean) / std).to(dtype)
