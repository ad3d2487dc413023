"""Synthetic data: frames whose evidence varies, both layouts, and Duke through every stage."""
import csv
import json

import numpy as np
import pytest

from conftest import needs_shared, run_par

SMALL = ["--model", "vtf-par-small", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--frames", "3",
         "--fusion-init", "random"]


def test_frames_of_a_tracklet_differ_in_evidence():
    """The same tracklet's frames show different things (pose, occluders, exposure): no two frames are alike, and
    a share of tracklets carries a frame of another person or of no one, flagged as MARS flags it."""
    from par_pipeline.resources import load_json
    from par_pipeline.tools.synth import plan_random, render_frame

    plan = plan_random("mars", 60, (6, 6), seed=3)
    spec, nuisance = load_json("synth", "mars"), load_json("synth", "frames")
    t = plan[0]
    frames = [np.asarray(render_frame(t, i, 256, 128, spec, nuisance), dtype=np.int16) for i in range(6)]
    assert min(np.abs(a - b).mean() for k, a in enumerate(frames) for b in frames[k + 1:]) > 2
    share = sum(bool(t.distractor) for t in plan) / len(plan)
    assert 0.03 < share < 0.3 and {t.distractor for t in plan} >= {"", "wrong-target", "target-miss"}


def test_synth_csv_flags_and_columns(tmp_path):
    from par_pipeline.data.schema import load_schema
    from par_pipeline.tools.synth import plan_random, write_synth

    plan = plan_random("mars", 20, (2, 2), seed=3)
    write_synth(tmp_path / "d", plan, workers=1)
    rows = list(csv.DictReader(open(tmp_path / "d" / "mars_attributes.csv")))
    assert list(rows[0]) == list(load_schema("mars").csv_columns)
    flagged = {(int(r["person_id"]), int(r["camera_id"]), int(r["tracklets_id"])) for r in rows
               if r["wrong-target"] == "1" or r["target-miss"] == "1"}
    assert flagged == {(t.person_id, t.camera_id, t.tracklet_no) for t in plan if t.distractor}


def test_duke_through_every_stage(duke, tmp_path):
    """Duke through training, evaluation, prediction and the ablation: 36 attributes and 12 groups in every output
    (the README's Duke commands run as written in test_readme)."""
    root, store = duke["root"], duke["store"]
    assert (root / "gallery").is_dir() and (root / "duke_attributes.csv").is_file()
    header = json.loads(duke["manifest"].read_text().splitlines()[0])
    assert len(header["attributes"]) == 36 and len(header["groups"]) == 12
    run_par("train", store, "--out", tmp_path / "run", *SMALL)
    ev = run_par("eval", store, "--checkpoint", tmp_path / "run")
    assert "top color" in ev.stdout
    metrics = json.loads((tmp_path / "run" / "eval-test" / "metrics.json").read_text())
    assert len(metrics["protocol"]["groups"]) == 12 and len(metrics["standard"]["label_mA_per_attribute"]) == 36
    assert len((tmp_path / "run" / "eval-test" / "groups.csv").read_text().splitlines()) == 1 + 12 + 1
    folder = next((root / "gallery").glob("*/*"))
    run_par("predict", folder, "--checkpoint", tmp_path / "run", "--json", tmp_path / "p.json")
    rec = json.loads((tmp_path / "p.json").read_text())["records"][0]
    assert len(rec["probabilities"]) == 36 and len(rec["description"]) == 12
    run_par("ablation", store, "--out", tmp_path / "res", "--sweep-frames", "2", "--variants", "fusion",
            *SMALL[:-4], "--fusion-init", "random")
    assert "12 attribute groups" in (tmp_path / "res" / "ablation.md").read_text()


def test_like_duke_uses_the_real_annotation(tmp_path):
    duke = needs_shared("duke")
    run_par("synth", tmp_path / "like", "--like-duke", duke, "--tracklets", "5", "--frames-per-tracklet", "2-3",
            "--workers", "1")
    run_par("manifest", "duke", tmp_path / "like", "--out", tmp_path / "m.jsonl")
    from par_pipeline.data.layouts import read_attribute_csv
    from par_pipeline.data.manifest import read_manifest
    from par_pipeline.data.schema import load_schema

    real = {
        (k[0], k[1]): v[0].tolist()
        for k, v in read_attribute_csv(duke / "duke_attributes.csv", load_schema("duke")).items()
    }
    m = read_manifest(tmp_path / "m.jsonl")
    assert len(m.split("train")) == 5 and len(m.split("test")) == 5
    for r in m.records:  # a person seen by one camera more than once has one label set: check it is theirs
        assert r.labels in [v for (p, c), v in real.items() if p == r.person_id and c == r.camera_id]


@pytest.mark.parametrize("layout", ["mars", "duke"])
def test_synth_refuses_existing_output(tmp_path, layout):
    (tmp_path / "d").mkdir()
    proc = run_par("synth", tmp_path / "d", "--layout", layout, "--tracklets", "2", check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr
