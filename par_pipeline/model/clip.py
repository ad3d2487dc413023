"""The frozen CLIP encoder (open_clip): per-frame tokens [N, D] and attribute text features [A, D].

Weights come in the forms users hold, all read offline: OpenAI's TorchScript archive (the `clip` package's
`ViT-B-16.pt`), a state dict (`open_clip_pytorch_model.bin`, `.pt`) or `.safetensors`; an open_clip tag such as
`openai` downloads through open_clip where the machine is online. Whatever the form, the weights must fit the
named architecture exactly (every tensor present, every shape equal) and its activation: OpenAI's weights were
trained with QuickGELU, so with them the model must be a `-quickgelu` one (the reference's semantics); a
mismatch is an error, never a warning.

Frame tokens: open_clip's public `forward_intermediates` on the last block with the final norm applied (CLS +
patch tokens after `ln_post`), times the visual projection `proj`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import torch

from ..compiling import compiled_or_eager
from ..data.preprocess import Preprocess, normalize
from ..errors import ParError
from ..imports import import_timm
from ..outputs import file_sha256
from ..precision import PRECISIONS, autocast, autocast_dtype
from ..resources import load_json
from .state import unwrap_state_dict

_registered = False


def _open_clip() -> Any:
    """open_clip, which imports timm: par's first import of timm is without wandb (par_pipeline/imports.py)."""
    import_timm()
    import open_clip

    return open_clip


