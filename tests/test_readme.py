"""CI runs what users run: every ```bash block of the README as written (the Makefile targets: test_makefile.py).

Small sizes and local paths come in through the variables the blocks and the Makefile already have (assignment
lines `NAME=value` at the top of a block are replaced by the test's value; Makefile variables come from the
environment). Commands run in a fresh working folder, as a user's would. `make test` is the one command not run
here: it is what CI runs to run this file.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, par_env, run_par
from par_pipeline.store.reader import TokenStore

ASSIGNMENT = re.compile(r"^([A-Z][A-Z_0-9]*)=(\S+)")
NOT_RUN_HERE = {"make test"}  # CI itself


def readme_blocks() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    return [block.strip("\n").splitlines() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


EXAMPLE_TRACKLET = "0399C4T0001"  # the full-size demo's tracklet in the README's prediction example


def readme_predict_example() -> str:
    """The `$ par predict ...` command of the README's example output (a text block), without its comment."""
    text = (ROOT / "README.md").read_text()
    [line] = [line for line in text.splitlines() if line.startswith("$ par predict")]
    assert EXAMPLE_TRACKLET in line
    return line[2:].split("#")[0].strip()


def workdir(tmp_path: Path) -> Path:
    """A user's working folder: the project's Makefile, venv and pyproject beside the user's own files."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Makefile", ".venv", "pyproject.toml"):
        (work / name).symlink_to(ROOT / name)
    return work


def run_script(lines: list[str], values: dict[str, str], cwd: Path, env: dict, timeout: int = 1800) -> str:
    script = []
    for line in lines:
        m = ASSIGNMENT.match(line)
        if m:
            assert m.group(1) in values, f"README variable {m.group(1)} has no test value: add it to the test"
            line = f"{m.group(1)}={values[m.group(1)]}"
        script.append(line)
    env = {**env, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-xc", "\n".join(script)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert (
        proc.returncode == 0
    ), f"README commands failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout


def small_recipe(path: Path) -> Path:
    """vtf-par-official with CPU sizes: the tiny CLIP in fp32, the small fusion model, 2 epochs."""
    recipe = json.loads((ROOT / "data_manifests" / "recipes" / "vtf-par-official.json").read_text())
    recipe["name"] = "vtf-par-official-tiny"
    recipe["extract"].update({"clip_model": "par-tiny-clip", "precision": "fp32"})
    recipe["train"].update({"model": "vtf-par-small", "epochs": 2, "batch_size": 4, "warmup_epochs": 1, "frames": 3})
    path.write_text(json.dumps(recipe))
    return path


def tiny_vit(path: Path, width: int = 128) -> Path:
    """An ImageNet-ViT-shaped checkpoint (timm's names, 12 blocks) of the small fusion model's width."""
    import torch

    from conftest import model_config
    from par_pipeline.model.block import fusion_block

    blk = fusion_block(model_config(hidden=width), width, 4)
    state = {f"blocks.{i}.{k}": v.clone() for i in range(12) for k, v in blk.state_dict().items()}
    state.update({"norm.weight": torch.ones(width), "norm.bias": torch.zeros(width)})
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def user_data(tmp_path_factory):
    """Everything the README's workflow blocks name, small: a MARS tree, OpenAI-form CLIP weights (a tiny CLIP as a
    TorchScript archive), an ImageNet-ViT-shaped fusion init, a Duke tree, a person folder and a video."""
    from clip_weights import tiny_clip_files
    from test_predict import _write_video

    base = tmp_path_factory.mktemp("user")
    run_par("synth", base / "MARS", "--tracklets", "6", "--frames-per-tracklet", "3-6", "--workers", "1")
    run_par("synth", base / "Duke", "--layout", "duke", "--tracklets", "6", "--frames-per-tracklet", "3-5",
                    "--workers", "1")
    clip = tiny_clip_files(base / "models")["torchscript"]
    frames = sorted((base / "MARS" / "bbox_test").rglob("*.jpg"))
    tracklet = frames[0].name[:11]
    person = base / "person_0001"
    person.mkdir()
    for f in frames[:4]:
        (person / f.name).write_bytes(f.read_bytes())
    _write_video(base / "walk.mp4", frames[:5])
    import torch

    from test_import import reference_model

    run_par("synth", base / "street", "--video", "--people", "3", "--seconds", "4", "--width", "320",
                    "--height", "180")
    authors = base / "models" / "VTF-Pretrain.pth"
    torch.save({"model_state_dict": reference_model(43).state_dict(), "epoch": 20}, authors)
    return {"MARS": str(base / "MARS"), "CLIP": str(clip), "VIT": str(tiny_vit(base / "models" / "jx_vit.pth")),
            "REFERENCE": str(authors), "IMPORT_OPTIONS": "--allow-other-clip",
            "FOOTAGE": str(base / "street" / "video.mp4"),
            "RECIPE": str(small_recipe(base / "tiny-recipe.json")), "DEVICE": "cpu", "GPUS": "2", "EPOCHS": "1",
            "SEEDS": "1", "MODEL": "vtf-par-small", "DUKE": str(base / "Duke"), "PERSON": str(person),
            "VIDEO": str(base / "walk.mp4"), "TRACKLET": tracklet}


def test_readme_workflow_blocks(user_data, tmp_path, open_page):
    """The MARS workflow, torchrun, the ablation, Duke and prediction, as the README writes them, in one shell (later
    blocks use the variables of earlier ones), in a fresh working folder."""
    work = workdir(tmp_path)
    blocks = readme_blocks()[1:]
    values = {**user_data, "STORE": str(work / "mars.zarr")}
    # make ablation takes the frame counts from the environment as a Makefile variable: two of them here
    out = run_script([line for block in blocks for line in block], values, work,
                     par_env({"OMP_NUM_THREADS": "1", "FRAMES": "1 2"}), timeout=3000)
    assert (work / "runs" / "t6" / "eval-test" / "metrics.json").is_file()
    report = (work / "runs" / "t6" / "report" / "report.md").read_text()
    assert "par eval" in report and "test-selected as the reference" in report
    meta = json.loads((work / "runs" / "t6" / "best.json").read_text())
    assert meta["store_identity"]["weights"]["name"] == "ViT-B-16.pt" and meta["fusion_init"]["kind"] == "file"
    assert meta["recipe"]["name"] == "vtf-par-official-tiny" and meta["store_identity"]["clip_model"] == "par-tiny-clip"
    duke = json.loads((work / "runs" / "duke" / "eval-test" / "metrics.json").read_text())
    assert len(duke["attributes"]) == 36 and len(duke["protocol"]["groups"]) == 12
    assert len(json.loads((work / "results" / "ablation.json").read_text())["rows"]) == 4  # 2 variants x 2 frames
    people = json.loads((work / "people" / "tracks.json").read_text())
    assert people["format"] == "par-tracks" and people["tracks"] and (work / "people.mp4").is_file()
    assert TokenStore(work / "crops.zarr").attrs["complete"]  # footage -> crops -> manifest -> a token store
    assert json.loads((work / "found.json").read_text())["format"] == "par-search"
    scene = json.loads((work / "scene-people" / "tracks.json").read_text())
    assert len(scene["tracks"]) >= 5 and scene["detector"]["kind"] == "file"
    authors = json.loads((work / "runs" / "authors" / "eval-test" / "metrics.json").read_text())
    assert authors["selection"].startswith("imported from VTF-Pretrain.pth") and authors["frames"] == 6
    assert "imported from VTF-Pretrain.pth" in (work / "runs" / "authors" / "report" / "report.md").read_text()
    # report.html of two runs and the ablation: the run that held out persons has thresholds tuned on them
    page = work / "runs" / "compare" / "report.html"
    opened = open_page(page)
    opened.check_clean(page)
    labels = opened.page.eval_on_selector_all("#summary-table tbody tr", "rs => rs.map(r => r.cells[0].textContent)")
    assert labels[0].startswith("t6: best on the test split") and any(x.startswith("t6-val: best on") for x in labels)
    tables = opened.page.eval_on_selector_all('table[id^="attributes-"] thead', "ts => ts.map(t => t.textContent)")
    assert ["threshold tuned on val" in t for t in tables] == [False, True]
    assert opened.page.locator("#ablation-table3-0 tbody tr").count() == 2
    preds = json.loads((work / "predictions.json").read_text())
    assert [r["tracklet"] for r in preds["records"]] == ["person_0001", "walk"]
    assert (work / "runs" / "ddp" / "best.json").is_file()
    assert "all checks passed" in " ".join(out.split())  # par verify's table title, wrapped to the table's width
    assert len(blocks) >= 5
    # two ranks under torchrun write the store one process writes, byte for byte
    single, ranks = TokenStore(work / "mars.zarr"), TokenStore(work / "mars.zarr.ddp")
    rows = np.arange(single.tokens.shape[0])
    assert np.array_equal(single.read_rows(rows)[0], ranks.read_rows(rows)[0]) and single.attrs == ranks.attrs
