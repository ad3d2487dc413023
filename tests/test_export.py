"""`par export` and the runtimes that run an export (par_pipeline/deploy): the graphs agree with PyTorch, an int8
export says what it is wherever it answers, and bad exports are one line."""
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import ROOT, model_config, one_error_line, run_par
from par_pipeline.config import PredictConfig
from par_pipeline.data.manifest import read_manifest
from par_pipeline.outputs import file_sha256
from par_pipeline.workflows.predict import TrackletInput, predict


@pytest.fixture(scope="module")
def exported(run_path, tmp_path_factory):
    """The tiny run exported in fp32 and int8 (ONNX Runtime's dynamic), each checked on 8 test tracklets of its
    store's manifest (OpenVINO's int8: test_readme.TestExport, the README's block)."""
    base = tmp_path_factory.mktemp("export")
    said = [run_par("export", run_path, "--out", base / name, "--check-tracklets", 8, *extra).stdout
            for name, extra in (("fp32", []), ("int8", ["--quantize", "int8"]))]
    return base, said


def test_an_export_records_what_it_holds_and_how_far_it_agrees(exported, run_path):
    base, said = exported
    best = json.loads((run_path / "best.json").read_text())
    for name in ("fp32", "int8"):
        doc = json.loads((base / name / "export.json").read_text())
        assert doc["format"] == "par-export" and doc["version"] == 1
        assert doc["checkpoint"]["weights_sha256"] == best["weights_sha256"]
        assert doc["attributes"] == best["attributes"] and doc["frames"] == best["eval_frames"]
        for graph in doc["graphs"].values():
            assert file_sha256(base / name / graph["file"]) == graph["sha256"]
        a = doc["agreement"]
        assert a["tracklets"] == 8 and a["batch_sizes"][0] == 1 and a["batch_sizes"][1] > 1
        assert a["decisions"] == 8 * len(best["attributes"])
    fp32 = json.loads((base / "fp32" / "export.json").read_text())
    assert fp32["quantization"] is None and fp32["agreement"]["within_fp32_tolerance"]
    assert fp32["agreement"]["runtime"] == "onnxruntime" and fp32["agreement"]["openvino"]["within_fp32_tolerance"]
    assert fp32["agreement"]["token_min_cosine"] >= 0.9999 and fp32["agreement"]["probability_max_difference"] < 1e-4
    int8 = json.loads((base / "int8" / "export.json").read_text())
    assert int8["quantization"]["precision"] == "int8" and int8["agreement"]["tolerance"] is None
    assert sorted(p.name for p in (base / "int8").iterdir() if not p.name.startswith(".")) == \
        ["encoder.int8.onnx", "export.json", "fusion.onnx"]
    assert 0.99 < int8["agreement"]["token_min_cosine"] < 1.0
    assert "token min cosine" in said[1] and "int8" in said[1]


def test_predict_gives_the_checkpoints_probabilities_under_every_runtime(exported, run_path, manifest_path):
    base, _ = exported
    m = read_manifest(manifest_path)
    items = [TrackletInput(r.tracklet, frames=[m.resolve(f) for f in r.frames]) for r in m.split("test")[:4]]

    def probs(checkpoint, runtime):
        records, rt = predict(items, PredictConfig(checkpoint=str(checkpoint), runtime=runtime, frames=3, workers=0))
        return np.array([list(r["probabilities"].values()) for r in records]), rt

    torch_probs, rt = probs(run_path, "auto")
    assert rt["name"] == "torch"
    for runtime in ("onnxruntime", "openvino"):
        p, rt = probs(base / "fp32", runtime)
        assert rt["name"] == runtime and rt["quantization"] is None
        assert np.abs(p - torch_probs).max() < 1e-4, runtime
    p, rt = probs(base / "int8", "auto")
    assert rt["name"] == "onnxruntime" and rt["quantization"]["precision"] == "int8"
    assert 0 < np.abs(p - torch_probs).max() < 0.05


def test_track_with_an_export_answers_as_the_checkpoint(exported, scene, tracked, tmp_path):
    base, _ = exported
    ours = json.loads((tracked / "out" / "tracks.json").read_text())
    assert ours["runtime"]["name"] == "torch"
    for name in ("fp32",):  # the README's block tracks with an int8 export (test_readme.TestExport)
        said = run_par("track", scene / "video.mp4", "--checkpoint", base / name, "--out", tmp_path / name,
                       "--detections", scene / "gt" / "gt.txt").stdout
        doc = json.loads((tmp_path / name / "tracks.json").read_text())
        assert doc["runtime"]["name"] == "onnxruntime"
        assert doc["runtime"]["export_sha256"] == file_sha256(base / name / "export.json")
        assert doc["checkpoint_sha256"] == ours["checkpoint_sha256"]  # par link may join them
        assert [t["frames_used"] for t in doc["tracks"]] == [t["frames_used"] for t in ours["tracks"]]
        diff = max(abs(a - b) for t, u in zip(doc["tracks"], ours["tracks"])
                   for a, b in zip(t["probabilities"].values(), u["probabilities"].values()))
        assert diff < 1e-4
        assert "runtime onnxruntime" in said


