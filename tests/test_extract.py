import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_par, tiny_extract_config
from par_pipeline.errors import ParError
from par_pipeline.extract import extract
from par_pipeline.manifest import read_manifest
from par_pipeline.store import TokenStore

TINY = ["--model", "par-tiny-clip", "--allow-random-init", "--batch-size", "8", "--shard-frames", "16", "--workers", "0"]


def test_store_layout(store_path, manifest_path):
    m = read_manifest(manifest_path)
    s = TokenStore(store_path)
    F = sum(len(r.frames) for r in m.records)
    assert s.tokens.shape == (F, 197, 512) and s.tokens.dtype == np.float16
    assert s.tokens.chunks == (1, 197, 512) and s.tokens.shards == (16, 197, 512)
    assert s.offsets.tolist()[0] == 0 and s.offsets[-1] == F and len(s.offsets) == len(m.records) + 1
    assert s.tracklets == [r.tracklet for r in m.records] and s.split == [r.split for r in m.records]
    assert s.labels.shape == (16, 43) and s.labels.dtype == np.uint8
    assert (s.labels == np.array([r.labels for r in m.records])).all()
    assert s.text_features().shape == (43, 512) and s.text_features().dtype == np.float32
    assert s.text_features("phrases").shape == (43, 512)
    assert s.frame_ok.all()
    a = s.attrs
    assert a["format"] == "par-token-store" and a["version"] == 1 and a["complete"] is True
    assert a["model"] == "par-tiny-clip" and a["weights"]["kind"] == "random-init" and a["allow_random_init"]
    assert a["schema"] == "mars" and len(a["attributes"]) == 43 and a["group_boundaries"][-1] == 43
    assert a["prompts"][0] == "the pedestrian has an attribute short sleeves"
    assert a["preprocessing"]["size"] == 224 and a["preprocessing"]["pad"] == "zero-square"
    assert a["dtype"] == "float16" and a["frame_policy"]["max_frames_per_tracklet"] is None and "par_version" in a
    assert not os.path.exists(str(store_path) + ".partial")


def test_tokens_are_clip_tokens(store_path, manifest_path):
    """Row r holds ln_post(all tokens) @ proj of frame r, as a direct forward gives."""
    import torch

    from par_pipeline.encoder import ClipEncoder
    from par_pipeline.preprocess import load_frame

    m = read_manifest(manifest_path)
    enc = ClipEncoder("par-tiny-clip", allow_random_init=True)
    img = torch.from_numpy(load_frame(m.resolve(m.records[3].frames[1]), enc.preprocess)[0])[None]
    s = TokenStore(store_path)
    row = s.offsets[3] + 1
    expected = enc.encode_frames(img)[0].numpy()
    assert np.allclose(s.tokens[row].astype(np.float32), expected, atol=2e-2)
    from par_pipeline.preprocess import normalize

    cls = enc.model.visual(normalize(img, enc.preprocess))
    assert np.allclose(cls[0].detach().numpy(), expected[0], atol=1e-4)  # CLS token == open_clip's image feature


def test_h5_matches_zarr(store_path, manifest_path, tmp_path):
    out = tmp_path / "tokens.h5"
    extract(read_manifest(manifest_path), tiny_extract_config(out))
    a, b = TokenStore(store_path), TokenStore(out)
    assert np.array_equal(a.tokens[:], b.tokens[:]) and a.attrs == b.attrs and a.tracklets == b.tracklets
    assert not (tmp_path / "tokens.h5.partial").exists()


def test_no_weights_is_an_error(manifest_path, tmp_path):
    proc = run_par("extract", manifest_path, "--out", tmp_path / "s.zarr", "--model", "par-tiny-clip", check=False)
    assert proc.returncode == 2 and "no CLIP weights given" in proc.stderr and "--pretrained" in proc.stderr
    assert not (tmp_path / "s.zarr").exists()


