"""people.html: every person `par link` found across the cameras, with their crops per camera (the ones each
camera's tracks.html shows), a timeline of their sightings on the site's clock, their fused attributes, and the
search box of tracks.html (one grammar, the same script: templates/search.js.j2)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..footage.conditions import grammar
from .render import PALETTE, render_page
from .tracks_page import page_thumbnails

TIMELINE = (320, 18)  # width, height of a person's timeline, pixels
CROPS_PER_CAMERA = 4  # a person's crops shown per camera: their first sightings' first crops


def clock_text(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def people_html(doc: dict[str, Any], folders: dict[str, Path]) -> str:
    """The page for one people.json (README: people.html); `folders` maps each camera to its `par track` folder,
    whose tracks.html holds the crops."""
    crops = {name: page_thumbnails(folder / "tracks.html") for name, folder in folders.items()}
    colour = {c["name"]: PALETTE[k % len(PALETTE)] for k, c in enumerate(doc["cameras"])}
    people = doc["people"]
    t0 = min((p["first_time"] for p in people), default=0.0)
    span = max(max((p["last_time"] for p in people), default=0.0) - t0, 1e-9)
    width, height = TIMELINE
    rows = []
    for p in people:
        strips: dict[str, list[str]] = {}
        for x in p["sightings"]:
            run = x.get("run")
            shown = crops.get(x["camera"], {}).get((x["track"], None if run is None else str(run)), [])
            strip = strips.setdefault(x["camera"], [])
            strip.extend(shown[: CROPS_PER_CAMERA - len(strip)])
        bars = [{"x": (x["first_time"] - t0) / span * width,
                 "width": max((x["last_time"] - x["first_time"]) / span * width, 2.0),
                 "colour": colour[x["camera"]],
                 "title": f"{x['camera']} track {x['track']}: {clock_text(x['first_time'])}-"
                          f"{clock_text(x['last_time'])}"} for x in p["sightings"]]
        rows.append({"id": p["person"], "cameras": p["cameras"], "strips": strips, "bars": bars,
                     "first": p["first_time"], "last": p["last_time"], "start": clock_text(p["first_time"]),
                     "end": clock_text(p["last_time"]), "sightings": len(p["sightings"]),
                     "description": p["description"], "line": p["line"]})
    search_data = {"groups": doc["groups"], "attributes": doc["attributes"], "grammar": grammar(),
                   "people": [{"id": p["person"], "description": p["description"],
                               "probabilities": p["probabilities"]} for p in people]}
    several = sum(len(p["cameras"]) > 1 for p in people)
    return render_page("people.html.j2", doc=doc, people=rows, several=several, colour=colour, timeline=TIMELINE,
                       clock=(clock_text(t0), clock_text(t0 + span)), search_data=search_data)