def test_a_temporal_models_graph_takes_any_batch(tmp_path):
    """A temporal model's fusion graph reads [B, T, N, D]: exported at batch 2, run at batch 1 and 5."""
    import onnxruntime as ort

    from par_pipeline.deploy.graphs import FusionGraph, write_graph
    from par_pipeline.model.fusion import VTFPAR

    torch.manual_seed(0)
    conf = json.loads((ROOT / "data_manifests" / "models" / "temporal" / "transformer.json").read_text())
    cfg = model_config(temporal="transformer", temporal_config=conf)
    model = VTFPAR(cfg, torch.randn(cfg.num_attributes, cfg.input_dim)).eval()
    graph = FusionGraph(model)
    write_graph(graph, torch.randn(2, 4, 17, cfg.input_dim), tmp_path / "fusion.onnx", "tokens", "probabilities")
    session = ort.InferenceSession(str(tmp_path / "fusion.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, 4, 17, cfg.input_dim)
        with torch.no_grad():
            want = graph(x).numpy()
        assert np.abs(session.run(None, {"tokens": x.numpy()})[0] - want).max() < 1e-5


def _copy(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".par-output.json"))
    return dst


def test_bad_exports_and_misplaced_ones_are_one_line(exported, run_path, manifest_path, tmp_path):
    base, _ = exported
    item = read_manifest(manifest_path).split("test")[0]
    folder = str(read_manifest(manifest_path).resolve(item.frames[0]).parent)

    def error(*args):
        return one_error_line(run_par(*args, check=False))

    cut = _copy(base / "fp32", tmp_path / "cut")
    data = (cut / "encoder.onnx").read_bytes()
    (cut / "encoder.onnx").write_bytes(data[:len(data) // 2])
    assert "encoder.onnx: does not match the sha256 export.json records" in error("predict", folder, "--checkpoint",
                                                                                   cut)
    swapped = _copy(base / "fp32", tmp_path / "swapped")  # a graph that is not the one its place needs
    (swapped / "encoder.onnx").write_bytes((base / "fp32" / "fusion.onnx").read_bytes())
    doc = json.loads((swapped / "export.json").read_text())
    doc["graphs"]["encoder"]["sha256"] = file_sha256(swapped / "encoder.onnx")
    (swapped / "export.json").write_text(json.dumps(doc))
    for runtime in ("onnxruntime", "openvino"):
        assert "takes (tokens: float rank 3), not the images: uint8 rank 4" in error(
            "predict", folder, "--checkpoint", swapped, "--runtime", runtime)
    failed = _copy(base / "fp32", tmp_path / "failed")  # what OpenVINO got wrong at export, it is not asked again
    doc = json.loads((failed / "export.json").read_text())
    doc["agreement"]["openvino"]["within_fp32_tolerance"] = False
    (failed / "export.json").write_text(json.dumps(doc))
    assert "disagreed with PyTorch when it was exported" in error("predict", folder, "--checkpoint", failed,
                                                                  "--runtime", "openvino")
    (swapped / "export.json").write_text(json.dumps({**doc, "format": "something"}))
    assert "not a par export" in error("predict", folder, "--checkpoint", swapped)
    assert "--runtime torch runs the checkpoint it was exported from" in error(
        "predict", folder, "--checkpoint", base / "fp32", "--runtime", "torch")
    assert "is a checkpoint; --runtime onnxruntime runs an export of it" in error(
        "predict", folder, "--checkpoint", run_path, "--runtime", "onnxruntime")
    assert "is a `par export` folder" in error("eval", "x.zarr", "--checkpoint", base / "fp32")

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert "is not a par export output" in error("export", run_path, "--out", mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert "manifest not found" in error("export", run_path, "--out", tmp_path / "e1", "--check-manifest",
                                         tmp_path / "none.jsonl")
    moved = _copy(run_path, tmp_path / "moved-run")
    meta = json.loads((moved / "best.json").read_text())
    (moved / "best.json").write_text(json.dumps({**meta, "store_path": str(tmp_path / "gone.zarr")}))
    assert "give --check-manifest MANIFEST" in error("export", moved, "--out", tmp_path / "e2")
    m = read_manifest(manifest_path)  # check frames cut short: the first is named, as par predict names it
    header, *lines = (manifest_path).read_text().splitlines()
    record = json.loads(next(line for line in lines if json.loads(line)["split"] == "test"))
    for f in record["frames"]:
        (tmp_path / "root" / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "root" / f).write_bytes(m.resolve(f).read_bytes()[:200])
    (tmp_path / "bad.jsonl").write_text(json.dumps({**json.loads(header), "root": str(tmp_path / "root")}) + "\n"
                                        + json.dumps(record) + "\n")
    message = error("export", run_path, "--out", tmp_path / "e3", "--check-manifest", tmp_path / "bad.jsonl")
    assert "F001.jpg: corrupt or truncated image" in message and message.endswith("remove or replace the frame")
    assert not any((tmp_path / name).exists() for name in ("e1", "e2", "e3"))


def test_an_export_that_disagrees_with_pytorch_is_refused(run_path, tmp_path, monkeypatch):
    """Graphs outside the fp32 tolerance are never written (here: a tolerance nothing can meet)."""
    from par_pipeline.workflows import export

    monkeypatch.setitem(export.FP32_TOLERANCE, "token_min_cosine", 1.5)
    message = one_error_line(run_par("export", run_path, "--out", tmp_path / "e", "--check-tracklets", 2,
                                     check=False))
    assert "the exported graphs disagree with PyTorch" in message and "nothing written" in message
    assert list(tmp_path.iterdir()) == []
