"""Frame preprocessing: zero-pad to a square, resize, and the stored training views; normalisation on the device.

Two decoders give the same uint8 [3, S, S] frames (within one grey level, the resize filters differ slightly):
`pil` decodes and resizes in loader workers; `torchvision` decodes batches with torchvision.io on the extraction
device (nvJPEG on a GPU) and pads and resizes there. The store records which one made its tokens.

Views (`par extract --views V`) follow the reference's training augmentation on the resized square image:
view 0 is the frame itself, view 1 its horizontal flip, views 2.. a Pad(p) + random crop back to S, flipped
with probability 1/2 (torchvision's Pad, RandomCrop, RandomHorizontalFlip), drawn from a recorded seed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class Preprocess:
    size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    pad: str = "zero-square"
    interpolation: str = "bilinear"
    decoder: str = "pil"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocess":
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]), pad=d["pad"],
                   interpolation=d["interpolation"], decoder=d.get("decoder", "pil"))


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


def prepare_on_device(images: Sequence[torch.Tensor], pp: Preprocess) -> torch.Tensor:
    """Decoded uint8 [3, H, W] images (any device, any sizes) -> uint8 [B, 3, S, S]: the `pil` path's padding and
    resize done with torch (antialiased, as PIL resizes). Images of one shape are resized together."""
    out = torch.empty((len(images), 3, pp.size, pp.size), dtype=torch.uint8, device=images[0].device)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(tuple(im.shape), []).append(i)
    for (_, h, w), idx in by_shape.items():
        x = torch.stack([images[i] for i in idx]).float()
        if pp.pad == "zero-square" and h != w:
            side = max(h, w)
            top, left = (side - h) // 2, (side - w) // 2
            x = torch.nn.functional.pad(x, (left, side - w - left, top, side - h - top))
        x = torch.nn.functional.interpolate(x, size=(pp.size, pp.size), mode=pp.interpolation, antialias=True,
                                            align_corners=False)
        out[idx] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def normalize(batch: torch.Tensor, pp: Preprocess, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, 3, S, S] on any device -> normalised float [B, 3, S, S]."""
    mean = torch.tensor(pp.mean, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pp.std, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1)
    return ((batch.float() / 255.0 - mean) / std).to(dtype)


# --- stored views -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class View:
    flip: bool = False
    crop: tuple[int, int] | None = None  # (top, left) of the crop in the image padded by `pad` on every side
    pad: int = 0


def view_of(k: int, seed: int, tracklet: int, frame: int, pad: int) -> View:
    """View k of frame `frame` (its position in the tracklet's frame list) of tracklet `tracklet` (manifest order)."""
    if k == 0:
        return View()
    if k == 1:
        return View(flip=True)
    rng = np.random.default_rng([seed, tracklet, frame, k])
    top, left = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
    return View(flip=bool(rng.random() < 0.5), crop=(top, left), pad=pad)


def apply_view(img: torch.Tensor, view: View) -> torch.Tensor:
    """uint8 [3, S, S] (any device) -> the view, same shape: zero pad, crop back to S, then flip (torchvision's
    order)."""
    if view.crop is not None:
        s, p = img.shape[-1], view.pad
        top, left = view.crop
        img = torch.nn.functional.pad(img, (p, p, p, p))[:, top:top + s, left:left + s]
    if view.flip:
        img = torch.flip(img, dims=[-1])
    return img.contiguous()