def test_finished_store_not_recomputed_and_other_model_refused(store_path, manifest_path):
    before = os.path.getmtime(store_path / "tokens" / "c" / "0" / "0" / "0")
    res = extract(read_manifest(manifest_path), tiny_extract_config(store_path))
    assert res.already_complete and res.encoded_frames == 0
    assert os.path.getmtime(store_path / "tokens" / "c" / "0" / "0" / "0") == before
    with pytest.raises(ParError, match="different weights"):
        extract(read_manifest(manifest_path), tiny_extract_config(store_path, seed=1))
    with pytest.raises(ParError, match="different prompts"):
        extract(read_manifest(manifest_path), tiny_extract_config(store_path, prompt_template="{phrase}"))


def _break_frame(synth_root, tmp_path, how):
    root = tmp_path / "mars"
    shutil.copytree(synth_root, root)
    victim = sorted((root / "bbox_train").rglob("*.jpg"))[5]
    if how == "truncated":
        victim.write_bytes(victim.read_bytes()[:300])
    elif how == "empty":
        victim.write_bytes(b"")
    elif how == "missing":
        victim.unlink()
    return root, victim


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_bad_frame_error_and_skip(synth_root, tmp_path, how):
    from par_pipeline.layouts import build_mars_manifest
    from par_pipeline.manifest import write_manifest
    from par_pipeline.schema import load_schema

    root, victim = _break_frame(synth_root, tmp_path, how)
    write_manifest(build_mars_manifest(root, load_schema("mars"))[0], tmp_path / "m.jsonl")
    proc = run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "s.zarr", *TINY, check=False)
    assert proc.returncode == 2 and str(victim) in proc.stderr and "--on-bad-frame skip" in proc.stderr
    assert not (tmp_path / "s.zarr").exists()
    run_par("extract", tmp_path / "m.jsonl", "--out", tmp_path / "s.zarr", *TINY, "--on-bad-frame", "skip")
    s = TokenStore(tmp_path / "s.zarr")
    assert s.attrs["skipped_frames"] == [str(victim)] and (~s.frame_ok).sum() == 1


def test_missing_frame_named(manifest_path, tmp_path):
    m = read_manifest(manifest_path)
    m.records[2].frames[0] = "bbox_train/9999/nothere.jpg"
    with pytest.raises(ParError, match=r"nothere.jpg: file not found"):
        extract(m, tiny_extract_config(tmp_path / "s.zarr"))


def test_odd_images_just_work(tmp_path):
    from PIL import Image

    from par_pipeline.preprocess import Preprocess, load_frame

    pp = Preprocess()
    for mode, size in (("L", (50, 300)), ("RGBA", (128, 256)), ("RGB", (640, 480))):
        Image.new(mode, size).save(tmp_path / f"x.{'png' if mode == 'RGBA' else 'jpg'}")
        img, reason = load_frame(tmp_path / f"x.{'png' if mode == 'RGBA' else 'jpg'}", pp)
        assert reason == "" and img.shape == (3, 224, 224) and img.dtype == np.uint8


def test_kill_9_then_resume_is_identical(store_path, manifest_path, tmp_path):
    out = tmp_path / "s.zarr"
    cmd = [sys.executable, "-m", "cli.main", "extract", str(manifest_path), "--out", str(out), *TINY, "--shard-frames", "8",
           "--batch-size", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out.with_name("s.zarr.partial") / "done" / "c"
    deadline = time.time() + 120
    while time.time() < deadline and (not done.exists() or len(list(done.iterdir())) < 2):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and out.with_name("s.zarr.partial").exists()
    res = run_par(*cmd[3:])
    assert "resumed from shards" in res.stdout
    ref = tmp_path / "ref.zarr"
    run_par(*cmd[3:5], "--out", str(ref), *cmd[7:])
    a, b = TokenStore(out), TokenStore(ref)
    assert np.array_equal(a.tokens[:], b.tokens[:]) and a.attrs == b.attrs
    assert np.array_equal(a.frame_ok, b.frame_ok)


def test_two_process_torchrun(store_path, manifest_path, tmp_path):
    out = tmp_path / "dist.zarr"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                           "-m", "cli.main", "extract", str(manifest_path), "--out", str(out), *TINY],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = TokenStore(out), TokenStore(store_path)
    assert np.array_equal(a.tokens[:], b.tokens[:]) and a.attrs == b.attrs


