"""tracks.html: every person `par track` followed in one video (or every run of a live folder), with a strip of their
crops, when they were seen, their attributes, and a search box that reads conditions as `par search` does: the
page's script takes the patterns of the one grammar (footage/conditions.py, data_manifests/grammar/conditions.json)
and follows its rules; a browser test holds the two to the same answers."""
from __future__ import annotations

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
