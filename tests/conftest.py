"""Shared fixtures: a small MARS-shaped synthetic dataset, its manifest, a tiny-CLIP token store and a trained run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
PAR = [sys.executable, "-m", "cli.main"]
# The tiny CLIP runs in fp32 on the CPU (CPU fp16 is an emulation: slow, and not what a GPU computes).
TINY_EXTRACT = {"clip_model": "par-tiny-clip", "allow_random_init": True, "precision": "fp32", "batch_size": 8,
                "shard_frames": 16, "workers": 0}
TINY = ["--clip-model", "par-tiny-clip", "--allow-random-init", "--precision", "fp32", "--batch-size", "8",
        "--shard-frames", "16", "--workers", "0"]
SMALL_TRAIN = {"model": "vtf-par-small", "epochs": 2, "batch_size": 4, "workers": 0, "warmup_epochs": 1, "frames": 3,
               "fusion_init": "random"}


def par_env(extra: dict | None = None) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(extra or {})}


def run_par(*args, cwd: Path | None = None, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess."""
    proc = subprocess.run([*PAR, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=par_env(env))
    if check and proc.returncode != 0:
        raise AssertionError(f"par {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def needs_shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"{path} is absent: the real MARS/Duke annotation files live in ../shared/data")
    return path


def extract_config(out: Path, **kw):
    from par_pipeline.config import configure

    return configure("extract", None, [("test", {**TINY_EXTRACT, "out": str(out), **kw})])


def tiny_extract(manifest, out: Path, **kw):
    from par_pipeline.workflows.extract import extract

    cfg, recipe = extract_config(out, **kw)
    return extract(manifest, cfg, recipe)


def train_config(store, out, **kw):
    from par_pipeline.config import configure

    return configure("train", None, [("test", {**SMALL_TRAIN, "store": str(store), "out": str(out), **kw})])


def tiny_train(store, out, **kw):
    from par_pipeline.workflows.train import train

    cfg, recipe = train_config(store, out, **kw)
    return train(cfg, recipe)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from par_pipeline.tools.synth import plan_random, write_synth

    root = tmp_path_factory.mktemp("synth") / "mars"
    write_synth(root, plan_random("mars", 8, (3, 7), seed=1), workers=1)
    return root


@pytest.fixture(scope="session")
def manifest_path(synth_root, tmp_path_factory) -> Path:
    from par_pipeline.data.layouts import build_mars_manifest
    from par_pipeline.data.manifest import write_manifest
    from par_pipeline.data.schema import load_schema

    manifest, _ = build_mars_manifest(synth_root, load_schema("mars"))
    path = tmp_path_factory.mktemp("manifest") / "manifest.jsonl"
    write_manifest(manifest, path)
    return path


@pytest.fixture(scope="session")
def store_path(manifest_path, tmp_path_factory) -> Path:
    from par_pipeline.data.manifest import read_manifest

    out = tmp_path_factory.mktemp("store") / "tokens.zarr"
    tiny_extract(read_manifest(manifest_path), out)
    return out


@pytest.fixture(scope="session")
def run_path(store_path, tmp_path_factory) -> Path:
    """A trained run (2 epochs) shared by tests that only read it."""
    run = tmp_path_factory.mktemp("run") / "run"
    tiny_train(store_path, run)
    return run
