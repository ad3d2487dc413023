"""tracks.html: every person `par track` followed in one video (or every run of a live folder), with a strip of their
crops, when they were seen, their attributes, and a search box that reads conditions as `par search` does: the
page's script takes the patterns of the one grammar (footage/conditions.py, data_manifests/grammar/conditions.json)
and follows its rules; a browser test holds the two to the same answers."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ..footage.conditions import grammar
from .render import render_page


def seconds_text(frame: int, fps: float) -> str:
    """Frame numbers count from 1; the time is that of the frame's start."""
    s = (frame - 1) / fps if fps else 0.0
    return f"{int(s // 60)}:{s % 60:04.1f}"


def tracks_html(doc: dict[str, Any], thumbnails: dict[int, list[str]]) -> str:
    """The page for one tracks.json record (README: tracks.html); `thumbnails` holds each track's crops of the frames
    its attributes were computed from, as data: URIs."""
    people = [{"id": t["id"], "run": t.get("run"), "first": t["first_frame"], "last": t["last_frame"],
               "frames": t["frames"],
               "start": seconds_text(t["first_frame"], doc["fps"]), "end": seconds_text(t["last_frame"], doc["fps"]),
               "description": t["description"], "confidence": t["confidence"], "line": t["line"],
               "thumbnails": thumbnails.get(t["id"], [])} for t in doc["tracks"]]
    search_data = {"groups": doc["groups"], "attributes": doc["attributes"], "grammar": grammar(),
                   "people": [{"id": t["id"], "description": t["description"], "probabilities": t["probabilities"]}
                              for t in doc["tracks"]]}
    return render_page("tracks.html.j2", doc=doc, people=people, search_data=search_data)


class _StripReader(HTMLParser):
    """Each row's crops (`<tr data-id data-run>` ... `<td class="strip"><img src>`) of a tracks.html that par wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.crops: dict[tuple[int, str | None], list[str]] = {}
        self.row: tuple[int, str | None] | None = None
        self.in_strip = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-id", "").isdigit():
            self.row = (int(a["data-id"]), a.get("data-run"))
            self.crops[self.row] = []
        elif tag == "td":
            self.in_strip = self.row is not None and a.get("class") == "strip"
        elif tag == "img" and self.in_strip and self.row is not None and (a.get("src") or "").startswith("data:"):
            self.crops[self.row].append(a["src"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self.in_strip = False
        elif tag == "tr":
            self.row = None


def page_thumbnails(page: Path) -> dict[tuple[int, str | None], list[str]]:
    """The crops tracks.html shows for each (track, run): people.html shows them again, so a link needs neither the
    videos nor a second copy of the crops. A missing page is no crops."""
    if not page.is_file():
        return {}
    reader = _StripReader()
    reader.feed(page.read_text(errors="replace"))
    return reader.crops