def register_model_configs() -> None:
    """Make the shipped CLIP-shaped configs (e.g. `par-tiny-clip`) known to open_clip."""
    global _registered
    if not _registered:
        open_clip = _open_clip()

        with resources.as_file(resources.files("data_manifests") / "models" / "clip") as folder:
            open_clip.add_model_config(folder)
        _registered = True


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (OpenAI's CLIP release format) is a zip holding code/ and constants.pkl."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names)


TRUSTED_WEIGHTS_ENV = "PAR_TRUSTED_WEIGHTS"


def trusted_torchscript() -> set[str]:
    """sha256s of the TorchScript archives par loads: OpenAI's releases (data_manifests/weights/clip.json) and those
    a user lists in the JSON file that PAR_TRUSTED_WEIGHTS names ({"weights": {"<sha256>": {...}}}, the same form)."""
    trusted = set(load_json("weights", "clip")["weights"])
    extra = os.environ.get(TRUSTED_WEIGHTS_ENV)
    if extra:
        try:
            trusted |= set(json.loads(Path(extra).read_text())["weights"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ParError(f"{extra} ({TRUSTED_WEIGHTS_ENV}): not a readable JSON file of "
                           f"{{\"weights\": {{\"<sha256>\": {{}}}}}}; fix it or unset {TRUSTED_WEIGHTS_ENV}") from None
    return trusted


def check_trusted_torchscript(path: Path) -> None:
    """Loading a TorchScript archive runs code it carries: only archives known by their sha256 are loaded."""
    sha = file_sha256(path)
    if sha not in trusted_torchscript():
        raise ParError(f"{path}: a TorchScript archive runs its own code when loaded, and this one (sha256 "
                       f"{sha[:12]}...) is not OpenAI's release; give OpenAI's ViT-B-16.pt, or the weights as "
                       f".safetensors or a state dict - or, if you trust this file, list its sha256 in a JSON file "
                       f"named by {TRUSTED_WEIGHTS_ENV}")


def read_weight_file(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, form) from a TorchScript archive, a .safetensors file or a torch-saved state dict."""
    torchscript = is_torchscript(path)
    if torchscript:
        check_trusted_torchscript(path)
    try:
        if torchscript:
            with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export: OpenAI ships jit
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
            for key in ("input_resolution", "context_length", "vocab_size"):
                state.pop(key, None)
            return dict(state), "torchscript"
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path)), "safetensors"
        state, _ = unwrap_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as exc:  # corrupt zip, pickle, safetensors header ...: all mean "not readable weights"
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ParError(f"{path}: cannot read CLIP weights ({first}); give the original file") from None
    if not isinstance(state, dict) or not state:
        raise ParError(f"{path}: holds no state dict; give an open_clip / OpenAI CLIP checkpoint")
    return state, "state-dict"


def _model_config(name: str) -> dict[str, Any]:
    open_clip = _open_clip()

    register_model_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ParError(f"unknown CLIP model '{name}'; use an open_clip name such as ViT-B-16-quickgelu (see "
                       f"open_clip.list_models()) or par-tiny-clip")
    return cfg


def token_geometry(name: str) -> tuple[int, int]:
    """(tokens, dim) of what `ClipEncoder.encode_frames` gives for an open_clip ViT config, without building it."""
    cfg = _model_config(name)
    vision = cfg["vision_cfg"]
    if vision.get("patch_size") is None:
        raise ParError(f"CLIP model '{name}' is not a ViT (no patch tokens); use a ViT such as ViT-B-16-quickgelu")
    size, patch = (v[0] if isinstance(v, (list, tuple)) else v for v in (vision["image_size"], vision["patch_size"]))
    grid = int(size) // int(patch)
    return grid * grid + 1, int(cfg["embed_dim"])


def _needs_quick_gelu(form: str, sha256: str) -> bool | None:
    """What the weights' provenance says about the activation (None: unknown)."""
    known = load_json("weights", "clip")["weights"].get(sha256)
    if known is not None:
        return bool(known["quick_gelu"])
    return True if form == "torchscript" else None  # TorchScript archives are OpenAI's releases


def _check_fits(name: str, cfg: dict[str, Any], model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path,
                form: str, needs_quick_gelu: bool | None) -> None:
    quick = bool(cfg.get("quick_gelu", False))
    if needs_quick_gelu is not None and needs_quick_gelu != quick:
        want = f"{name}-quickgelu" if needs_quick_gelu else name.removesuffix("-quickgelu")
        raise ParError(f"{path}: these weights were trained with {'QuickGELU' if needs_quick_gelu else 'exact GELU'} "
                       f"but {name} uses {'QuickGELU' if quick else 'exact GELU'}, which changes every token; use "
                       f"--clip-model {want}")
    if form == "torchscript":  # OpenAI archives: heads = width / 64 in both towers (shapes cannot show it)
        heads_ok = cfg["vision_cfg"].get("head_width", 64) == 64 and \
            cfg["text_cfg"].get("heads", 8) * 64 == cfg["text_cfg"].get("width", 512)
        if not heads_ok:
            raise ParError(f"{path}: OpenAI CLIP weights use 64-wide attention heads, {name} does not; use the "
                           f"matching open_clip model (e.g. ViT-B-16-quickgelu)")
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    extra = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or extra or wrong:
        k = (wrong or missing or extra)[0]
        got = tuple(state[k].shape) if k in state else "missing"
        need = tuple(ours[k].shape) if k in ours else "absent"
        raise ParError(f"{path}: these weights are not a {name} ({len(missing)} missing, {len(extra)} unexpected, "
                       f"{len(wrong)} mis-shaped tensors; e.g. {k} is {got}, {name} has {need}); give --clip-model "
                       f"the architecture of the weights")


def weights_identity(pretrained: str | None, allow_random_init: bool, seed: int) -> dict[str, Any]:
    """What identifies the CLIP weights of a store: the file's name and sha256, the open_clip tag, or the seed of
    random weights (allowed only with allow_random_init)."""
    if pretrained is None:
        if not allow_random_init:
            raise ParError(
                "no CLIP weights given: pass --pretrained /path/to/ViT-B-16.pt (OpenAI's file), an open_clip "
                "state dict, or --pretrained openai when online; --allow-random-init is for tests and the "
                "demo only"
            )
        return {"kind": "random-init", "seed": seed}
    path = Path(pretrained)
    if path.is_file():
        return {"kind": "file", "name": path.name, "sha256": file_sha256(path)}
    if path.suffix in (".pt", ".bin", ".pth", ".safetensors") or "/" in pretrained:
        raise ParError(f"{pretrained}: CLIP weights file not found; check the path")
    return {"kind": "open_clip-tag", "tag": pretrained}


def load_clip(name: str, pretrained: str | None, allow_random_init: bool, seed: int) -> torch.nn.Module:
    """The frozen CLIP model on the CPU, its weights checked against the architecture and activation."""
    open_clip = _open_clip()

    cfg = _model_config(name)
    identity = weights_identity(pretrained, allow_random_init, seed)
    with torch.random.fork_rng(devices=[]), quiet_root_logger():  # leave the caller's RNG and logging alone
        torch.manual_seed(seed)  # open_clip initialises from the global RNG
        model = open_clip.create_model(name, pretrained=None)
    if identity["kind"] != "random-init":
        path = Path(pretrained) if identity["kind"] == "file" else _download(name, identity["tag"])
        state, form = read_weight_file(path)
        _check_fits(name, cfg, model, state, path, form, _needs_quick_gelu(form, file_sha256(path)))
        model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """Libraries' advice on the root logger, silenced while they run: open_clip warns of every model built without its
    own weights (ours load right after), ONNX Runtime's and NNCF's quantisers advise (par states what it did)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _download(name: str, tag: str) -> Path:
    open_clip = _open_clip()

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = [t for m, t in open_clip.list_pretrained() if m == name.removesuffix("-quickgelu")]
        raise ParError(f"--pretrained {tag}: neither a file nor an open_clip tag of {name} (tags: {tags})")
    if bool(cfg.get("quick_gelu", False)) != bool(_model_config(name).get("quick_gelu", False)):
        raise ParError(f"--pretrained {tag}: open_clip's '{tag}' weights for {name.removesuffix('-quickgelu')} need "
                       f"{'QuickGELU' if cfg.get('quick_gelu') else 'exact GELU'}; use --clip-model "
                       f"{name.removesuffix('-quickgelu') + ('-quickgelu' if cfg.get('quick_gelu') else '')}")
    try:
        return Path(open_clip.download_pretrained(cfg))
    except Exception as exc:  # network failures come in many types
        raise ParError(f"cannot download the '{tag}' weights of {name} ({type(exc).__name__}); download them where "
                       f"you are online and pass the local file with --pretrained") from None


def frame_tokens(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """An open_clip VisionTransformer's CLS + patch tokens after ln_post, times proj: [B, 3, S, S] -> [B, N, D]."""
    out = visual.forward_intermediates(x, indices=1, normalize_intermediates=True, intermediates_only=True,
                                       output_fmt="NLC", output_extra_tokens=True)
    h = torch.cat([out["image_intermediates_prefix"][-1], out["image_intermediates"][-1]], dim=1)
    return h @ visual.proj if visual.proj is not None else h


class ClipEncoder:
    """Frozen open_clip model: `encode_frames` gives CLS + patch tokens after ln_post, times proj."""

    def __init__(self, clip_model: str, pretrained: str | None, allow_random_init: bool, device: str, precision: str,
                 preprocess: Preprocess, weights_seed: int = 0, compile: bool = False):
        open_clip = _open_clip()

        if precision not in PRECISIONS:
            raise ParError(f"CLIP precision must be one of {list(PRECISIONS)}, not '{precision}'")
        self.weights = weights_identity(pretrained, allow_random_init, weights_seed)
        model = load_clip(clip_model, pretrained, allow_random_init, weights_seed)
        self.clip_model, self.precision, self.device = clip_model, precision, torch.device(device)
        self.model = model.to(self.device)
        self.visual = model.visual
        size = self.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else int(size)
        if preprocess.size != size:
            raise ParError(f"--image-size {preprocess.size} does not fit {clip_model}, which takes {size}x{size} "
                           f"images; use --image-size {size}")
        self.preprocess = preprocess
        grid = size // self.visual.patch_size[0]
        self.num_tokens = grid * grid + 1
        proj = self.visual.proj
        self.dim = int(proj.shape[1]) if proj is not None else int(self.visual.ln_post.normalized_shape[0])
        self.tokenizer = open_clip.get_tokenizer(clip_model)
        self._tokens = self._frame_tokens
        if compile:
            self._tokens = compiled_or_eager(self._frame_tokens)

    def _frame_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return frame_tokens(self.visual, x)

    @torch.inference_mode()
    def encode_frames(self, images_uint8: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> [B, N, D] on the device, computed at this encoder's precision (or `precision`) and
        left in the dtype that gives (the store's codec casts on the device)."""
        x = normalize(images_uint8.to(self.device, non_blocking=True), self.preprocess)
        with autocast(self.device, autocast_dtype(precision or self.precision, self.device)):
            return self._tokens(x)

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """A strings -> float32 [A, D]: the projected end-of-text features (not normalised), at this precision."""
        tokens = self.tokenizer(texts).to(self.device)
        with autocast(self.device, autocast_dtype(self.precision, self.device)):
            return self.model.encode_text(tokens).float()


def encoder_for_checkpoint(meta: dict[str, Any], pretrained: str | None, device: str) -> ClipEncoder:
    """Rebuild the exact CLIP the checkpoint's store was made with; other weights are an error."""
    ident = meta["store_identity"]
    weights, ckpt = ident["weights"], meta["_path"]
    kind = weights.get("kind")
    if kind == "random-init":
        source, random_init = None, True
    elif kind == "file":
        if pretrained is None:
            raise ParError(f"{ckpt} was trained on tokens of the CLIP weights {weights['name']}; pass that file with "
                           f"--pretrained")
        if weights_identity(pretrained, False, 0).get("sha256") != weights["sha256"]:
            raise ParError(f"{pretrained}: not the CLIP weights {ckpt} was trained with (sha256 differs from "
                           f"{weights['name']}'s); pass the original file")
        source, random_init = pretrained, False
    elif kind == "open_clip-tag":
        if pretrained is not None and pretrained != weights["tag"]:
            raise ParError(f"--pretrained {pretrained}: {ckpt} was trained with open_clip weights '{weights['tag']}'")
        source, random_init = weights["tag"], False
    else:
        raise ParError(f"{ckpt}: unknown CLIP weights record {weights}")
    return ClipEncoder(ident["clip_model"], source, random_init, device, ident["precision"],
                       Preprocess.from_dict(ident["preprocessing"]), int(weights.get("seed", 0)))
