"""What answers a tracklet's attributes: `AttributeRuntime` turns prepared crops into tokens as the checkpoint's store
holds them, and tokens into probabilities. `TorchRuntime` runs the checkpoint with PyTorch (its CLIP rebuilt from
the store's identity); `OnnxRuntime` runs a `par export` folder with ONNX Runtime or OpenVINO. `par predict` and
`par track` (recorded and live) see only this interface, so every runtime gives the same records."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..data.preprocess import Preprocess
from ..errors import ParError
from ..model.block import ModelConfig
from ..model.checkpoint import load_checkpoint
from ..model.clip import encoder_for_checkpoint
from ..outputs import file_sha256
from ..store.codec import TokenCodec
from . import EXPORT_FILE, EXPORT_FORMAT, EXPORT_VERSION, RUNTIMES, export_folder

INSTALL = {"onnxruntime": "pip install 'par[onnx]'", "openvino": "pip install 'par[openvino]'"}


class AttributeRuntime:
    """Prepared crops -> tokens as stored -> probabilities, for one checkpoint."""

    meta: dict[str, Any]  # the checkpoint's JSON (`_path`: what the user named)
    preprocess: Preprocess
    num_tokens: int
    dim: int
    device: torch.device

    def __init__(self, meta: dict[str, Any]):
        self.meta = meta
        self.codec = TokenCodec(meta["store_identity"]["dtype"])
        self.needs_frames = ModelConfig.from_dict(meta["model_config"], "model_config").needs_frames

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> float32 [B, N, D] on the CPU, rounded to the store's dtype (what it would hold)."""
        return self.codec.round_trip(self.raw_tokens(images)).cpu()

    def raw_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, S, S] -> the encoder's tokens, before rounding to the store's dtype (on its device)."""
        raise NotImplementedError

    def probabilities(self, visual: torch.Tensor) -> np.ndarray:
        """Tokens [B, N, D] (a tracklet's mean) or [B, T, N, D] (a temporal model) -> probabilities [B, A]."""
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """What tracks.json and runs.jsonl say answered (name, version; an export's sha256 and quantization)."""
        raise NotImplementedError


class TorchRuntime(AttributeRuntime):
    def __init__(self, model: torch.nn.Module, enc: Any, meta: dict[str, Any], precision: str | None = None):
        super().__init__(meta)
        self.model, self.enc, self.precision = model, enc, precision
        self.preprocess, self.num_tokens, self.dim, self.device = enc.preprocess, enc.num_tokens, enc.dim, enc.device

    def raw_tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.enc.encode_frames(images, self.precision)

    @torch.no_grad()
    def probabilities(self, visual: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(self.model(visual.to(self.device)).float()).cpu().numpy()

    def record(self) -> dict[str, Any]:
        return {"name": "torch", "version": torch.__version__, "quantization": None}


@dataclass(frozen=True)
class GraphInput:
    """What a graph must take where par runs it: its one input's name (None: any), element type and rank(s), and how
    the user gets a right one."""
    name: str | None
    dtype: str
    ranks: tuple[int, ...]
    what: str = "a par export"
    fix: str = "export again with `par export`"


@dataclass
class Graph:
    run: Callable[[np.ndarray], np.ndarray]  # numpy in, the first output out
    input_shape: list[int | None]  # None: a dynamic axis


def _check_signature(path: Path, signature: list[tuple[str, str, int]], want: GraphInput) -> None:
    """A graph par did not write for this place (another model's, the other graph of the export) is one line, not a
    runtime's shape error on the first crop."""
    if len(signature) != 1 or want.name not in (None, signature[0][0]) or signature[0][1] != want.dtype \
            or signature[0][2] not in want.ranks:
        got = ", ".join(f"{n}: {t} rank {r}" for n, t, r in signature)
        name = f"{want.name}: " if want.name else ""
        raise ParError(f"{path}: takes ({got}), not the {name}{want.dtype} rank {'/'.join(map(str, want.ranks))} of "
                       f"{want.what}; {want.fix}")


def graph_sessions(backend: str, paths: list[Path], wants: list[GraphInput], device: str) -> tuple[list[Graph], str]:
    """Each graph file loaded by `backend` (its input checked) and the backend's version."""
    if backend == "onnxruntime":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ParError(f"ONNX Runtime is not installed: {INSTALL['onnxruntime']}") from None
        providers: list[Any] = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ParError(f"--device {device} with ONNX Runtime needs onnxruntime-gpu (pip install "
                               f"onnxruntime-gpu); this one has {ort.get_available_providers()}")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}))
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not the user's business
        out = []
        for path, want in zip(paths, wants):
            try:
                session = ort.InferenceSession(str(path), options, providers=providers)
            except Exception as exc:  # a foreign or damaged graph: many types
                raise ParError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:120]}); "
                               f"{want.fix}") from None
            inputs = session.get_inputs()
            _check_signature(path, [(i.name, i.type.removeprefix("tensor(").removesuffix(")"), len(i.shape))
                                    for i in inputs], want)
            shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
            out.append(Graph(lambda x, s=session, n=inputs[0].name: s.run(None, {n: x})[0], shape))
        return out, ort.__version__
    try:
        import openvino as ov
    except ImportError:
        raise ParError(f"OpenVINO is not installed: {INSTALL['openvino']}") from None
    if device != "cpu":
        raise ParError(f"OpenVINO runs on the CPU here; use --device cpu (not {device})")
    core, out = ov.Core(), []
    for path, want in zip(paths, wants):
        try:  # f32 asked for: on CPUs with AMX OpenVINO would otherwise compute in bf16, silently
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        except Exception as exc:
            raise ParError(f"{path}: OpenVINO cannot load it ({str(exc).splitlines()[0][:120]}); {want.fix}") from None
        types = [i.get_element_type().get_type_name() for i in compiled.inputs]
        _check_signature(path, [(i.get_any_name(), {"u8": "uint8", "f32": "float"}.get(t, t),
                                 i.get_partial_shape().rank.get_length()) for i, t in zip(compiled.inputs, types)],
                         want)
        shape = [d.get_length() if d.is_static else None for d in compiled.inputs[0].get_partial_shape()]
        out.append(Graph(lambda x, c=compiled: c(x)[0], shape))
    return out, ov.__version__.split("-")[0]


