"""`par export RUN --out DIR`: the checkpoint's CLIP image encoder and fusion model as ONNX graphs, with export.json.

The export checks itself before anything is written: tracklets of a manifest (by default the one the checkpoint's
store was extracted from, its test split) go through `par predict`'s path with the checkpoint in PyTorch (fp32) and
with the graphs under each installed runtime (ONNX Runtime, OpenVINO). An fp32 export whose tokens or probabilities
stray beyond FP32_TOLERANCE is refused; an int8 one (`--quantize int8`, `int8-openvino`) is written with its
agreement stated (export.json, the console, and every tracks.json made with it), never silently.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..config import ExportConfig
from ..data.manifest import read_manifest
from ..data.preprocess import load_frame
from ..data.schema import AttributeSchema, schema_from_dict
from ..deploy import EXPORT_FILE, EXPORT_FORMAT, EXPORT_VERSION
from ..deploy.graphs import OPSET, EncoderGraph, FusionGraph, import_onnx_export, write_graph
from ..deploy.runtime import OnnxRuntime, TorchRuntime
from ..engine.metrics import evaluate_predictions, is_positive
from ..errors import ParError
from ..imports import is_installed
from ..model.checkpoint import load_checkpoint
from ..model.clip import encoder_for_checkpoint, quiet_root_logger
from ..outputs import check_dir_target, file_sha256, replace_dir
from ..run import resolve_checkpoint
from ..store.reader import TokenStore
from .predict import TrackletInput, tracklet_probabilities

EXPORT_KIND = "export"
# An fp32 graph is the same arithmetic in another order: beyond these it is a wrong graph, not rounding.
FP32_TOLERANCE = {"token_min_cosine": 0.9999, "probability_max_difference": 1e-4}
QUANTIZED_OPS = ["MatMul", "Gemm"]  # the Linear layers; LayerNorm, GELU, Softmax and the residual adds stay float
Progress = Callable[[str], None]


def check_tracklets(meta: dict[str, Any], cfg: ExportConfig) -> tuple[list[TrackletInput], np.ndarray, str]:
    """The tracklets the export is checked on (their frames, labels) and the manifest they come from."""
    path = cfg.check_manifest
    if path is None:
        store = meta.get("store_path")
        try:
            path = TokenStore(store).attrs.get("manifest_path") if store else None
        except ParError:
            path = None
        if not path or not Path(path).is_file():
            raise ParError(f"{meta['_path']}: the manifest its store {store} was extracted from is not here to check "
                           f"the export on; give --check-manifest MANIFEST (frames of the same people and labels)")
    manifest = read_manifest(path)
    if manifest.schema.attributes != meta["attributes"]:
        raise ParError(f"{path}: its attributes are not the checkpoint's; give the manifest of the checkpoint's "
                       f"schema ({len(meta['attributes'])} attributes)")
    records = manifest.split("test") or manifest.records
    records = records[:cfg.check_tracklets] if cfg.check_tracklets else records
    inputs = [TrackletInput(r.tracklet, frames=[manifest.resolve(f) for f in r.frames]) for r in records]
    missing = next((f for t in inputs for f in (t.frames or []) if not f.is_file()), None)
    if missing is not None:
        raise ParError(f"{missing}: a frame of the check manifest {path} is missing; give --check-manifest a manifest "
                       f"whose frames are here")
    return inputs, np.array([r.labels for r in records], dtype=np.uint8), str(path)


def _sample_images(inputs: list[TrackletInput], rt: TorchRuntime, count: int) -> torch.Tensor:
    """Up to `count` prepared frames taken across the tracklets (each one's first frame, then each one's second...):
    the token check at batch 1 and N, and the calibration crops of a static int8 encoder."""
    longest = max(len(t.frames or []) for t in inputs)
    paths = [t.frames[k] for k in range(longest) for t in inputs if t.frames and k < len(t.frames)][:count]
    arrays = []
    for p in paths:
        image, reason = load_frame(p, rt.preprocess)
        if image is None:  # as `par predict` says it of a frame it cannot read
            raise ParError(f"{p}: {reason}; remove or replace the frame")
        arrays.append(image)
    return torch.from_numpy(np.stack(arrays))


def min_token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest cosine between corresponding tokens of two [..., D] tensors."""
    a, b = a.reshape(-1, a.shape[-1]).double(), b.reshape(-1, b.shape[-1]).double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).min())


