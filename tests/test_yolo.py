"""Person detectors from files (`--detector onnx:FILE`, `openvino:FILE`, par_pipeline/footage/yolo.py), held to
Ultralytics' own predictor on the same exported models (tests/yolo_reference.py, its own process)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, one_error_line, par_env, run_par, shared_once
from par_pipeline.data.video import FrameSource
from par_pipeline.footage.yolo import YoloDetector

CONF, IOU = 0.3, 0.7


def _frames(scene) -> np.ndarray:
    """Three frames of the scene scaled to 400 x 225: letterboxing into 192 x 320 resizes and pads them."""
    import cv2

    frames = [f for k, f in FrameSource(scene / "video.mp4") if k in (5, 30, 60)]
    return np.stack([cv2.resize(f, (400, 225), interpolation=cv2.INTER_AREA) for f in frames])


@pytest.fixture(scope="module")
def yolo(scene, tmp_path_factory):
    """The two exported detectors, the frames and Ultralytics' boxes on them."""
    def build(base):
        np.save(base / "frames.npy", _frames(scene))
        env = {**par_env(), "YOLO_CONFIG_DIR": str(base / "ultralytics-settings")}
        subprocess.run([sys.executable, str(ROOT / "tests" / "yolo_reference.py"), str(base), str(base / "frames.npy"),
                        str(CONF), str(IOU)], check=True, env=env, capture_output=True, timeout=600)
    base = shared_once(tmp_path_factory, "yolo-models", build)
    return base, np.load(base / "frames.npy"), np.load(base / "ultralytics.npz")


def _nearest(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """For each of our rows (score, x0, y0, x1, y1) the largest difference to its nearest row of theirs (tied scores
    may come in any order)."""
    diff = np.abs(ours[:, None, :] - theirs[None, :, :])
    nearest = diff[:, :, 1:].max(2).argmin(1)
    return diff[np.arange(len(ours)), nearest]


@pytest.mark.parametrize("kind", ["onnx", "openvino"])
@pytest.mark.parametrize("name, layout", [("v8", "boxes-scores"), ("v10", "end-to-end")])
def test_person_boxes_are_ultralytics_own(yolo, kind, name, layout):
    """The same person boxes within 1 px and scores within 1e-3, in both layouts, under both runtimes."""
    base, frames, theirs = yolo
    det = YoloDetector(kind, str(base / f"{name}.onnx"), CONF, IOU, 0, "cpu", min_height=0)
    assert det.layout == layout and (det.height, det.width) == (192, 320)
    found = det.detect_batch(list(frames))
    for k, ours in enumerate(found):
        want_boxes, want_scores = theirs[f"{name}_{k}_boxes"], theirs[f"{name}_{k}_scores"]
        assert len(ours.boxes) == len(want_boxes) > 10
        assert np.abs(np.sort(ours.scores) - np.sort(want_scores)).max() < 1e-3
        a = np.concatenate([ours.scores[:, None], ours.boxes], 1).astype(np.float64)
        b = np.concatenate([want_scores[:, None], want_boxes], 1).astype(np.float64)
        matched = [(_nearest(x, y)[:, 1:].max(1) <= 1.0).mean() for x, y in ((a, b), (b, a))]
        # A random-weight model scores many boxes exactly alike (on the scene's flat walls its features are the same
        # at every position); the end-to-end graph's top-k keeps some of those tied boxes, and OpenVINO breaks the tie
        # otherwise than ONNX Runtime (on which Ultralytics ran). Every other case: every box.
        assert min(matched) >= (0.8 if (kind, layout) == ("openvino", "end-to-end") else 1.0)


def test_par_track_with_a_yolo_file_records_it(yolo, scene, run_path, tmp_path):
    base, _, _ = yolo
    run_par("track", scene / "video.mp4", "--checkpoint", run_path, "--out", tmp_path / "o", "--detector",
            f"onnx:{base / 'v10.onnx'}", "--detector-threshold", 0.9, "--min-track-frames", 3, "--frames", 1)
    doc = json.loads((tmp_path / "o" / "tracks.json").read_text())
    d = doc["detector"]
    assert d["kind"] == "onnx:v10.onnx" and d["layout"] == "end-to-end" and d["runtime"]["name"] == "onnxruntime"
    assert d["input"] == [192, 320] and len(d["sha256"]) == 64 and doc["tracks"]


def test_a_file_par_cannot_read_is_one_line(yolo, scene, run_path, tmp_path):
    base, _, _ = yolo

    class Flat(torch.nn.Module):
        def forward(self, images):
            return images.mean((2, 3))  # [B, 3]: no detector's layout

    from par_pipeline.deploy.graphs import write_graph
    from par_pipeline.errors import ParError

    write_graph(Flat(), torch.zeros(1, 3, 64, 64), tmp_path / "flat.onnx", "images", "out")
    message = one_error_line(run_par("track", scene / "video.mp4", "--checkpoint", run_path, "--out", tmp_path / "o",
                                     "--detector", f"onnx:{tmp_path / 'flat.onnx'}", check=False))
    assert "gives an output of shape [1, 3], not a layout par reads" in message  # through par track: one line
    assert not (tmp_path / "o").exists()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes((base / "v8.onnx").read_bytes()[:5000])
    for kind, path, person, expected in (
            ("onnx", cut, 0, "ONNX Runtime cannot load it"), ("openvino", cut, 0, "OpenVINO cannot load it"),
            ("onnx", tmp_path / "none.onnx", 0, "detector file not found"),
            ("onnx", base / "v8.onnx", 80, "has 80 classes; --person-class 80 is not one of them")):
        with pytest.raises(ParError, match=expected):
            YoloDetector(kind, str(path), CONF, IOU, person, "cpu")


def test_par_never_imports_ultralytics():
    """Ultralytics is AGPL: the tests use it, par does not."""
    sources = [p for p in (ROOT / "par_pipeline").rglob("*.py")] + [p for p in (ROOT / "cli").rglob("*.py")]
    assert not [p for p in sources if "import ultralytics" in p.read_text() or "from ultralytics" in p.read_text()]
