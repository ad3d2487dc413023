"""Shared fixtures: a small MARS-shaped synthetic dataset, its manifest and a tiny-CLIP token store."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
PAR = [sys.executable, "-m", "cli.main"]


def run_par(*args: str, cwd: Path | None = None, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})}
    proc = subprocess.run([*PAR, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"par {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def needs_shared(sub: str) -> Path:
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"{path} is absent: the real MARS/Duke annotation files live in ../shared/data")
    return path


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    from par_pipeline.synth import plan_random, write_synth

    root = tmp_path_factory.mktemp("synth") / "mars"
    write_synth(root, plan_random(8, (3, 7), seed=1), workers=1)
    return root


@pytest.fixture(scope="session")
def manifest_path(synth_root, tmp_path_factory) -> Path:
    from par_pipeline.layouts import build_mars_manifest
    from par_pipeline.manifest import write_manifest
    from par_pipeline.schema import load_schema

    manifest, _ = build_mars_manifest(synth_root, load_schema("mars"))
    path = tmp_path_factory.mktemp("manifest") / "manifest.jsonl"
    write_manifest(manifest, path)
    return path


def tiny_extract_config(out: Path, **kw):
    from par_pipeline.extract import ExtractConfig

    base = dict(out=str(out), model="par-tiny-clip", allow_random_init=True, batch_size=8, shard_frames=16, workers=0)
    base.update(kw)
    return ExtractConfig(**base)


@pytest.fixture(scope="session")
def store_path(manifest_path, tmp_path_factory) -> Path:
    from par_pipeline.extract import extract
    from par_pipeline.manifest import read_manifest

    out = tmp_path_factory.mktemp("store") / "tokens.zarr"
    extract(read_manifest(manifest_path), tiny_extract_config(out))
    return out