def agreement(ref: TorchRuntime, runtimes: list[OnnxRuntime], inputs: list[TrackletInput], labels: np.ndarray,
              schema: AttributeSchema, threshold: float, frames: int, batch_size: int) -> list[dict[str, Any]]:
    """Each runtime of the export against PyTorch: tokens of the same frames (batch 1 and N), the fusion graph on
    the same tokens (batch 1 and N), and end to end on the check tracklets (`par predict`'s path, `frames` evenly
    spaced): the largest probability difference, decisions that differ, and both F1 (the paper's protocol)."""
    images = _sample_images(inputs, ref, 8)
    ours = ref.raw_tokens(images).float()
    visual = ours.unsqueeze(1).expand(-1, frames, -1, -1) if ref.needs_frames else ours
    p_ref, counts = tracklet_probabilities(ref, inputs, frames, batch_size, 0)
    boundaries, names = schema.boundaries, schema.group_names
    f1_ref = evaluate_predictions(p_ref, labels, boundaries, names, threshold)["protocol"]["mean"]
    fused_ref, fused_ref_one = ref.probabilities(visual), ref.probabilities(visual[:1])
    found = []
    for rt in runtimes:
        fusion_diff = max(float(np.abs(rt.probabilities(visual) - fused_ref).max()),
                          float(np.abs(rt.probabilities(visual[:1]) - fused_ref_one).max()))
        p_exp, _ = tracklet_probabilities(rt, inputs, frames, batch_size, 0)
        f1_exp = evaluate_predictions(p_exp, labels, boundaries, names, threshold)["protocol"]["mean"]
        out = {"runtime": rt.backend, "runtime_version": rt.version, "tracklets": len(inputs),
               "frames": int(sum(counts)), "batch_sizes": [1, int(len(images))],
               "token_min_cosine": min(min_token_cosine(ours, rt.raw_tokens(images)),
                                       min_token_cosine(ours[:1], rt.raw_tokens(images[:1]))),
               "fusion_max_difference": fusion_diff, "probability_max_difference": float(np.abs(p_exp - p_ref).max()),
               "decisions_differing": int((is_positive(p_exp, threshold) != is_positive(p_ref, threshold)).sum()),
               "decisions": int(p_ref.size), "f1_torch": float(f1_ref["f1"]), "f1_export": float(f1_exp["f1"]),
               "mA_torch": float(f1_ref["mA"]), "mA_export": float(f1_exp["mA"])}
        out["within_fp32_tolerance"] = bool(
            out["token_min_cosine"] >= FP32_TOLERANCE["token_min_cosine"]
            and max(out["probability_max_difference"], fusion_diff) <= FP32_TOLERANCE["probability_max_difference"])
        found.append(out)
    return found


