"""CI runs what users run: every ```bash block of the README as written (the Makefile targets: test_makefile.py).

Small sizes and local paths come in through the variables the blocks and the Makefile already have (assignment
lines `NAME=value` at the top of a block are replaced by the test's value; Makefile variables come from the
environment). Commands run in a fresh working folder, as a user's would. `make test` is the one command not run
here: it is what CI runs to run this file.
"""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, one_error_line, par_env, readme_par_bin, run_par, shared_once
from par_pipeline.outputs import file_sha256
from par_pipeline.store.reader import TokenStore
from tracked import expected_curve, mlflow_curve, tensorboard_scalars, trackers_of, wandb_history

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
    env = {**env, "PATH": f"{readme_par_bin()}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
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


def make_user_data(base: Path) -> dict[str, str]:
    """Everything the README's workflow blocks name, small: a MARS tree, OpenAI-form CLIP weights (a tiny CLIP as a
    TorchScript archive), an ImageNet-ViT-shaped fusion init, a Duke tree, a person folder, a video and footage; the
    values of the blocks' variables."""
    import torch

    from clip_weights import tiny_clip_files
    from test_import import reference_model
    from test_predict import _write_video

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
    run_par("synth", base / "street", "--video", "--people", "6", "--seconds", "4", "--width", "320", "--height",
            "180")
    authors = base / "models" / "VTF-Pretrain.pth"
    torch.save({"model_state_dict": reference_model(43).state_dict(), "epoch": 20}, authors)
    return {"MARS": str(base / "MARS"), "CLIP": str(clip), "VIT": str(tiny_vit(base / "models" / "jx_vit.pth")),
            "REFERENCE": str(authors), "IMPORT_OPTIONS": "--allow-other-clip",
            "FOOTAGE": str(base / "street" / "video.mp4"),
            "RECIPE": str(small_recipe(base / "tiny-recipe.json")), "DEVICE": "cpu", "GPUS": "2", "EPOCHS": "1",
            "SEEDS": "1", "MODEL": "vtf-par-small", "DUKE": str(base / "Duke"), "PERSON": str(person),
            "VIDEO": str(base / "walk.mp4"), "TRACKLET": tracklet}


def readme_block(containing: str) -> list[str]:
    """The one ```bash block of the README with a line that contains `containing`."""
    found = [b for b in readme_blocks() if any(containing in line for line in b)]
    assert len(found) == 1, f"{len(found)} README blocks contain {containing!r}"
    return found[0]


# What identifies each README workflow block (the first block, `make demo` / `make test`, is test_makefile's)
BLOCKS = {"mars": "par manifest mars $MARS", "torchrun": "torchrun --nproc-per-node $GPUS", "ablation": "make ablation",
          "duke": "par manifest duke", "import": "par import vtf-par", "compare": "--val-fraction",
          "predict": "par predict --checkpoint runs/t6 --pretrained", "footage": "--annotate people.mp4",
          "crops": "--crops-train", "live": "--alert-webhook", "trackers": "par export-logs",
          "link": "par link site-tracks", "export": "par export runs/t6"}
ENV = {"OMP_NUM_THREADS": "1", "FRAMES": "1 2"}  # make ablation takes the frame counts as a Makefile variable


@dataclass
class UserFolder:
    """A user's working folder after some README blocks, and the values of the README's variables there."""
    work: Path
    values: dict[str, str]
    out: str

    def run(self, *blocks: str, values: dict[str, str] | None = None) -> str:
        """The named blocks as written, in one shell, after the MARS block's variable lines (later blocks use them);
        `values`: the test's values of variables only it can know (a server's address)."""
        assignments = [line for line in readme_block(BLOCKS["mars"]) if ASSIGNMENT.match(line)]
        lines = assignments + [line for name in blocks for line in readme_block(BLOCKS[name])]
        return run_script(lines, {**self.values, **(values or {})}, self.work, par_env(ENV), timeout=1200)


def _user_folder(base: Path) -> UserFolder:
    return UserFolder(base / "work", json.loads((base / "values.json").read_text()),
                      (base / "out.txt").read_text() if (base / "out.txt").exists() else "")


@pytest.fixture(scope="session")
def user_data(tmp_path_factory) -> dict[str, str]:
    """The README's inputs, made once for the whole run."""
    def build(base: Path) -> None:
        (base / "values.json").write_text(json.dumps(make_user_data(base)))
    return json.loads((shared_once(tmp_path_factory, "readme-user", build) / "values.json").read_text())


@pytest.fixture(scope="session")
def mars_folder(tmp_path_factory, user_data) -> UserFolder:
    """A user's folder after the README's MARS workflow block (manifest, extract, train, eval, report, verify), run
    once for the whole run; the blocks that continue it run in it, side by side."""
    def build(base: Path) -> None:
        folder = UserFolder(workdir(base), {**user_data, "STORE": str(base / "work" / "mars.zarr")}, "")
        (base / "values.json").write_text(json.dumps(folder.values))
        (base / "out.txt").write_text(folder.run("mars"))
    return _user_folder(shared_once(tmp_path_factory, "readme-mars", build))


def test_every_readme_block_is_run():
    """Each ```bash block of the README belongs to a test here (or, the first, to test_makefile): a new block fails
    this until a test runs it."""
    claimed = [readme_block(key) for key in BLOCKS.values()]
    assert len(readme_blocks()) == len(claimed) + 1 and readme_blocks()[0] not in claimed


class TestMarsWorkflow:
    """The MARS workflow block (run once for the whole run by `mars_folder`)."""

    def test_readme_mars_workflow(self, mars_folder):
        work = mars_folder.work
        assert (work / "runs" / "t6" / "eval-test" / "metrics.json").is_file()
        report = (work / "runs" / "t6" / "report" / "report.md").read_text()
        assert "par eval" in report and "test-selected as the reference" in report
        meta = json.loads((work / "runs" / "t6" / "best.json").read_text())
        assert meta["store_identity"]["weights"]["name"] == "ViT-B-16.pt" and meta["fusion_init"]["kind"] == "file"
        assert meta["recipe"]["name"] == "vtf-par-official-tiny"
        assert meta["store_identity"]["clip_model"] == "par-tiny-clip"
        assert "all checks passed" in " ".join(mars_folder.out.split())  # par verify's table title, wrapped


class TestTorchrun:
    """The torchrun block, continuing the MARS folder."""

    def test_readme_torchrun(self, mars_folder):
        """Two ranks under torchrun write the store one process writes, byte for byte, and train a run."""
        mars_folder.run("torchrun")
        work = mars_folder.work
        assert (work / "runs" / "ddp" / "best.json").is_file()
        # --log-to under torchrun: rank 0 alone wrote one event file, each epoch once
        assert len(list((work / "runs" / "ddp" / "tensorboard").iterdir())) == 1
        assert tensorboard_scalars(work / "runs" / "ddp" / "tensorboard")["loss"] == \
            [(e, pytest.approx(v, rel=1e-7)) for e, v in expected_curve(work / "runs" / "ddp")["loss"]]
        single, ranks = TokenStore(work / "mars.zarr"), TokenStore(work / "mars.zarr.ddp")
        rows = np.arange(single.tokens.shape[0])
        assert np.array_equal(single.read_rows(rows)[0], ranks.read_rows(rows)[0]) and single.attrs == ranks.attrs


class TestAblationAndComparison:
    """`make ablation` and the comparison block, continuing the MARS folder."""

    def test_readme_ablation_and_the_comparison_page(self, mars_folder, open_page):
        """`make ablation` on the MARS store, then a run with held-out persons, its evaluations and report.html of both
        runs and the ablation: the run that held out persons has thresholds tuned on them."""
        mars_folder.run("ablation", "compare")
        work = mars_folder.work
        assert len(json.loads((work / "results" / "ablation.json").read_text())["rows"]) == 4  # 2 variants x 2 frames
        page = work / "runs" / "compare" / "report.html"
        opened = open_page(page)
        opened.check_clean(page)
        labels = opened.page.eval_on_selector_all("#summary-table tbody tr",
                                                  "rs => rs.map(r => r.cells[0].textContent)")
        assert labels[0].startswith("t6: best on the test split")
        assert any(x.startswith("t6-val: best on") for x in labels)
        tables = opened.page.eval_on_selector_all('table[id^="attributes-"] thead', "ts => ts.map(t => t.textContent)")
        assert ["threshold tuned on val" in t for t in tables] == [False, True]
        assert opened.page.locator("#ablation-table3-0 tbody tr").count() == 2


class TestDuke:
    """The Duke block, in a folder of its own."""

    def test_readme_duke(self, user_data, tmp_path):
        """The Duke block in a folder of its own (it needs nothing of the MARS block but the variables)."""
        folder = UserFolder(workdir(tmp_path), {**user_data, "STORE": str(tmp_path / "unused.zarr")}, "")
        folder.run("duke")
        duke = json.loads((folder.work / "runs" / "duke" / "eval-test" / "metrics.json").read_text())
        assert len(duke["attributes"]) == 36 and len(duke["protocol"]["groups"]) == 12


class TestImport:
    """The authors' checkpoint block, continuing the MARS folder."""

    def test_readme_import_the_authors_checkpoint(self, mars_folder):
        mars_folder.run("import")
        work = mars_folder.work
        authors = json.loads((work / "runs" / "authors" / "eval-test" / "metrics.json").read_text())
        assert authors["selection"].startswith("imported from VTF-Pretrain.pth") and authors["frames"] == 6
        assert "imported from VTF-Pretrain.pth" in (work / "runs" / "authors" / "report" / "report.md").read_text()


class TestPredict:
    """The prediction block, continuing the MARS folder."""

    def test_readme_predict(self, mars_folder):
        mars_folder.run("predict")
        preds = json.loads((mars_folder.work / "predictions.json").read_text())
        assert [r["tracklet"] for r in preds["records"]] == ["person_0001", "walk"]


class TestExport:
    """The export block, continuing the MARS folder: the run as OpenVINO's int8 and a tracked video with it; a
    prediction with it, and its bad uses."""

    def test_readme_export_predict_and_track(self, mars_folder, tmp_path):
        out = mars_folder.run("export")
        work = mars_folder.work
        doc = json.loads((work / "runs" / "t6-int8" / "export.json").read_text())
        assert doc["format"] == "par-export" and doc["quantization"]["format"] == "openvino-ir"
        tracks = json.loads((work / "people-int8" / "tracks.json").read_text())
        assert tracks["runtime"]["name"] == "openvino" and tracks["runtime"]["quantization"]["precision"] == "int8"
        assert "int8: token cosine" in out  # par track says it ran int8
        assert doc["agreement"]["runtime"] == "openvino" and 0.9 < doc["agreement"]["token_min_cosine"] < 1.0
        assert doc["quantization"]["calibration_frames"] >= 1
        export = work / "runs" / "t6-int8"
        assert file_sha256(export / "encoder.int8.bin") == doc["graphs"]["encoder"]["weights"]["sha256"]
        person = mars_folder.values["PERSON"]  # par predict with the export (in this process)
        said = run_par("predict", person, "--checkpoint", export, "--json", tmp_path / "p.json").stdout
        preds = json.loads((tmp_path / "p.json").read_text())
        assert preds["runtime"]["name"] == "openvino" and "int8: token cosine" in said
        error = one_error_line(run_par("predict", person, "--checkpoint", export, "--runtime", "onnxruntime",
                                       check=False))
        assert "which ONNX Runtime cannot run; use --runtime openvino" in error
        shutil.copytree(export, tmp_path / "no-weights", ignore=shutil.ignore_patterns("encoder.int8.bin"))
        error = one_error_line(run_par("predict", person, "--checkpoint", tmp_path / "no-weights", check=False))
        assert "encoder.int8.bin: missing from the export" in error


class TestFootage:
    """The footage block, continuing the MARS folder."""

    def test_readme_people_in_footage(self, mars_folder):
        """par track on footage (an annotated video, an alert rule), a synthetic scene with ground truth, par
        search."""
        mars_folder.run("footage")
        work = mars_folder.work
        people = json.loads((work / "people" / "tracks.json").read_text())
        assert people["format"] == "par-tracks" and people["tracks"] and (work / "people.mp4").is_file()
        assert [json.loads(line)["event"] for line in (work / "people" / "alerts.jsonl").read_text().splitlines()] \
            == ["alert"] * people["alerts"]["events"]
        assert json.loads((work / "found.json").read_text())["format"] == "par-search"
        scene = json.loads((work / "scene-people" / "tracks.json").read_text())
        assert len(scene["tracks"]) >= 5 and scene["detector"]["kind"] == "file"


class TestCrops:
    """The crops block, continuing the MARS folder: footage -> crops -> manifest -> a token store -> a run trained on
    the people of bbox_train, evaluated on those of bbox_test."""

    def test_readme_crops_train_and_evaluate(self, mars_folder):
        mars_folder.run("crops")
        work = mars_folder.work
        assert TokenStore(work / "crops.zarr").attrs["complete"]
        assert (work / "crops-run" / "best.json").is_file()
        assert json.loads((work / "crops-run" / "eval-test" / "metrics.json").read_text())["format"] == "par-metrics"


class TestLive:
    """The live cameras block, continuing the MARS folder: an RTSP camera with a login (GStreamer's RTSP server,
    switched off after the scene) and a webhook receiver on 127.0.0.1; two files played live under torchrun."""

    def test_readme_live_cameras(self, mars_folder, user_data):
        from test_live import SECRET, Webhook, rtsp_server

        server, camera = rtsp_server(Path(user_data["FOOTAGE"]), user="ann", once=True)
        hook = Webhook()
        try:
            out = mars_folder.run("live", values={"CAMERA": camera, "HOOK": hook.url})
        finally:
            server.kill()
        work = mars_folder.work
        door = json.loads((work / "door" / "tracks.json").read_text())
        assert door["tracks"] and door["live"]["frames_read"] == 40 and door["live"]["ended"].startswith("could not")
        alerts = [json.loads(line) for line in (work / "door" / "alerts.jsonl").read_text().splitlines()]
        assert sorted((a["event"], a["rule"], a["track"]) for a in hook.received) == \
            sorted((a["event"], a["rule"], a["track"]) for a in alerts)
        found = json.loads(run_par("search", work / "door", "backpack", "--json").stdout)["results"]
        final = [a for a in alerts if a["event"] in ("alert", "confirmed")]  # --early-alerts: early ones settle
        assert sorted(a["track"] for a in final if a["rule"] == "backpack") == sorted(r["track"] for r in found)
        early = sorted((a["rule"], a["track"]) for a in alerts if a["event"] == "early")
        assert early == sorted((a["rule"], a["track"]) for a in alerts if a["event"] in ("confirmed", "retracted"))
        for name in ("yard", "street"):  # one rank each
            doc = json.loads((work / "cameras" / name / "tracks.json").read_text())
            assert doc["tracks"] and doc["live"]["camera"] == name and doc["live"]["frames_read"] == 40
        assert (work / "cameras" / "yard" / "tracks.txt").read_text() == \
            (work / "cameras" / "street" / "tracks.txt").read_text()
        assert SECRET not in out and all(SECRET not in p.read_text(errors="replace")
                                         for p in (work / "door").iterdir())


@pytest.fixture(scope="session")
def site_linked(mars_folder, tmp_path_factory) -> tuple[Path, str]:
    """The README's cameras block, continuing the MARS folder (its run's model): a synthetic site, its three
    cameras tracked in one `par track`, `par link`; the folder and what the block printed."""
    def build(base: Path) -> None:
        (base / "out.txt").write_text(mars_folder.run("link"))
    base = shared_once(tmp_path_factory, "readme-link", build)
    return mars_folder.work, (base / "out.txt").read_text()


class TestLink:
    """The same person across cameras: the README's block (`par synth --cameras`, `par track NAME=VIDEO ...`,
    `par link`) and what it wrote."""

    def test_a_synthetic_site_has_global_ids_in_every_camera(self, site_linked):
        site = site_linked[0] / "site"
        doc = json.loads((site / "site.json").read_text())
        assert doc["format"] == "par-site" and [c["name"] for c in doc["cameras"]] == ["cam1", "cam2", "cam3"]
        assert {t["from"] for t in doc["transit"]} == {"cam1", "cam2", "cam3"} and all(
            0 < t["min"] <= t["max"] for t in doc["transit"])
        rows = [line.split(",") for line in (site / "gt.txt").read_text().splitlines()]
        for cam in doc["cameras"]:  # the site's rows are each camera's, ids and boxes unchanged
            own = [line.split(",") for line in (site / cam["name"] / "gt" / "gt.txt").read_text().splitlines()]
            assert [r[1:] for r in rows if r[0] == str(cam["index"])] == [[r[1], r[0], *r[2:6]] for r in own]
            assert {int(r[1]) for r in own} == {p["id"] for p in doc["people"] if cam["name"] in p["cameras"]}
        with open(site / "labels.csv") as f:
            labels = {int(r["person_id"]): r for r in csv.DictReader(f)}
        assert sorted(labels) == [p["id"] for p in doc["people"]] == list(range(1, 7))
        alike = [p for p in doc["people"] if "clothes_of" in p]
        assert alike  # the same clothes: the same attribute row, a figure of its own
        for p in alike:
            mine, theirs = dict(labels[p["id"]]), dict(labels[p["clothes_of"]])
            mine.pop("person_id"), theirs.pop("person_id")
            assert mine == theirs

    def test_par_link_writes_people_with_every_sighting_once(self, site_linked):
        work, out = site_linked
        doc = json.loads((work / "site-people" / "people.json").read_text())
        assert doc["format"] == "par-people" and doc["version"] == 1
        assert [c["name"] for c in doc["cameras"]] == ["cam1", "cam2", "cam3"]
        assert doc["linker"]["cues"] == ["appearance", "colour", "attributes", "time"]
        tracks = {c: json.loads((work / "site-tracks" / c / "tracks.json").read_text())["tracks"]
                  for c in ("cam1", "cam2", "cam3")}
        seen = sorted((x["camera"], x["track"]) for p in doc["people"] for x in p["sightings"])
        assert seen == sorted((c, t["id"]) for c, ts in tracks.items() for t in ts)
        for p in doc["people"]:
            times = [x["first_time"] for x in p["sightings"]]
            assert times == sorted(times) and len(p["links"]) == len(p["sightings"]) - 1
            assert set(p["description"]) == set(doc["groups"])
            for link in p["links"]:
                assert set(link["agreed"]) | set(link["differed"]) == set(doc["groups"])
                assert set(link) >= {"similarity", "appearance", "colour", "attributes"}
        firsts = [p["first_time"] for p in doc["people"]]
        assert firsts == sorted(firsts) and [p["person"] for p in doc["people"]] == list(range(1, len(firsts) + 1))
        rows = (work / "site-people" / "people.txt").read_text().splitlines()
        assert len(rows) == sum(len(t["boxes"]) for ts in tracks.values() for t in ts)
        assert all(len(r.split(",")) == 7 for r in rows)
        with open(work / "site-people" / "people.csv") as f:
            assert len(list(csv.DictReader(f))) == len(doc["people"])
        said = " ".join(out.split())
        assert f"{len(doc['people'])} people in 3 cameras" in said
        found = json.loads(run_par("search", work / "site-people", "backpack = no", "--by", "person", "--json").stdout)
        assert found["by"] == "person" and all(r["scores"]["backpack = no"] > 0.5 for r in found["results"])
        assert ("nobody matches backpack = no" in said) == (not found["results"])  # the README's search, a table

    def test_people_page_shows_each_person_and_searches_as_par_search(self, site_linked, open_page):
        """people.html: a row per person with their crops per camera (each camera's tracks.html crops, at most
        CROPS_PER_CAMERA), a bar per sighting, and the search box answering as `par search --by person`."""
        from par_pipeline.pages.people_page import CROPS_PER_CAMERA
        from par_pipeline.workflows.search import search_people

        work = site_linked[0]
        path = work / "site-people" / "people.html"
        doc = json.loads((work / "site-people" / "people.json").read_text())
        crops = {(c, t["id"]): len(t["frames_used"]) for c in ("cam1", "cam2", "cam3")
                 for t in json.loads((work / "site-tracks" / c / "tracks.json").read_text())["tracks"]}
        opened = open_page(path)
        opened.check_clean(path)
        page = opened.page
        assert page.eval_on_selector_all("#people tbody tr", "rs => rs.map(r => Number(r.dataset.id))") == [
            p["person"] for p in doc["people"]]
        for p in doc["people"]:
            row = page.locator(f'#people tbody tr[data-id="{p["person"]}"]')
            assert row.locator("rect.sighting").count() == len(p["sightings"])
            for camera in p["cameras"]:
                expected = min(CROPS_PER_CAMERA, sum(crops[(x["camera"], x["track"])] for x in p["sightings"]
                                                     if x["camera"] == camera))
                assert row.locator(f'span.camera[data-camera="{camera}"] img').count() == expected
        assert page.locator("#people img").count() > 0
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        first = doc["people"][0]["description"]
        binary = next(g for g in doc["groups"] if g in doc["attributes"])
        multi = next(g for g in doc["groups"] if g not in doc["attributes"])
        for query in (f"{binary} = no", f"{multi} = {first[multi]}", f"not {binary} >= 0.3"):
            page.fill("#query", query)
            expected = search_people(work / "site-people", [query])["results"]
            shown = page.eval_on_selector_all(
                "#people tbody tr:not([hidden])", "rs => rs.map(r => [Number(r.dataset.id), r.cells[7].textContent])")
            assert shown == [[r["person"], f"{r['score']:.3f}"] for r in expected], query
        assert opened.console == []

    def test_the_multi_camera_scores_of_the_bench(self, site_linked):
        """The bench's multi-camera IDF1 of the ground truth itself is 1, of everyone as one person lower."""
        from par_pipeline.tools.link_bench import link_precision_recall, multi_camera_idf1

        site = site_linked[0] / "site"
        rows = [line.split(",") for line in (site / "gt.txt").read_text().splitlines()]
        records = [{"_cam": int(c) - 1, "boxes": [[int(f), float(x), float(y), float(w), float(h)]]}
                   for c, _, f, x, y, w, h in rows]
        truth = np.array([int(r[1]) - 1 for r in rows])
        cameras = ["cam1", "cam2", "cam3"]
        assert multi_camera_idf1(site, records, truth, cameras)["idf1"] == pytest.approx(1.0)
        assert multi_camera_idf1(site, records, np.zeros_like(truth), cameras)["idf1"] < 1.0
        assert link_precision_recall(np.array([0, 0, 1]), np.array([0, 0, 0]), np.array([0, 1, 1])) == {
            "precision": 0.5, "recall": 1.0}

    def test_bad_link_input_is_one_line_and_writes_nothing(self, site_linked, tmp_path):
        work = site_linked[0]
        out = tmp_path / "people"
        cam1, cam2 = work / "site-tracks" / "cam1", work / "site-tracks" / "cam2"
        line = one_error_line(run_par("link", work / "site" / "cam1", "--out", out, check=False))
        assert str(work / "site" / "cam1") in line and "par track" in line
        line = one_error_line(run_par("link", f"door={cam1}", f"door={cam2}", "--out", out, check=False))
        assert "'door' is named twice" in line
        other = tmp_path / "other"
        shutil.copytree(cam2, other)
        doc = json.loads((other / "tracks.json").read_text())
        (other / "tracks.json").write_text(json.dumps({**doc, "checkpoint_sha256": "0" * 64}))
        line = one_error_line(run_par("link", cam1, other, "--out", out, check=False))
        assert "another checkpoint" in line and str(other / "tracks.json") in line
        table = tmp_path / "transit.csv"
        table.write_text("from,to,min,max\ncam1,yard,2,8\n")
        line = one_error_line(run_par("link", work / "site-tracks", "--out", out, "--transit", table, check=False))
        assert f"{table}:2" in line and "'yard'" in line
        line = one_error_line(run_par("link", work / "site-tracks", "--out", out, "--offset", "hall=3", check=False))
        assert "--offset hall" in line
        line = one_error_line(run_par("link", work / "site-tracks", "--out", out, "--cues", "time", check=False))
        assert "--cues" in line
        line = one_error_line(run_par("search", work / "site-tracks", "hat", "--by", "person", check=False))
        assert "no people.json" in line and "par link" in line
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["other", "transit.csv"]


class TestTrackers:
    """The experiment trackers block, continuing the MARS folder (a local MLflow database, W&B offline)."""

    def test_readme_experiment_trackers(self, mars_folder):
        from mlflow import MlflowClient

        mars_folder.run("trackers")
        work = mars_folder.work
        client = MlflowClient(tracking_uri=f"sqlite:///{work}/mlflow.db")
        tracked, t6 = work / "runs" / "tracked", work / "runs" / "t6"
        for run in (tracked, t6):  # trained with --log-to, and exported afterwards
            ids = trackers_of(run)
            assert sorted(ids) == ["mlflow", "tensorboard", "wandb"]
            want = expected_curve(run)["f1"]
            assert mlflow_curve(client, ids["mlflow"]["run_id"])["f1"] == want
            assert wandb_history(run, ids["wandb"]["id"])["f1"] == want
            assert tensorboard_scalars(run / "tensorboard")["f1"] == [(e, pytest.approx(v, rel=1e-7)) for e, v in want]
        # the sweep: a parent run named as the results folder, each point nested under it as its folder's name
        sweep = client.get_experiment_by_name("mars-sweep").experiment_id
        runs = {r.info.run_name: r for r in client.search_runs([sweep])}
        points = sorted(p.name for p in (work / "results-tracked" / "runs").iterdir())
        assert sorted(runs) == sorted([*points, "results-tracked"]) and len(points) == 2
        parent = runs["results-tracked"].info.run_id
        assert all(runs[p].data.tags["mlflow.parentRunId"] == parent for p in points)
        assert {"fusion/T1/f1", "fusion/T6/f1"} <= set(runs["results-tracked"].data.metrics)
        groups = {trackers_of(work / "results-tracked" / "runs" / p)["wandb"]["group"] for p in points}
        assert groups == {trackers_of(work / "results-tracked")["wandb"]["group"]}