class OnnxRuntime(AttributeRuntime):
    """A `par export` folder's graphs under ONNX Runtime (CPU, or CUDA with onnxruntime-gpu) or OpenVINO (CPU)."""

    def __init__(self, folder: Path, doc: dict[str, Any], backend: str, device: str):
        meta = {**doc["checkpoint"]["meta"], "_path": str(folder)}
        super().__init__(meta)
        self.folder, self.doc, self.backend = folder, doc, backend
        graphs = doc["graphs"]
        checked = (doc.get("agreement") or {}).get("openvino")
        if backend == "openvino" and checked and doc["quantization"] is None and not checked["within_fp32_tolerance"]:
            raise ParError(f"{folder}: OpenVINO {checked['runtime_version']} disagreed with PyTorch when it was "
                           f"exported (probabilities up to {checked['probability_max_difference']:.2e} apart); run "
                           f"it with --runtime onnxruntime")
        frames_axis = (4,) if doc["needs_frames"] else (3,)
        (encoder, fusion), self.version = graph_sessions(
            backend, [folder / graphs["encoder"]["file"], folder / graphs["fusion"]["file"]],
            [GraphInput("images", "uint8", (4,)), GraphInput("tokens", "float", frames_axis)], device)
        self._encoder, self._fusion = encoder.run, fusion.run
        self.preprocess = Preprocess.from_dict(meta["store_identity"]["preprocessing"])
        self.num_tokens, self.dim = int(doc["tokens"][0]), int(doc["tokens"][1])
        self.device = torch.device("cpu")  # crops are handed over as numpy arrays

    def raw_tokens(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self._encoder(np.ascontiguousarray(images.cpu().numpy()))))

    def probabilities(self, visual: torch.Tensor) -> np.ndarray:
        return np.asarray(self._fusion(np.ascontiguousarray(visual.float().cpu().numpy())), dtype=np.float32)

    def record(self) -> dict[str, Any]:
        return {"name": self.backend, "version": self.version, "export": str(self.folder),
                "export_sha256": file_sha256(self.folder / EXPORT_FILE), "quantization": self.doc["quantization"],
                "agreement": self.doc["agreement"]}


def read_export(folder: Path) -> dict[str, Any]:
    """export.json, with every graph file verified against the sha256 it records."""
    path = folder / EXPORT_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ParError(f"{path}: not readable JSON; export again with `par export`") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        raise ParError(f"{path}: not a par export; make one with `par export RUN --out {folder}`")
    if doc.get("version") != EXPORT_VERSION:
        raise ParError(f"{path}: export version {doc.get('version')} is not supported (this par reads "
                       f"{EXPORT_VERSION}); export again with this par")
    for graph in doc["graphs"].values():
        for entry in (graph, graph.get("weights")):
            if entry is None:
                continue
            file = folder / entry["file"]
            if not file.is_file():
                raise ParError(f"{file}: missing from the export; export again with `par export`")
            if file_sha256(file) != entry["sha256"]:
                raise ParError(f"{file}: does not match the sha256 {EXPORT_FILE} records; the export is damaged or "
                               f"was changed - export again with `par export`")
    return doc


def _only_openvino(doc: dict[str, Any]) -> bool:
    """An encoder in OpenVINO's own format (--quantize int8-openvino) runs only there."""
    return doc["graphs"]["encoder"].get("format") == "openvino-ir"


def load_runtime(checkpoint: str | os.PathLike, runtime: str, pretrained: str | None, device: str
                 ) -> AttributeRuntime:
    """The runtime for a checkpoint (torch) or an export folder (onnxruntime, openvino); `auto` picks by which."""
    if runtime not in RUNTIMES:
        raise ParError(f"--runtime must be one of {', '.join(RUNTIMES)}, not '{runtime}'")
    folder = export_folder(checkpoint)
    if folder is None:
        if runtime not in ("auto", "torch"):
            raise ParError(f"{checkpoint}: is a checkpoint; --runtime {runtime} runs an export of it: `par export "
                           f"{checkpoint} --out EXPORT`, then give EXPORT instead")
        model, meta = load_checkpoint(checkpoint, device)
        return TorchRuntime(model, encoder_for_checkpoint(meta, pretrained, device), meta)
    doc = read_export(folder)
    if runtime == "torch":
        raise ParError(f"{folder}: is a par export (ONNX graphs); --runtime torch runs the checkpoint it was exported "
                       f"from ({doc['checkpoint']['path']})")
    if runtime == "auto":
        runtime = "openvino" if _only_openvino(doc) else "onnxruntime"
    if runtime == "onnxruntime" and _only_openvino(doc):
        raise ParError(f"{folder}: its encoder is OpenVINO's int8 (--quantize int8-openvino), which ONNX Runtime "
                       f"cannot run; use --runtime openvino, or export with --quantize int8 for ONNX Runtime")
    return OnnxRuntime(folder, doc, runtime, device)
