"""kill -9 anywhere: the process dies with SIGKILL at a fault point (the `PAR_TEST_KILL_AT` hook: no clean-up runs,
as with a power cut), then the same command (training: with --resume) finishes the job, bit-identical to an
uninterrupted run. The killed run is a real process (that is the point); the resumption runs in-process. The
references are the session's store and run, whose fault points were logged as they were made.

By default each distinct fault point is killed at once (its first occurrence); `make test-all` adds ten random
points of each stage (marked slow)."""
import contextlib
import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SMALL_TRAIN, TINY, TRAIN, run_par, run_par_forked
from par_pipeline.model.checkpoint import load_checkpoint
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
    """`par ARGS` as a process of its own killed with SIGKILL at its k-th fault point."""
    proc = run_par_forked(*args, env={"PAR_TEST_KILL_AT": str(k)})
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


SKELETON = ["skeleton-group", "skeleton-tokens", "skeleton-done", "skeleton-arrays", "skeleton-complete"]


def test_extraction_fault_points_are_the_expected_ones(store_faults):
    """The store is laid out first (its arrays, then its attributes, under a marker that says it is par's own), then
    each shard is written and marked done."""
    _, points = store_faults
    assert points[:len(SKELETON)] == SKELETON
    shards = points[len(SKELETON):]
    assert shards == ["shard-written", "shard-done"] * (len(shards) // 2) and len(shards) >= 8  # 4+ shards


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
    """Each step of laying the store out (the folder exists, part of its arrays do), a shard written, a shard marked
    done: the same command finishes, bit-identical."""
    store_path, points = store_faults
    for k in first_of_each(points):
        extraction_killed_then_resumed(k, points, manifest_path, store_path, tmp_path)


def _group_members(pgid: int) -> list[int]:
    """The live processes of a process group (a forked par is its own group; its loader workers belong to it)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def test_kill_9_while_decode_workers_run_then_rerun_at_once(store_faults, manifest_path, tmp_path):
    """Five kills while two loader workers decode frames and four threads write shards, each followed at once by the
    same command: the lock died with the process (workers never hold it), the workers end within two seconds, the
    store ends identical (the shards the writers had under way are redone)."""
    store_path, points = store_faults
    shard_points = [k + 1 for k, name in enumerate(points) if name == "shard-written"]
    for k in shard_points[:5]:
        out = tmp_path / f"w{k}.zarr"
        args = ["extract", manifest_path, "--out", out, *TINY, "--workers", "2", "--writers", "4"]
        killed = run_par_forked(*args, env={"PAR_TEST_KILL_AT": str(k)})
        assert killed.returncode == -signal.SIGKILL, (k, killed.returncode, killed.stderr[-1000:])
        run_par(*args)  # at once: no "another par extract is writing here"
        same_store(store_path, out)
        deadline = time.monotonic() + 2
        while _group_members(killed.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_members(killed.pid), "loader workers outlived the killed par extract by 2 s"


def test_kill_9_as_the_partial_store_appears_then_rerun(store_faults, manifest_path, tmp_path):
    """A SIGKILL from outside, at five moments from the instant `<out>.partial` appears (CLIP loading, the store
    being laid out): the same command, run at once, resumes every time and ends identical."""
    store_path, _ = store_faults
    for n, delay in enumerate((0.0, 0.02, 0.05, 0.1, 0.2)):
        out = tmp_path / f"a{n}.zarr"
        partial = out.with_name(out.name + ".partial")
        args = ["extract", manifest_path, "--out", out, *TINY]

        def kill_when_it_appears(proc) -> None:
            while not partial.exists() and proc.poll() is None:
                time.sleep(0.0005)
            time.sleep(delay)
            proc.kill()
        assert run_par_forked(*args, while_running=kill_when_it_appears).returncode == -signal.SIGKILL
        run_par(*args)
        same_store(store_path, out)
        assert not partial.exists()


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
