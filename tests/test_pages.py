"""report.html and tracks.html opened in a real browser (headless Debian chromium through Playwright): they load from
disk without console errors or network requests, their tables, charts and images are there, the figures on them
match an independent recomputation from predictions.npz / tracks.json, sorting and the search box work, and the
search box answers exactly as `par search` does."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import one_error_line, run_par, tiny_train


@pytest.fixture(scope="module")
def reported(store_path, tmp_path_factory):
    """A run that held out validation persons, evaluated on test and on those persons, and its report."""
    work = tmp_path_factory.mktemp("pages")
    run = work / "run"
    tiny_train(store_path, run, val_fraction=0.4, epochs=1)
    run_par("eval", store_path, "--checkpoint", run)
    run_par("eval", store_path, "--checkpoint", run, "--split", "val")
    run_par("report", run, "--out", work / "report")
    return run, work / "report"


def _f1(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall, F1 of one column, written out (precision 1 when nothing is predicted)."""
    tp = int(np.sum(pred & gt))
    p = tp / int(pred.sum()) if pred.sum() else 1.0
    r = tp / int(gt.sum()) if gt.sum() else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _cells(page, selector: str) -> list[list[str]]:
    return page.eval_on_selector_all(selector, "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent))")


def test_report_page_figures_match_the_predictions(reported, open_page, tmp_path):
    run, out = reported
    path = out / "report.html"
    opened = open_page(path)
    opened.check_clean(path)
    page = opened.page
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    z = np.load(run / "eval-test" / "predictions.npz")
    probs, labels = z["probs"], z["labels"].astype(bool)
    val = np.load(run / "eval-val" / "predictions.npz")
    attributes, t = metrics["attributes"], metrics["threshold"]

    summary = _cells(page, "#summary-table tbody tr")
    assert summary[0][0].startswith("run: best") and summary[0][7] == f"{100 * metrics['protocol']['mean']['f1']:.2f}"

    groups = _cells(page, "#groups-0 tbody tr")
    assert groups == [[g["name"], g["kind"], *(f"{100 * g[k]:.2f}" for k in ("precision", "recall", "f1", "mA",
                                                                              "accuracy"))]
                      for g in metrics["protocol"]["groups"]]

    rows = _cells(page, "#attributes-0 tbody tr")
    assert [r[0] for r in rows] == attributes
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    for j, row in enumerate(rows):
        p, r, f1 = _f1(probs[:, j] > t, labels[:, j])
        assert row[1:5] == [str(int(labels[:, j].sum())), f"{100 * p:.2f}", f"{100 * r:.2f}", f"{100 * f1:.2f}"], row
        # tuned on the held-out persons only (the lowest threshold of the best F1), then applied to test
        val_f1 = [_f1(val["probs"][:, j] > g, val["labels"][:, j].astype(bool))[2] for g in grid]
        best = int(np.argmax(val_f1))
        assert row[6:9] == [f"{grid[best]:.2f}", f"{100 * val_f1[best]:.2f}",
                            f"{100 * _f1(probs[:, j] > grid[best], labels[:, j])[2]:.2f}"], row

    curves = page.locator(".curve")
    assert curves.count() == len(attributes) and page.locator(".curve svg polyline").count() == 2 * len(attributes)

    schema = json.loads((run / "best.json").read_text())["schema_definition"]
    age = next(g for g in schema["groups"] if g["name"] == "age")
    s, k = attributes.index(age["attributes"][0]["name"]), age["values"]
    counts = np.zeros((k, k), int)
    for truth, prob in zip(labels[:, s:s + k], probs[:, s:s + k]):
        if truth.any():
            counts[int(np.argmax(truth)), int(np.argmax(prob))] += 1
    shown = _cells(page, 'table.confusion[data-group="age"] tbody tr')
    assert [[int(c) for c in r[1:]] for r in shown] == counts.tolist()

    worst = page.locator('.gallery[data-kind="worst"] .tracklet')
    per_tracklet = []
    for pr, gt in zip(probs > t, labels):
        inter = int(np.sum(pr & gt))
        p, r = inter / max(pr.sum(), 1e-20), inter / max(gt.sum(), 1e-20)
        per_tracklet.append(2 * p * r / (p + r) if p + r else 0.0)
    assert worst.count() == min(12, len(probs))
    assert float(worst.first.get_attribute("data-f1")) == pytest.approx(min(per_tracklet), abs=1e-9)
    assert worst.first.get_attribute("data-tracklet") == list(z["tracklets"])[int(np.argmin(per_tracklet))]
    assert page.locator(".gallery img").count() > 0
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")

    header = page.locator("#attributes-0 thead th", has_text="F1").first
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    f1s = [float(r[4]) for r in _cells(page, "#attributes-0 tbody tr")]
    assert f1s == sorted(f1s, reverse=True)
    page.screenshot(path=str(tmp_path / "report.png"))
    with Image.open(tmp_path / "report.png") as im:
        lo, hi = im.convert("L").getextrema()
        assert im.size == (1300, 900) and hi - lo > 100  # not a blank page


