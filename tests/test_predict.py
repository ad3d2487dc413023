import json

import numpy as np
import pytest

from conftest import run_par, tiny_eval
from par_pipeline.config import PredictConfig
from par_pipeline.data.manifest import read_manifest
from par_pipeline.errors import ParError
from par_pipeline.workflows.predict import TrackletInput, collect_inputs, predict


@pytest.fixture(scope="module")
def checkpoint(run_path):
    return run_path


def test_predict_agrees_with_eval(checkpoint, store_path, manifest_path, tmp_path):
    m = read_manifest(manifest_path)
    tests = m.split("test")[:3]
    items = [TrackletInput(r.tracklet, frames=[m.resolve(f) for f in r.frames]) for r in tests]
    records, _ = predict(items, PredictConfig(checkpoint=str(checkpoint), frames=3, workers=0))
    tiny_eval(store_path, checkpoint, out=str(tmp_path / "ev"), frames=3)  # T=3 as trained
    ev = np.load(tmp_path / "ev" / "predictions.npz")
    for rec in records:
        i = list(ev["tracklets"]).index(rec["tracklet"])
        probs = np.array(list(rec["probabilities"].values()))
        assert np.allclose(probs, ev["probs"][i], atol=1e-3), rec["tracklet"]
        assert set(rec["description"]) == {"top length short", "bottom length short", "shoulder bag", "backpack", "hat",
                                           "hand bag", "hair long", "gender female", "bottom type trousers", "pose",
                                           "motion", "top color", "bottom color", "age"}
        assert rec["description"]["hat"] in ("yes", "no")
        assert rec["description"]["age"] in ("young", "teenager", "adult", "old")
        assert ((probs >= 0) & (probs <= 1)).all() and len(probs) == 43


def _write_video(path, frames):
    import av
    from PIL import Image

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 128, 256
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_image(Image.open(f).convert("RGB"))):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_video_and_folders_through_cli(checkpoint, manifest_path, tmp_path):
    m = read_manifest(manifest_path)
    rec = m.split("test")[0]
    _write_video(tmp_path / "person.mp4", [m.resolve(f) for f in rec.frames])
    folder = tmp_path / "many"
    for r in m.split("test")[1:3]:
        (folder / r.tracklet).mkdir(parents=True)
        for f in r.frames:
            (folder / r.tracklet / f.split("/")[-1]).write_bytes(m.resolve(f).read_bytes())
    run_par("predict", tmp_path / "person.mp4", folder, "--checkpoint", checkpoint, "--json", tmp_path / "p.json",
            "--csv", tmp_path / "p.csv")
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["format"] == "par-predictions" and doc["version"] == 1
    records = doc["records"]
    assert [r["tracklet"] for r in records] == ["person", m.split("test")[1].tracklet, m.split("test")[2].tracklet]
    assert records[0]["frames"] == len(rec.frames)
    assert (tmp_path / "p.csv").read_text().splitlines()[0].startswith("tracklet,frames,top length short")
    root = m.root
    out = run_par("predict", "--checkpoint", checkpoint, "--mars-root", root, "--tracklet", rec.tracklet)
    assert rec.tracklet in out.stdout


def test_bad_inputs(checkpoint, manifest_path, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParError, match="empty: no frames"):
        collect_inputs([tmp_path / "empty"])
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 10)
    proc = run_par("predict", tmp_path / "broken.mp4", "--checkpoint", checkpoint, check=False)
    assert proc.returncode == 2 and "broken.mp4: unreadable video" in proc.stderr
    # a good input with a checkpoint JSON that is not a par checkpoint: the checkpoint is what is named
    frames = tmp_path / "frames"
    frames.mkdir()
    m = read_manifest(manifest_path)
    for f in m.records[-1].frames:
        (frames / f.split("/")[-1]).write_bytes(m.resolve(f).read_bytes())
    (tmp_path / "bad.json").write_text("{}")
    proc = run_par("predict", frames, "--checkpoint", tmp_path / "bad.json", check=False)
    assert proc.returncode == 2 and "bad.json: not a par checkpoint" in proc.stderr
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("x")
    proc = run_par("predict", frames, "--checkpoint", checkpoint, "--json", folder, check=False)
    assert proc.returncode == 2 and "is a folder" in proc.stderr and (folder / "keep.txt").read_text() == "x"


def test_checkpoint_of_other_clip_weights_refused(checkpoint, tmp_path):
    import shutil

    bad = tmp_path / "ck"
    shutil.copytree(checkpoint, bad)
    meta = json.loads((bad / "best.json").read_text())
    meta["store_identity"]["weights"] = {"kind": "file", "name": "ViT-B-16.pt", "sha256": "0" * 64}
    (bad / "best.json").write_text(json.dumps(meta))
    (tmp_path / "weights.pt").write_bytes(b"other")
    with pytest.raises(ParError, match="not the CLIP weights"):
        predict(
            [TrackletInput("x", frames=[])], PredictConfig(checkpoint=str(bad), pretrained=str(tmp_path / "weights.pt"))
        )
    with pytest.raises(ParError, match="pass that file with --pretrained"):
        predict([TrackletInput("x", frames=[])], PredictConfig(checkpoint=str(bad)))
