"""Every Makefile target a user runs, as written, in a user's fresh working folder: `make demo` (the README's first
command) and the README's prediction example after it, `make ablation` on the demo's store, `make bench` and `make
track-bench` (whose bench.json is checked here: no timing is asserted, performance figures come from `make bench`
itself), `make clean`. Small sizes come in as Makefile variables through the environment. The demo is made once for
the run; the targets that continue it run in its folder, in groups that two test processes run side by side. `make
test` is what CI runs to run this file."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import par_env, shared_once
from test_readme import EXAMPLE_TRACKLET, NOT_RUN_HERE, ROOT, readme_blocks, readme_predict_example, run_script, workdir

SIZES = {"DEMO_TRACKLETS": "10", "DEMO_FRAMES": "3-6", "DEMO_EPOCHS": "2", "EPOCHS": "1", "SEEDS": "2",
         "FRAMES": "1 2", "BENCH_CLIP": "par-tiny-clip", "BENCH_TRACKLETS": "4", "BENCH_FRAMES": "4",
         "BENCH_EPOCHS": "2", "BENCH_HOST_FRAMES": "256", "BENCH_SWEEP_FRAMES": "1 2", "BENCH_TRAIN_BATCH": "2",
         "BENCH_DEPLOY_SECONDS": "0.05", "TRACK_SEEDS": "1", "TRACK_SECONDS": "3", "TRACK_MINUTES": "0.1",
         "TRACK_CAMERAS": "1", "LINK_CAMERAS": "2", "LINK_SEEDS": "1", "LINK_PEOPLE": "3", "LINK_SECONDS": "6",
         "LINK_SCALE": "300"}


@dataclass
class MadeFolder:
    """A user's folder in which `make demo` ran, and what the make commands printed."""
    work: Path
    out: dict[str, str]


def _made(tmp_path_factory, step: str, commands: list[str]) -> MadeFolder:
    """The demo folder after `commands` ran in it once for the whole test run (the demo first, shared)."""
    def build(base: Path) -> None:
        work = workdir(base) if step == "demo" else demo.work
        (base / "out.txt").write_text(run_script(commands, {}, work, ENV))
    demo = None if step == "demo" else _made(tmp_path_factory, "demo", DEMO)
    base = shared_once(tmp_path_factory, f"make-{step}", build)
    work = base / "work" if demo is None else demo.work
    return MadeFolder(work, {**(demo.out if demo else {}), step: (base / "out.txt").read_text()})


ENV = par_env(SIZES)
DEMO = [line for line in readme_blocks()[0] if line.split("#")[0].strip() not in NOT_RUN_HERE]


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> MadeFolder:
    """`make demo` as the README's first block writes it."""
    assert [line.split("#")[0].strip() for line in readme_blocks()[0]] == ["make demo", "make test"]
    return _made(tmp_path_factory, "demo", DEMO)


@pytest.fixture(scope="session")
def ablation(tmp_path_factory) -> MadeFolder:
    """`make ablation` on the demo's store."""
    return _made(tmp_path_factory, "ablation", ["make ablation"])


@pytest.fixture(scope="session")
def bench(tmp_path_factory) -> MadeFolder:
    """`make bench` in the demo's folder."""
    return _made(tmp_path_factory, "bench", ["make bench"])


@pytest.fixture(scope="session")
def track_bench(tmp_path_factory) -> MadeFolder:
    """`make track-bench` with the demo's model, into a bench folder of its own (so that it runs beside `make
    bench`: both would add to one bench.json)."""
    return _made(tmp_path_factory, "track-bench", ["make track-bench BENCH=track-bench"])