def test_report_says_when_the_frames_are_not_reachable(reported, open_page, tmp_path):
    run, _ = reported
    out = tmp_path / "rep"
    run_par("report", run, "--out", out, "--manifest", tmp_path / "moved.jsonl")
    opened = open_page(out / "report.html")
    opened.check_clean(out / "report.html")
    note = opened.page.locator(".gallery-note").first.text_content()
    assert "Thumbnails are not shown" in note and "moved.jsonl: manifest not found" in note
    assert opened.page.locator(".gallery img").count() == 0 and opened.page.locator(".gallery .tracklet").count() > 0


def test_no_held_out_persons_no_tuned_threshold(store_path, run_path, tmp_path, open_page):
    """A run trained without --val-fraction has no validation split to evaluate, so nothing is tuned."""
    res = run_par("eval", store_path, "--checkpoint", run_path, "--split", "val", "--out", tmp_path / "e", check=False)
    assert res.returncode == 2 and "held out no validation persons" in one_error_line(res)
    assert not (tmp_path / "e").exists()
    run_par("eval", store_path, "--checkpoint", run_path, "--out", tmp_path / "e")
    run_par("report", tmp_path / "e", "--out", tmp_path / "rep")
    page = open_page(tmp_path / "rep" / "report.html").page
    header = page.eval_on_selector_all("#attributes-0 thead th", "hs => hs.map(h => h.textContent)")
    assert header == ["attribute", "positives", "precision", "recall", "F1", "label mA"]
    assert "No tuned threshold" in page.locator("#attributes ~ p.note").first.text_content()
    assert page.locator(".curve line[stroke-dasharray]").count() == 0  # no tuned-threshold rule on any chart


def _queries(doc: dict) -> list[str]:
    """Conditions that some of this video's people meet and some do not, of every form par search reads."""
    first, binary = doc["tracks"][0], [g for g in doc["groups"] if g in doc["attributes"]]
    multi = [g for g in doc["groups"] if g not in doc["attributes"]]
    p = sorted(t["probabilities"][binary[0]] for t in doc["tracks"])
    return [binary[0], f"{binary[1]} = no", f"{multi[0]} = {first['description'][multi[0]]}",
            f"{binary[0]} >= {p[len(p) // 2]:.4f}",
            f"{multi[1]} = {first['description'][multi[1]]}, {binary[2]} = {first['description'][binary[2]]}",
            f"{binary[0]} and {multi[0]} = {first['description'][multi[0]]} >= 0.1",
            f"not {binary[0]}", f"NOT {multi[0]} = {first['description'][multi[0]]}",
            f"{binary[1]} = no, not {binary[2]} and {binary[0]}", f"not {binary[0]} >= 0.3"]


