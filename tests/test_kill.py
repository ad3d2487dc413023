"""kill -9 anywhere: the process dies with SIGKILL at a fault point (the `PAR_TEST_KILL_AT` hook: no clean-up runs,
as with a power cut), then the same command (training: with --resume) finishes the job, bit-identical to an
uninterrupted run. The killed run is a real process (that is the point); the resumption runs in-process. The
references are the session's store and run, whose fault points were logged as they were made.

By default each distinct fault point is killed at once (its first occurrence); `make test-all` adds ten random
points of each stage (marked slow)."""
import json
import re
import signal

import numpy as np
import pytest
import torch

from conftest import SMALL_TRAIN, TINY, TRAIN, run_par, run_par_process
from par_pipeline.run import load_checkpoint
from par_pipeline.store.reader import TokenStore


def first_of_each(points: list[str]) -> list[int]:
    """1-based positions of the first occurrence of each distinct fault point: each place in the code that marks one
    (`before-rename:<file>` is one place, whichever file it renames)."""
    places = [name.split(":")[0] for name in points]
    return sorted({place: k + 1 for k, place in reversed(list(enumerate(places)))}.values())


def ten_random(points: list[str], seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(np.arange(1, len(points) + 1), size=min(10, len(points)), replace=False).tolist())


def killed_at(k: int, *args) -> None:
    proc = run_par_process(*args, check=False, env={"PAR_TEST_KILL_AT": str(k)})
    assert proc.returncode == -signal.SIGKILL, (k, proc.returncode, proc.stderr[-1000:])


def same_store(a_path, b_path) -> None:
    a, b = TokenStore(a_path), TokenStore(b_path)
    rows = np.arange(a.tokens.shape[0])
    assert np.array_equal(a.read_rows(rows)[0], b.read_rows(rows)[0])
    assert a.attrs == b.attrs and np.array_equal(a.frame_ok, b.frame_ok)


def same_weights(a_json, b_json) -> None:
    a, _ = load_checkpoint(a_json)
    b, _ = load_checkpoint(b_json)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k


def extraction_killed_then_resumed(k, points, manifest_path, store_path, tmp_path) -> None:
    out = tmp_path / f"s{k}.zarr"
    args = ["extract", manifest_path, "--out", out, *TINY]
    killed_at(k, *args)
    result = run_par(*args)
    # the shards marked done before the kill (a shard is marked done before its `shard-done` point) are not redone
    assert int(re.search(r"resumed from shards\D+(\d+)", result.stdout).group(1)) == points[:k].count("shard-done")
    same_store(store_path, out)
    assert not out.with_name(out.name + ".partial").exists(), points[k - 1]


def training_killed_then_resumed(k, points, run_path, store_path, tmp_path) -> None:
    out = tmp_path / f"r{k}"
    killed_at(k, "train", store_path, "--out", out, *TRAIN)
    run_par("train", store_path, "--out", out, *TRAIN, "--resume")
    same_weights(run_path / "last.json", out / "last.json")
    same_weights(run_path / "best.json", out / "best.json")
    assert epochs_of(out) == epochs_of(run_path) and not (out / ".pending").exists()


def epochs_of(run) -> list[dict]:
    """The run's log without its one timing figure."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in records]


def test_extraction_fault_points_are_the_expected_ones(store_faults):
    _, points = store_faults
    assert set(points) == {"shard-written", "shard-done"}
    assert points == ["shard-written", "shard-done"] * (len(points) // 2) and len(points) >= 8  # 4+ shards


def test_training_fault_points_are_the_expected_ones(run_faults):
    """Each epoch's checkpoint set is written beside the run, renamed into `.pending/`, marked complete (COMMIT), then
    rolled forward into place; the run's options are written first."""
    _, points = run_faults
    files = ("last.safetensors", "last.state.pt", "last.json", "best.safetensors", "best.json", "log.jsonl")
    epoch = [x for f in files for x in (f"before-rename:{f}", f"pending:{f}")] + ["before-rename:COMMIT", "committed"] \
        + [f"roll-forward:{f}" for f in files] + ["epoch-committed"]
    assert points[0] == "before-rename:config.json" and points[1:1 + len(epoch)] == epoch
    assert points.count("epoch-committed") == SMALL_TRAIN["epochs"] and points[-1] == "epoch-committed"
    assert len(first_of_each(points)) == 5  # before-rename, pending, committed, roll-forward, epoch-committed


def test_kill_9_at_each_extraction_point_then_resume(store_faults, manifest_path, tmp_path):
    store_path, points = store_faults
    for k in first_of_each(points):
        extraction_killed_then_resumed(k, points, manifest_path, store_path, tmp_path)


def test_kill_9_at_each_training_point_then_resume(run_faults, store_path, tmp_path):
    run_path, points = run_faults
    for k in first_of_each(points):
        training_killed_then_resumed(k, points, run_path, store_path, tmp_path)


@pytest.mark.slow
def test_kill_9_at_ten_random_extraction_points(store_faults, manifest_path, tmp_path):
    store_path, points = store_faults
    for k in ten_random(points, 0):
        extraction_killed_then_resumed(k, points, manifest_path, store_path, tmp_path)


@pytest.mark.slow
def test_kill_9_at_ten_random_training_points(run_faults, store_path, tmp_path):
    run_path, points = run_faults
    for k in ten_random(points, 1):
        training_killed_then_resumed(k, points, run_path, store_path, tmp_path)