def readme_example_rows() -> list[tuple[str, str]]:
    """(group, answer) rows of the README's example prediction table."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("$ par predict"):]
    block = block[:block.index("```")]
    return re.findall(r"│ (\S[^│]*?)\s+│ (\S[^│]*?) \(\d\.\d\d\)\s+│", block)


class TestMakeDemo:
    """`make demo` (made once for the whole run) and what the README shows after it."""

    def test_make_demo_and_the_readme_prediction_example(self, demo):
        work = demo.work
        assert "majority-value baseline" in demo.out["demo"] and (work / "demo" / "report" / "report.md").is_file()
        assert (work / "demo" / "run" / "eval-test" / "metrics.json").is_file()
        tracklet = sorted((work / "demo" / "mars" / "bbox_test").rglob("*.jpg"))[0].name[:11]
        predicted = run_script([readme_predict_example().replace(EXAMPLE_TRACKLET, tracklet)], {}, work, ENV)
        # the example as a fresh demo prints it: the same groups in the same order, each an answer and its probability
        shown = re.findall(r"│ (\S[^│]*?)\s+│ (\S[^│]*?) \((\d\.\d\d)\)\s+│", predicted)
        assert f"{tracklet} (" in predicted
        assert [g for g, _, _ in shown] == [g for g, _ in readme_example_rows()] and len(shown) == 14

    def test_make_demo_ends_with_a_report_page(self, demo, open_page):
        """`make demo`'s last step writes demo/report/report.html: it opens in the browser, whole."""
        work = demo.work
        path = work / "demo" / "report" / "report.html"
        opened = open_page(path)
        opened.check_clean(path)
        metrics = json.loads((work / "demo" / "run" / "eval-test" / "metrics.json").read_text())
        page = opened.page
        summary = page.eval_on_selector_all("#summary-table tbody tr", "rs => rs.map(r => [r.cells[0].textContent, "
                                            "r.cells[7].textContent])")
        assert summary[1] == [f"{summary[0][0]}: majority-value baseline",
                              f"{100 * metrics['baseline']['protocol']['mean']['f1']:.2f}"]
        assert page.locator(".curve").count() == len(metrics["attributes"])
        assert page.locator('.gallery[data-kind="worst"] .tracklet').count() == min(12, metrics["num_tracklets"])
        assert page.locator(".gallery img").count() > 0 and page.locator(".gallery-note").count() == 0

    def test_readme_screenshots_script(self, demo, tmp_path):
        """scripts/readme_screenshots.py (the README's docs/*.png) after `make demo`: three real screenshots."""
        import sys

        from PIL import Image

        subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_screenshots.py"), str(demo.work / "demo"),
                        str(tmp_path / "shots")], cwd=demo.work, env=ENV, check=True, capture_output=True, timeout=600)
        for name in ("report.png", "report-tracklets.png", "tracks.png"):
            with Image.open(tmp_path / "shots" / name) as im:
                lo, hi = im.convert("L").getextrema()
                assert im.size == (1280, 760) and hi - lo > 100, name


class TestMakeAblation:
    """`make ablation` in the demo's folder."""

    def test_make_ablation(self, ablation):
        results = json.loads((ablation.work / "results" / "ablation.json").read_text())
        assert len(results["rows"]) == 4 and results["seeds"] == 2  # 2 variants x FRAMES "1 2", 2 seeds each
        assert {(r["variant"], r["frames"]) for r in results["rows"]} == {(v, t) for v in ("fusion", "no-fusion")
                                                                          for t in (1, 2)}

    def test_make_ablation_report_page(self, ablation, open_page):
        """`make ablation` ends with results/report/report.html: the paper's Table 1 and Table 3 views and F1 against
        frames with the seed spread, as ablation.json holds them."""
        results = json.loads((ablation.work / "results" / "ablation.json").read_text())
        path = ablation.work / "results" / "report" / "report.html"
        opened = open_page(path)
        opened.check_clean(path)
        page = opened.page
        table3 = page.eval_on_selector_all("#ablation-table3-0 tbody tr",
                                           "rs => rs.map(r => Array.from(r.cells).map(c => c.textContent))")
        by = {(r["variant"], r["frames"]): r for r in results["rows"]}
        from par_pipeline.sweep import load_variants

        labels = {v: d["label"] for v, d in load_variants().items()}
        assert table3 == [[labels[v], *(f"{100 * by[v, t]['f1']:.2f} ± {100 * by[v, t]['f1_std']:.2f}" for t in (1, 2))]
                          for v in ("fusion", "no-fusion")]
        assert page.locator("#ablation-0 ~ svg.chart polyline").count() == 2  # one line per variant
        assert page.locator("#ablation-table1-0 tbody tr").count() == 2


