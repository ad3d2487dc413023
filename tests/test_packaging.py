"""The wheel carries its data files and works outside the source tree; the oldest open_clip pyproject.toml admits
gives the same tokens as the one installed."""
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, par_env

MIN_OPEN_CLIP = "2.32.0"


def test_wheel_installs_and_runs_outside_the_source_tree(tmp_path, synth_root):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True)
    wheel = next(wheels.glob("par-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    # the dependencies come from the test environment; par itself only from the wheel
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    env = {k: v for k, v in par_env().items() if k != "PYTHONPATH"}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*args):
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
    proc = run(str(venv / "bin" / "par"), "manifest", "mars", str(synth_root), "--out", "m.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((work / "m.jsonl").read_text().splitlines()[0])["schema"] == "mars"
    proc = run(str(venv / "bin" / "par"), "extract", "--help")
    assert proc.returncode == 0 and "--clip-model" in proc.stdout and "--views" in proc.stdout
    code = (
        "import par_pipeline, data_manifests; from par_pipeline.data.schema import load_schema; "
        "from par_pipeline.config import load_recipe; from par_pipeline.model.clip import register_model_configs; "
        "assert 'site-packages' in par_pipeline.__file__ and 'site-packages' in data_manifests.__file__; "
        "assert load_schema('duke').num_attributes == 36; "
        "assert load_recipe('vtf-par-paper')['train']['weight_decay'] == 1e-4; "
        "register_model_configs(); import open_clip; assert 'par-tiny-clip' in open_clip.list_models(); print('ok')"
    )
    proc = run(str(venv / "bin" / "python"), "-c", code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_oldest_supported_open_clip_gives_the_same_tokens(tmp_path):
    target = tmp_path / "old"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          f"open_clip_torch=={MIN_OPEN_CLIP}"], capture_output=True, text=True)
    if pip.returncode != 0:
        pytest.skip(
            f"open_clip_torch=={MIN_OPEN_CLIP} could not be installed here (no package registry?): {pip.stderr[-200:]}"
        )
    code = (
        "import sys, numpy as np, torch, open_clip; from par_pipeline.model.clip import ClipEncoder; "
        "from par_pipeline.data.preprocess import Preprocess; "
        "e = ClipEncoder('par-tiny-clip', None, True, 'cpu', 'fp32', Preprocess(), weights_seed=5); "
        "g = torch.Generator().manual_seed(0); "
        "x = torch.randint(0, 255, (2, 3, 224, 224), generator=g, dtype=torch.uint8); "
        "np.save(sys.argv[1], e.encode_frames(x).numpy()); np.save(sys.argv[2], e.encode_text(['a hat']).numpy()); "
        "print(open_clip.__version__)"
    )
    outs = {}
    for name, path in (("old", f"{target}:{ROOT}"), ("current", str(ROOT))):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"{name}.npy"), str(tmp_path / f"{name}-t.npy")],
            env=par_env({"PYTHONPATH": path}),
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[name] = proc.stdout.strip()
    assert outs["old"] == MIN_OPEN_CLIP and outs["current"] != MIN_OPEN_CLIP
    assert np.allclose(np.load(tmp_path / "old.npy"), np.load(tmp_path / "current.npy"), atol=1e-5)
    assert np.allclose(np.load(tmp_path / "old-t.npy"), np.load(tmp_path / "current-t.npy"), atol=1e-5)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"open_clip_torch>={MIN_OPEN_CLIP}"' in pyproject and Path(ROOT / "pyproject.toml").is_file()
