"""`par bench --part deploy`: the runtimes of a `par export` side by side in one run on this machine's CPU.

CLIP's image tower (--clip-model, random weights: speed does not depend on them) as PyTorch runs it (fp32, and bf16
autocast for reference), and as its exported graph runs under ONNX Runtime (fp32, dynamic int8) and OpenVINO (fp32,
the dynamic int8 graph, NNCF's static int8); the fusion model (--fusion-model) under each. Rates are crops (or
tracklets) per second over whole batches after a warm-up; each exported encoder's tokens are compared with PyTorch
fp32 on the same crops."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import BenchConfig
from ..data.preprocess import Preprocess
from ..deploy.graphs import EncoderGraph, FusionGraph, write_graph
from ..deploy.runtime import GraphInput, graph_sessions
from ..imports import is_installed
from ..model.block import load_model_config
from ..model.clip import ClipEncoder, token_geometry
from ..model.fusion import VTFPAR
from ..workflows.export import QUANTIZED_OPS, min_token_cosine, quantize_int8, quantize_int8_openvino

Log = Callable[[str], None]


def _rate(run: Callable[[], Any], items: int, seconds: float) -> float:
    """Items per second of `run` (one batch of `items`), after one warm-up call: whole batches for `seconds` (and at
    least 3)."""
    run()
    done, t = 0, time.perf_counter()
    while done < 3 or time.perf_counter() - t < seconds:
        run()
        done += 1
    return done * items / (time.perf_counter() - t)


def bench_deploy(work: Path, sizes: BenchConfig, log: Log) -> dict[str, Any]:
    folder = work / "deploy"
    folder.mkdir(parents=True, exist_ok=True)
    N, D = token_geometry(sizes.clip_model)
    enc = ClipEncoder(sizes.clip_model, None, True, "cpu", "fp32", Preprocess())  # 224 x 224, as the recipe's
    size = enc.preprocess.size
    batch = sizes.batch_size
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, 3, size, size), dtype=np.uint8))
    log(f"deploy: exporting {sizes.clip_model}")
    write_graph(EncoderGraph(enc.visual, enc.preprocess), images[:2], folder / "encoder.onnx", "images", "tokens")
    quantize_int8(folder / "encoder.onnx", folder / "encoder.int8.onnx")
    if is_installed("openvino") and is_installed("nncf"):
        log("deploy: quantising for OpenVINO (NNCF, calibrated on 16 crops)")
        quantize_int8_openvino(folder / "encoder.onnx", folder / "encoder.int8.xml",
                               images.repeat((16 + batch - 1) // batch, 1, 1, 1)[:16])
    reference = enc.encode_frames(images).float()
    seconds = sizes.deploy_seconds
    crops: dict[str, dict[str, Any]] = {}
    crops["torch fp32"] = {"crops_per_s": _rate(lambda: enc.encode_frames(images), batch, seconds),
                           "token_min_cosine": 1.0}
    bf16 = enc.encode_frames(images, "bf16").float()
    crops["torch bf16 autocast"] = {"crops_per_s": _rate(lambda: enc.encode_frames(images, "bf16"), batch, seconds),
                                    "token_min_cosine": min_token_cosine(bf16, reference)}
    x = images.numpy()
    for backend in ("onnxruntime", "openvino"):
        if not is_installed(backend):
            log(f"deploy: {backend} is not installed; its rows are left out")
            continue
        files = [("fp32", "encoder.onnx"), ("int8", "encoder.int8.onnx")]
        if backend == "openvino" and (folder / "encoder.int8.xml").is_file():
            files.append(("int8 nncf static", "encoder.int8.xml"))
        for precision, file in files:
            [graph], version = graph_sessions(backend, [folder / file], [GraphInput("images", "uint8", (4,))], "cpu")
            run = graph.run
            crops[f"{backend} {precision}"] = {"crops_per_s": _rate(lambda: run(x), batch, seconds),
                                               "version": version, "token_min_cosine": min_token_cosine(
                                                   torch.from_numpy(run(x)), reference)}
            log(f"deploy: {backend} {precision}: {crops[f'{backend} {precision}']['crops_per_s']:,.1f} crops/s")
    base = crops["torch fp32"]["crops_per_s"]
    for row in crops.values():
        row["over_torch_fp32"] = row["crops_per_s"] / base

    mcfg = load_model_config(sizes.fusion_model, fusion=True, text_tokens=True, drop_path=0.0, temporal="mean",
                             input_dim=D, num_attributes=43)
    torch.manual_seed(0)
    model = VTFPAR(mcfg, torch.randn(43, D)).eval()
    tokens = torch.randn(sizes.train_batch, N, D)
    write_graph(FusionGraph(model), tokens[:2], folder / "fusion.onnx", "tokens", "probabilities")
    with torch.no_grad():
        fusion: dict[str, dict[str, Any]] = {"torch fp32": {"tracklets_per_s": _rate(lambda: model(tokens),
                                                                                      len(tokens), seconds)}}
    t = tokens.numpy()
    for backend in ("onnxruntime", "openvino"):
        if is_installed(backend):
            [graph], _ = graph_sessions(backend, [folder / "fusion.onnx"], [GraphInput("tokens", "float", (3,))], "cpu")
            run = graph.run
            fusion[backend] = {"tracklets_per_s": _rate(lambda: run(t), len(t), seconds)}
    for row in fusion.values():
        row["over_torch"] = row["tracklets_per_s"] / fusion["torch fp32"]["tracklets_per_s"]
    return {"clip_model": sizes.clip_model, "batch_size": batch, "threads": torch.get_num_threads(),
            "crops": crops, "int8_ops": QUANTIZED_OPS, "fusion_model": sizes.fusion_model,
            "fusion_batch": sizes.train_batch, "fusion": fusion,
            "detectors": {spec: _detector_rate(spec, seconds, log) for spec in sizes.deploy_detectors}}


def _detector_rate(spec: str, seconds: float, log: Log) -> dict[str, Any]:
    """Frames per second of a person detector on one 640 x 360 frame at a time (a camera's frames, as they come)."""
    from ..config import TrackConfig
    from ..footage.detect import make_detector

    detector = make_detector(TrackConfig(detector=spec, allow_random_detector=True))
    frame = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    rate = _rate(lambda: detector.detect(0, frame), 1, seconds)
    log(f"deploy: detector {spec}: {rate:,.2f} frames/s")
    record = detector.record()
    return {"frames_per_s": rate, "kind": record["kind"], **({"input": record["input"]} if "input" in record else {})}


def deploy_rows(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = [(f"CLIP image tower {d['clip_model']}, batch {d['batch_size']}: {name}",
             f"{r['crops_per_s']:,.1f} crops/s ({r['over_torch_fp32']:.2f}x; token cosine >= "
             f"{r['token_min_cosine']:.4f})", ">= 3x (int8)" if "int8" in name else "")
            for name, r in d["crops"].items()]
    rows += [(f"fusion model {d['fusion_model']}, batch {d['fusion_batch']}: {name}",
              f"{r['tracklets_per_s']:,.1f} tracklets/s ({r['over_torch']:.2f}x)", "")
             for name, r in d["fusion"].items()]
    rows += [(f"person detector {r['kind']}" + (f" ({r['input'][0]} x {r['input'][1]} input)" if "input" in r else "")
              + ", 640 x 360 frames", f"{r['frames_per_s']:,.2f} frames/s", ">= 10 (one 10 fps camera)")
             for r in d.get("detectors", {}).values()]
    return rows