class TestMakeBench:
    """`make bench` in the demo's folder."""

    def test_make_bench_writes_every_documented_figure(self, bench):
        assert "pipeline / model-only" in bench.out["bench"] and "sweep speedup" in bench.out["bench"]
        data = json.loads((bench.work / "bench" / "bench.json").read_text())
        e, t, p, s = data["extract"], data["train"], data["predict"], data["sweep"]
        assert e["raw_floor_bytes"] == 2 * 197 * 512 and e["bytes_over_floor"] <= 1.02
        assert e["int8_bytes_per_frame"] / e["raw_floor_bytes"] <= 0.51
        assert e["chunks"] == [1, 197, 512] and e["pipeline_fps"] > 0 and e["model_only_fps"] > 0
        assert e["dtype_vs_fp32"]["int8"]["min_token_cosine"] >= 0.999 and "bf16" in e["precision_vs_fp32"]
        assert (
            t["store_samples_per_s"] > 0 and t["loader_cold_samples_per_s"] > 0
            and t["int8_loader_warm_samples_per_s"] > 0
        )
        # rows held in memory: the very checkpoint of the disk run (a CPU run), at its own rate
        assert {k: (c["same_checkpoint_as_disk"], c["over_model"] > 0) for k, c in t["cache"].items()} == \
            {"ram": (True, True), "device": (True, True)}
        assert (
            t["disk_random_read"]["one_at_a_time_rows_per_s"] > 0
            and t["checksum_verification"]["ms_per_row_verify_always"] > 0
        )
        assert p["tracklets"] == 4 and set(s["reference_s"]) == {"1", "2"} and s["projected_speedup"] > 0
        assert s["together_same_checkpoints"] is True and s["together_s"] > 0  # the sweep side by side: same runs
        for dtype in ("float16", "int8"):
            host = e["host_loop"][dtype]
            assert host["frames"] > 0 and host["direct"]["frames_per_s"] > 0 and host["zarr"]["frames_per_s"] > 0
        d = data["deploy"]  # every runtime side by side; the exported encoder's tokens are CLIP's
        assert set(d["crops"]) == {"torch fp32", "torch bf16 autocast", "onnxruntime fp32", "onnxruntime int8",
                                   "openvino fp32", "openvino int8", "openvino int8 nncf static"}
        assert all(r["crops_per_s"] > 0 for r in d["crops"].values()) and set(d["fusion"]) == \
            {"torch fp32", "onnxruntime", "openvino"}
        assert d["crops"]["onnxruntime fp32"]["token_min_cosine"] > 0.9999
        assert d["crops"]["onnxruntime int8"]["token_min_cosine"] > 0.99
        assert "onnxruntime int8" in bench.out["bench"]
        assert d["detectors"]["torchvision:ssdlite320_mobilenet_v3_large"]["frames_per_s"] > 0



