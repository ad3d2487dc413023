"""scripts/gpu_check.sh runs end to end on tiny sizes (no timing is asserted: performance figures come from `make
bench` and the script itself, never from tests). `make bench` is run and checked in test_makefile."""
import os
import subprocess

import numpy as np

from conftest import ROOT, one_error_line, par_env, run_par


def run_gpu_check(tmp_path, parts: str, **extra: str) -> str:
    """scripts/gpu_check.sh as written, with its sizes shrunk through its variables and the device set to the CPU
    (one decoder: PIL decoding is `make bench`'s default, tested with the Makefile): it proves the script runs, not
    its figures, so torch.compile is left to the card (the compiled step's own test pays for compiling once)."""
    env = par_env({"OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"), "DEVICE": "cpu",
                   "CLIP": "par-tiny-clip", "FUSION": "vtf-par-small", "TRACKLETS": "3", "FRAMES": "3", "BATCH": "8",
                   "PROFILE_BATCHES": "4", "PROFILE_COMPILE": "", "DD_MB": "16",
                   "TRAIN_BATCH": "2", "STEP_MODES": "eager", "EPOCHS": "2", "HOST_FRAMES": "128",
                   "PRECISIONS": "fp32",
                   "DECODERS": "torchvision",
                   "TRACK_SECONDS": "3", "TRACK_MINUTES": "", "TRACK_CAMERAS": "1", "PARTS": parts,
                   "GRID_TRACKLETS": "6 4", "GRID_FRAMES": "3", "GRID_EPOCHS": "1", "GRID_SEEDS": "1",
                   "PY": str(ROOT / ".venv" / "bin" / "python"),
                   "WHEELS": str(tmp_path / "no-wheels"),
                   "PATH": os.environ["PATH"], **extra})
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


class TestGpuCheckChain:
    """The parts that build on each other: extract, then train and predict from its store."""

    def test_gpu_check_extract_and_train_on_a_cpu(self, tmp_path):
        out = run_gpu_check(tmp_path, "extract train")
        assert "extract_fp32_torchvision" in out and "loader warm" in out and "predict" in out
        assert "model-only step: eager" in out


class TestGpuCheckTrack:
    """The track part, with the suite's trained run (the card's run takes the train part's)."""

    def test_gpu_check_track_on_a_cpu(self, tmp_path, run_path):
        assert "video frames/s" in run_gpu_check(tmp_path, "track", TRACK_CHECKPOINT=str(run_path))


class TestGpuCheckAlone:
    """The parts that stand alone: the CLIP profile and the paper's grid."""

    def test_gpu_check_profile_and_grid_on_a_cpu(self, tmp_path):
        out = run_gpu_check(tmp_path, "profile grid")
        assert "par's tokens (forward_intermediates + proj)" in out and "TFLOP/s" in out
        assert "par's tokens, batch 4" in out  # torch.compile of CLIP is timed on the card (PROFILE_COMPILE)
        assert "grid 8 points x 1 epochs" in out and "same checkpoints: True" in out


def test_grid_store_is_mars_shaped_complete_and_verified(tmp_path):
    """The grid part's store: MARS's shape (split counts, 5-900 frames of mean ~62, schema-valid labels), built
    through the extraction sink into a complete store that `par verify` passes, the same bytes when built twice,
    and reused once finished."""
    from par_pipeline.config import BenchConfig
    from par_pipeline.store.reader import TokenStore
    from par_pipeline.tools.grid_bench import MARS_FRAMES, build_random_store, mars_shaped_manifest

    big = mars_shaped_manifest(3000, 2000, seed=0)
    counts = np.array([len(r.frames) for r in big.records])
    assert [len(big.split(s)) for s in ("train", "test")] == [3000, 2000]
    assert counts.min() >= MARS_FRAMES["min"] and counts.max() <= MARS_FRAMES["max"]
    assert abs(counts.mean() - MARS_FRAMES["mean"]) < 3  # the geometric draw's mean, within its sampling noise
    assert len({r.tracklet for r in big.records}) == len(big.records)
    for r in big.records[:200]:
        big.schema.check_labels(r.labels, r.tracklet)
    assert {p for r in big.split("train") for p in [r.person_id]}.isdisjoint({r.person_id for r in big.split("test")})

    small = mars_shaped_manifest(5, 4, seed=0)
    sizes = BenchConfig(clip_model="par-tiny-clip", grid_frames=3)
    said = []
    built = [build_random_store(tmp_path / f"s{i}.zarr", small, sizes, said.append) for i in (0, 1)]
    assert built[0]["rows"] == sum(min(len(r.frames), 3) for r in small.records)
    store = TokenStore(tmp_path / "s0.zarr")
    assert store.attrs["complete"] and int(store.offsets[-1]) == built[0]["rows"]
    assert "all checks passed" in run_par("verify", tmp_path / "s0.zarr").stdout
    shards = sorted(p for p in (tmp_path / "s0.zarr" / "tokens" / "c").rglob("*") if p.is_file())
    assert shards and all(a.read_bytes() == (tmp_path / "s1.zarr" / a.relative_to(tmp_path / "s0.zarr")).read_bytes()
                          for a in shards)
    again = build_random_store(tmp_path / "s0.zarr", small, sizes, said.append)
    assert again["rows_per_s"] is None and "reused" in said[-1]


def test_grid_part_refuses_a_wrong_tracklet_pair(tmp_path):
    err = one_error_line(run_par("bench", "--part", "grid", "--out", tmp_path / "b", "--grid-tracklets", "8298",
                                 check=False))
    assert "--grid-tracklets must be two counts" in err and "8298" in err
    assert not (tmp_path / "b" / "grid").exists()