def test_direct_shard_reads_match_zarr(store_path):
    from par_pipeline.shard_files import ShardFileReader

    s = TokenStore(store_path)
    assert s._direct is not None  # our layout is recognised
    rows = np.array([0, 5, 5, 17, int(s.tokens.shape[0]) - 1, 3])
    expected = np.stack([np.asarray(s.tokens[int(r)]) for r in rows])
    assert np.array_equal(s.read_rows(rows), expected)
    # any other layout is left to zarr
    import zarr

    other = zarr.open_array(str(store_path.parent / "other.zarr"), mode="w", shape=(4, 3), chunks=(2, 3), dtype="float16")
    assert ShardFileReader.for_array(store_path.parent / "other.zarr") is None and other.shape == (4, 3)


def test_direct_shard_writes_equal_zarr_bytes(tmp_path):
    """The writer's shard files are byte for byte what zarr-python writes: full and partial last shard,
    and a frame left out (bad frame: zeros, no chunk) exactly as zarr leaves out a chunk of fill values."""
    import zarr

    from par_pipeline.shard_files import ShardFileReader, ShardFileWriter

    F, N, D, S = 13, 5, 8, 8
    data = (np.random.default_rng(0).random((F, N, D)) + 0.5).astype(np.float16)
    present = np.ones(F, np.uint8)
    present[2] = 0
    data[2] = 0
    paths = {}
    for name in ("by-zarr", "direct"):
        g = zarr.open_group(str(tmp_path / name), mode="w", zarr_format=3)
        arr = g.create_array("tokens", shape=(F, N, D), chunks=(1, N, D), shards=(S, N, D), dtype="float16",
                             compressors=None, fill_value=0)
        paths[name] = tmp_path / name / "tokens"
        if name == "by-zarr":
            arr[:S] = data[:S]
            arr[S:] = data[S:]
        else:
            w = ShardFileWriter.for_array(paths[name])
            assert w is not None
            w.write(0, np.ascontiguousarray(data[:S]), present[:S])
            w.write(1, np.ascontiguousarray(data[S:]), present[S:])
    for s in (0, 1):
        a = (paths["by-zarr"] / "c" / str(s) / "0" / "0").read_bytes()
        b = (paths["direct"] / "c" / str(s) / "0" / "0").read_bytes()
        assert a == b, f"shard {s} differs"
    assert np.array_equal(zarr.open_array(str(paths["direct"]))[:], data)
    assert np.array_equal(ShardFileReader.for_array(paths["direct"]).read(np.arange(F)[::-1]), data[::-1])


def test_write_failure_is_one_line_and_resumable(store_path, manifest_path, tmp_path, monkeypatch):
    """A shard write that fails (disk full) ends in a ParError naming the shard file; the same command
    afterwards resumes and ends with the same store as an uninterrupted run."""
    import errno

    from par_pipeline.shard_files import ShardFileWriter

    real_write, calls = ShardFileWriter.write, []

    def failing(self, s, frames, present):
        calls.append(s)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, s, frames, present)

    monkeypatch.setattr(ShardFileWriter, "write", failing)
    out = tmp_path / "full.zarr"
    with pytest.raises(ParError, match=r"c/\d+/0/0: cannot write \(No space left on device\).*re-run the same command"):
        extract(read_manifest(manifest_path), tiny_extract_config(out))
    assert not out.exists() and (tmp_path / "full.zarr.partial").exists()
    monkeypatch.setattr(ShardFileWriter, "write", real_write)
    res = extract(read_manifest(manifest_path), tiny_extract_config(out))
    assert res.resumed_shards >= 1
    a, b = TokenStore(out), TokenStore(store_path)
    assert np.array_equal(a.tokens[:], b.tokens[:]) and a.attrs == b.attrs