class TestMakeTrackBench:
    """`make track-bench` in the demo's folder, beside `make bench`."""

    def test_make_track_bench(self, track_bench):
        """`make track-bench` with the demo's model: every documented figure in bench.json (tracking, then linking
        cameras)."""
        bench = track_bench
        data = json.loads((bench.work / "track-bench" / "bench.json").read_text())
        k = data["track"]
        assert k["seeds"] == 1 and k["checkpoint"] == "demo/run"
        # a 4 s scene is too short to score the tracking; the figures are there and in range
        assert 0 <= k["ground_truth_idf1"]["mean"] <= 1 and k["ground_truth_mota"]["mean"] <= 1
        assert 0 <= k["tracklet_f1"]["mean"] <= 1 and 0 <= k["per_frame_vote_f1"]["mean"] <= 1
        assert set(k["stage_share"]) >= {"decode", "detect", "track", "crop", "clip", "fusion"}
        assert abs(sum(k["stage_share"].values()) - 1) < 1e-6 and k["frames_per_s"] > 0
        assert set(k["peak_memory_mb"]) == {"0.1 min"} and "track peak memory" in bench.out["track-bench"]
        live = k["live"]  # `par track --live` on the scene: delays, drops at 1x/2x/4x, cameras, memory
        assert live["delay_s"]["median"] is not None and live["delay_s"]["p95"] >= live["delay_s"]["median"] > 0
        assert set(live["dropped"]) == {"1x", "2x", "4x"} and all(0 <= d < 1 for d in live["dropped"].values())
        assert live["cameras_without_dropping"] >= 0 and set(live["peak_memory_mb"]) == {"0.1 min"}
        assert "live: cameras at 10 fps followed without dropping" in " ".join(bench.out["track-bench"].split())
        agree = live["file_agreement"]  # live and file mode on the same footage, no frame dropped: the same answers
        assert agree["dropped"] == 0 and agree["group_agreement"]["mean"] == agree["same_frames"]["mean"] == 1.0
        assert "live vs file on the same footage" in " ".join(bench.out["track-bench"].split())
        link = data["link"]  # par link on a synthetic site: every linker's figures, in range; the scale run timed
        assert list(link["sites"]) == ["2 cameras"] and link["seeds"] == 1 and link["checkpoint"] == "demo/run"
        for detector in ("ground_truth", "motion"):
            row = link["sites"]["2 cameras"][detector]
            assert set(row) == {"par", "par_no_appearance", "par_no_colour", "par_no_attributes", "par_no_time",
                                "par_no_same_camera_gap", "par_live", "par_live_on_arrival", "pp_human"}
            assert all(0 <= m[k]["mean"] <= 1 for m in row.values() for k in ("idf1", "idp", "idr", "precision",
                                                                                 "recall"))
        assert list(link["scale"]) == ["day", "hour"]
        assert all(v["tracks"] == 300 and v["seconds"] > 0 and v["people"] >= 1 for v in link["scale"].values())


class TestMakeClean:
    """`make clean` and the demo folder rule, in a copy of the demo's folder."""

    def test_make_clean_and_the_demo_folder_rule(self, demo, ablation, bench, tmp_path):
        """`make demo` replaces only its own folder (its recipe's replacement step, with the pipeline's commands
        stood in for by `true`), refuses a folder it did not make, and `make clean` removes only what the Makefile
        made: in a copy of the folder the other make tests read."""
        work = workdir(tmp_path)
        for name in ("demo", "results", "bench"):
            shutil.copytree(demo.work / name, work / name, symlinks=True)
        run_script(["make demo PAR=true"], {}, work, ENV)
        assert sorted(p.name for p in (work / "demo").iterdir()) == [".par-demo"]  # the earlier demo was replaced
        (work / "mine").mkdir()
        out = run_script(["make clean DEMO=mine"], {}, work, ENV)
        assert (work / "mine").is_dir() and "kept mine" in out and not (work / "results").exists()
        run_script(["make clean"], {}, work, ENV)
        assert not (work / "demo").exists() and not (work / "bench").exists()
        (work / "other").mkdir()
        (work / "other" / "x").write_text("x")
        proc = subprocess.run(["make", "demo", "DEMO=other"], cwd=work, env=ENV, capture_output=True, text=True)
        assert proc.returncode != 0 and (work / "other" / "x").read_text() == "x"