def binary_group(doc: dict) -> str:
    return next(g for g in doc["groups"] if g in doc["attributes"])


def test_tracks_page_and_its_search(tracked, open_page, tmp_path):
    tracked = tracked / "out"
    from par_pipeline.workflows.search import search

    path = tracked / "tracks.html"
    opened = open_page(path)
    opened.check_clean(path)
    page = opened.page
    doc = json.loads((tracked / "tracks.json").read_text())
    ids = [t["id"] for t in doc["tracks"]]
    assert page.eval_on_selector_all("#people tbody tr", "rs => rs.map(r => Number(r.dataset.id))") == ids
    assert page.locator("#people img").count() == sum(len(t["frames_used"]) for t in doc["tracks"])
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator("#status").text_content() == f"{len(ids)} people"

    matched_some = False
    for query in _queries(doc):
        page.fill("#query", query)
        expected = search(tracked, [query])["results"]  # the one grammar, read by par search
        shown = page.eval_on_selector_all(
            "#people tbody tr:not([hidden])", "rs => rs.map(r => [Number(r.dataset.id), r.cells[6].textContent])")
        assert shown == [[r["track"], f"{r['score']:.3f}"] for r in expected], query
        assert page.locator("#status").text_content() == f"{len(expected)} of {len(ids)} people match"
        matched_some |= 0 < len(expected) < len(ids)
    assert matched_some  # the queries told people apart

    page.fill("#query", "hats")
    assert "no attribute group 'hats'" in page.locator("#status").text_content()
    page.fill("#query", f"{binary_group(doc)} = maybe")
    assert f"write '{binary_group(doc)}', '{binary_group(doc)} = no' or 'not {binary_group(doc)}'" in \
        page.locator("#status").text_content()
    page.fill("#query", f"{doc['groups'][0]} >= 2")
    assert "between 0 and 1" in page.locator("#status").text_content()
    assert opened.console == []
    page.fill("#query", "")
    page.screenshot(path=str(tmp_path / "tracks.png"))
    with Image.open(tmp_path / "tracks.png") as im:
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100


def test_tracks_page_escapes_names_from_the_footage(tracked, tmp_path, open_page):
    tracked = tracked / "out"
    """A video named like markup is shown as text, not run."""
    from par_pipeline.pages.tracks_page import tracks_html

    doc = json.loads((tracked / "tracks.json").read_text())
    doc["source"] = "<img src=x onerror=alert(1)>.mp4"
    (tmp_path / "t.html").write_text(tracks_html(doc, {}))
    opened = open_page(tmp_path / "t.html")
    opened.check_clean(tmp_path / "t.html")
    assert opened.page.locator("h1").text_content() == f"People in {doc['source']}"


def test_report_refuses_damaged_predictions_and_names_a_foreign_manifest(reported, manifest_path, tmp_path,
                                                                         open_page):
    import shutil as sh

    run, _ = reported
    copy = tmp_path / "eval"
    sh.copytree(run / "eval-test", copy)
    data = (copy / "predictions.npz").read_bytes()
    (copy / "predictions.npz").write_bytes(data[: len(data) // 2])
    res = run_par("report", copy, "--out", tmp_path / "rep", check=False)
    assert res.returncode == 2
    assert one_error_line(res).startswith(f"error: {copy / 'predictions.npz'}: missing or damaged")
    assert not (tmp_path / "rep").exists()
    # another manifest than the store's: the page says so instead of showing another dataset's frames
    other = tmp_path / "other.jsonl"
    lines = manifest_path.read_text().splitlines()
    other.write_text("\n".join(lines[:-1]) + "\n")
    run_par("report", run, "--out", tmp_path / "rep2", "--manifest", other)
    opened = open_page(tmp_path / "rep2" / "report.html")
    assert "is not the manifest" in opened.page.locator(".gallery-note").first.text_content()
    assert opened.page.locator(".gallery img").count() == 0