def quantize_int8(src: Path, dst: Path) -> dict[str, Any]:
    """Dynamic int8 (ONNX Runtime): int8 weights of the matrix products, activations quantised per batch; an ONNX
    file both runtimes read."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_root_logger():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=QUANTIZED_OPS)
    return {"precision": "int8", "graph": "encoder", "method": "onnxruntime dynamic quantization",
            "weights": "int8, per tensor", "activations": "uint8, scaled per batch", "ops": QUANTIZED_OPS}


def quantize_int8_openvino(src: Path, dst: Path, calibration: torch.Tensor) -> dict[str, Any]:
    """Static int8 (OpenVINO's NNCF, its transformer preset) calibrated on the user's own crops: OpenVINO IR (dst
    .xml with its .bin), for --runtime openvino; int8 matrix products on CPUs with VNNI / AMX."""
    samples = [x[None].numpy() for x in calibration]
    with quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):  # NNCF draws its own progress bars
        for name in ("nncf", "torch.utils.cpp_extension"):  # NNCF's import looks for CUDA, and says so
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            import nncf
            import openvino as ov
        except ImportError as exc:
            raise ParError(f"--quantize int8-openvino needs {exc.name}: pip install 'par[openvino]'") from None
        model = nncf.quantize(ov.Core().read_model(str(src)), nncf.Dataset(samples),
                              model_type=nncf.ModelType.TRANSFORMER, subset_size=len(samples))
        ov.save_model(model, str(dst), compress_to_fp16=False)
    return {"precision": "int8", "graph": "encoder", "method": f"openvino nncf {nncf.__version__} static quantization "
            "(transformer preset)", "weights": "int8, per channel", "activations": "int8, calibrated",
            "calibration_frames": len(samples), "format": "openvino-ir"}


def _graph(folder: Path, name: str, input_name: str, input_shape: str, output_name: str, output_shape: str
           ) -> dict[str, Any]:
    graph = {"file": name, "sha256": file_sha256(folder / name), "input": input_name, "input_shape": input_shape,
             "output": output_name, "output_shape": output_shape, "format": "onnx"}
    if name.endswith(".xml"):  # OpenVINO IR: the graph, and its weights beside it
        weights = Path(name).with_suffix(".bin").name
        graph.update(format="openvino-ir", weights={"file": weights, "sha256": file_sha256(folder / weights)})
    return graph


def export_checkpoint(cfg: ExportConfig, log: Progress = lambda _: None) -> dict[str, Any]:
    """Write the export folder `cfg.out` (nothing, when the check fails); returns export.json."""
    out = Path(cfg.out)
    check_dir_target(out, EXPORT_KIND)
    import_onnx_export()
    meta_path = resolve_checkpoint(cfg.checkpoint)
    model, meta = load_checkpoint(meta_path, "cpu")
    enc = encoder_for_checkpoint(meta, cfg.pretrained, "cpu")
    inputs, labels, manifest = check_tracklets(meta, cfg)
    schema = schema_from_dict(meta["schema_definition"])
    ref = TorchRuntime(model, enc, meta, precision="fp32")
    N, D, T, A = enc.num_tokens, enc.dim, int(meta["eval_frames"]), len(meta["attributes"])
    S = enc.preprocess.size
    checkpoint = {k: v for k, v in meta.items() if k != "_path"}
    doc: dict[str, Any] = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "par_version": __version__,
        "torch_version": torch.__version__, "opset": OPSET,
        "checkpoint": {"path": str(meta_path.resolve()),
                       "json_sha256": hashlib.sha256(meta_path.read_bytes()).hexdigest(),
                       "weights_sha256": meta["weights_sha256"], "meta": checkpoint},
        "clip_model": meta["store_identity"]["clip_model"], "clip_weights": meta["store_identity"]["weights"],
        "preprocessing": meta["store_identity"]["preprocessing"], "token_dtype": meta["store_identity"]["dtype"],
        "tokens": [N, D], "frames": T, "needs_frames": ref.needs_frames, "attributes": meta["attributes"],
        "groups": schema.group_names, "threshold": meta["threshold"], "quantization": None}
    visual_shape = f"float32 [B, {T}, {N}, {D}]" if ref.needs_frames else f"float32 [B, {N}, {D}] (mean over frames)"

    def build(folder: Path) -> None:
        log("exporting the CLIP image encoder")
        images = _sample_images(inputs, ref, 2)
        write_graph(EncoderGraph(enc.visual, enc.preprocess), images, folder / "encoder.onnx", "images", "tokens")
        log("exporting the fusion model")
        example = torch.zeros((2, T, N, D) if ref.needs_frames else (2, N, D))
        write_graph(FusionGraph(model), example, folder / "fusion.onnx", "tokens", "probabilities")
        encoder_file = "encoder.onnx"
        if cfg.quantize == "int8":
            log("quantising the encoder to int8 (dynamic)")
            doc["quantization"] = quantize_int8(folder / encoder_file, folder / "encoder.int8.onnx")
            encoder_file = "encoder.int8.onnx"
        elif cfg.quantize == "int8-openvino":
            log(f"quantising the encoder to int8 (static, calibrated on {cfg.calibration_frames} crops)")
            doc["quantization"] = quantize_int8_openvino(folder / encoder_file, folder / "encoder.int8.xml",
                                                         _sample_images(inputs, ref, cfg.calibration_frames))
            encoder_file = "encoder.int8.xml"
        if encoder_file != "encoder.onnx":
            (folder / "encoder.onnx").unlink()
        doc["graphs"] = {
            "encoder": _graph(folder, encoder_file, "images", f"uint8 [B, 3, {S}, {S}] (prepared, not normalised)",
                              "tokens", f"float32 [B, {N}, {D}] (CLS + patches after ln_post, times proj)"),
            "fusion": _graph(folder, "fusion.onnx", "tokens", visual_shape, "probabilities", f"float32 [B, {A}]")}
        log(f"checking the graphs against PyTorch on {len(inputs)} tracklet(s) of {manifest}")
        runtimes = [] if cfg.quantize == "int8-openvino" else [OnnxRuntime(folder, doc, "onnxruntime", "cpu")]
        if is_installed("openvino"):  # checked where it is installed: --runtime openvino refuses an export it failed
            runtimes.append(OnnxRuntime(folder, doc, "openvino", "cpu"))
        found, *others = agreement(ref, runtimes, inputs, labels, schema, meta["threshold"], T, cfg.batch_size)
        doc["agreement"] = {"manifest": manifest, **found, "tolerance": None if doc["quantization"] else FP32_TOLERANCE,
                            "openvino": others[0] if others else found if found["runtime"] == "openvino" else None}
        if doc["quantization"] is None and not found["within_fp32_tolerance"]:
            raise ParError(f"{out}: the exported graphs disagree with PyTorch (token cosine "
                           f"{found['token_min_cosine']:.6f}, probabilities up to "
                           f"{max(found['probability_max_difference'], found['fusion_max_difference']):.2e} apart; "
                           f"tolerance {FP32_TOLERANCE}); nothing written - report it with the checkpoint's "
                           f"model_config and torch {torch.__version__}")
        (folder / EXPORT_FILE).write_text(json.dumps(doc, indent=2) + "\n")

    replace_dir(out, EXPORT_KIND, build)
    return doc
