"""The README's screenshots, after `make demo`: report.html's curves and tracklets, and tracks.html of a synthetic
street scene searched by its first person's colours.
Usage: python scripts/readme_screenshots.py [DEMO [OUT]] (default: demo docs).

Headless Debian chromium through Playwright, as the page tests use it (`make browser` installs it)."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.main import run  # noqa: E402  (the repository root first, so that this checkout's par runs)


def par(*args: object) -> None:
    code = run([str(a) for a in args])
    if code:
        raise SystemExit(f"par {' '.join(map(str, args))} failed ({code})")


def main(demo: Path, out: Path) -> None:
    from par_pipeline.pages.browser import headless_chromium

    demo, out = demo.resolve(), out.resolve()
    report = demo / "report" / "report.html"
    if not report.is_file():
        raise SystemExit(f"{report} missing: run `make demo` first")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the page names the video as given: street/video.mp4
        scene, people = Path("street"), Path(tmp) / "people"
        par("synth", scene, "--video", "--people", 6, "--seconds", 12, "--seed", 4)
        par("track", scene / "video.mp4", "--checkpoint", demo / "run", "--out", people, "--detections",
            scene / "gt" / "gt.txt")
        first = json.loads((people / "tracks.json").read_text())["tracks"][0]["description"]
        query = f"top color = {first['top color']}, bottom color = {first['bottom color']}"  # someone matches
        with headless_chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 760})
            page.goto(report.resolve().as_uri())
            for name, anchor in (("report.png", "#curves"), ("report-tracklets.png", "#gallery")):
                # the section's top, with its heading and legend above it in view
                page.evaluate(f"window.scrollTo(0, document.querySelector('{anchor}').offsetTop - 90)")
                page.screenshot(path=str(out / name))
            page.goto((people / "tracks.html").resolve().as_uri())
            page.fill("#query", query)
            page.screenshot(path=str(out / "tracks.png"))
    print(f"wrote {out}/report.png, report-tracklets.png, tracks.png")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]) if args else ROOT / "demo", Path(args[1]) if len(args) > 1 else ROOT / "docs")
