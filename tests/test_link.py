"""`par link`'s decisions on sightings built by hand, each rule alone (the README's block runs the command on a
synthetic site: test_readme.py's TestLink)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from par_pipeline.errors import ParError
from par_pipeline.footage import linking
from par_pipeline.footage.linking import LinkRules, Sightings, baseline_labels, default_rules, link_labels, visits
from par_pipeline.tools.link_bench import scale_sightings
from par_pipeline.workflows.link import parse_weights, read_transit

GROUPS = [[0], [1, 2, 3]]  # backpack (yes/no); top color: red, blue, black


def sightings(cameras: list[int], times: list[tuple[float, float]], looks: list[np.ndarray],
              backpack: list[float] | None = None, probs: np.ndarray | None = None) -> Sightings:
    n = len(cameras)
    app = np.stack(looks).astype(np.float32)
    app /= np.linalg.norm(app, axis=1, keepdims=True)
    if probs is None:
        probs = np.tile(np.array([0.5, 0.8, 0.1, 0.1], dtype=np.float32), (n, 1))
    if backpack is not None:
        probs[:, 0] = backpack
    return Sightings([f"cam{k}" for k in range(max(cameras) + 1)], np.array(cameras), np.arange(1, n + 1),
                     np.array([t[0] for t in times], float), np.array([t[1] for t in times], float), app, app, probs,
                     GROUPS, ["backpack", "top color"], [["no", "yes"], ["red", "blue", "black"]])


def rules(**kw) -> LinkRules:
    return LinkRules(**{**default_rules().__dict__, **kw})


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_a_site_with_known_identities_links_to_them():
    """Six people walking through three cameras (some through two), each seen as their own appearance and answers
    plus noise: par's link and PP-Human's both find them; the people are numbered by their first sighting."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 64))
    answers = np.concatenate([rng.uniform(0.05, 0.85, size=(6, 1)), rng.dirichlet(np.ones(3), size=6)], axis=1)
    cams, times, looks, truth = [], [], [], []
    for person in range(6):
        t = 10.0 * person
        for cam in range(3 if person % 2 == 0 else 2):
            cams.append(cam)
            times.append((t, t + 4))
            looks.append(base[person] + 0.3 * rng.normal(size=64))
            truth.append(person)
            t += 4 + 3  # a 3 s walk to the next camera
    probs = answers[truth] + rng.uniform(-0.05, 0.05, size=(len(truth), 4))
    s = sightings(cams, times, looks, probs=probs.clip(0.01, 0.89).astype(np.float32))
    labels, _ = link_labels(s, default_rules())
    assert same_partition(labels, np.array(truth)) and labels[0] == 0
    assert same_partition(baseline_labels(s), np.array(truth))


def test_two_people_alike_seen_at_the_same_moment_by_two_cameras_are_not_merged():
    """Identical appearance and attributes, in two cameras whose views do not overlap, at once: two people. Only
    the time cue knows it: without it they are one."""
    look = np.ones(16)
    s = sightings([0, 1], [(5.0, 9.0), (6.0, 10.0)], [look, look])
    assert len(set(link_labels(s, default_rules())[0])) == 2
    assert len(set(link_labels(s, rules(cues=("appearance", "colour", "attributes")))[0])) == 1


def test_a_conflict_in_a_confident_attribute_blocks_a_merge():
    """The same look a few seconds apart: a confident backpack and a confident no backpack stay two people; answers
    that differ without confidence, or the attributes left out, let them merge."""
    look = np.ones(16)
    times = [(0.0, 4.0), (8.0, 12.0)]
    confident = sightings([0, 1], times, [look, look], backpack=[0.97, 0.02])
    assert len(set(link_labels(confident, default_rules())[0])) == 2
    assert len(set(link_labels(confident, rules(cues=("appearance", "colour", "time")))[0])) == 1
    unsure = sightings([0, 1], times, [look, look], backpack=[0.7, 0.3])
    assert len(set(link_labels(unsure, default_rules())[0])) == 1


def test_the_transit_window_holds_between_consecutive_sightings():
    """A -> B -> C 15 s apart each with --max-gap 20: one person, although A and C are 30 s apart (a rule on pairs
    would split them); without B, A and C stay apart. A transit table's minimum forbids a walk that is too fast."""
    look = np.ones(16)
    chain = sightings([0, 1, 2], [(0.0, 4.0), (19.0, 23.0), (38.0, 42.0)], [look] * 3)
    assert len(set(link_labels(chain, rules(max_gap=20.0))[0])) == 1
    ends = sightings([0, 2], [(0.0, 4.0), (38.0, 42.0)], [look] * 2)
    assert len(set(link_labels(ends, rules(max_gap=20.0))[0])) == 2
    assert len(set(link_labels(ends, rules(max_gap=40.0))[0])) == 1
    too_fast = rules(max_gap=40.0, transit={(0, 2): (40.0, 60.0), (2, 0): (40.0, 60.0)})
    assert len(set(link_labels(ends, too_fast)[0])) == 2


def test_one_camera_sees_a_person_once_on_a_visit_but_finds_a_lost_track_again():
    """Two people alike pass one camera 3 s apart: two people (someone dressed alike passing the same camera soon
    after is the commonest wrong link); a track the tracker lost and found again 0.5 s later is one person.
    --same-camera-gap says how far apart is too far; without the time cue the rule is not applied."""
    look = np.ones(16)
    found_again = sightings([0, 0], [(0.0, 4.0), (4.5, 8.0)], [look] * 2)
    assert len(set(link_labels(found_again, default_rules())[0])) == 1
    alike = sightings([0, 0], [(0.0, 4.0), (7.0, 11.0)], [look] * 2)
    assert len(set(link_labels(alike, default_rules())[0])) == 2
    assert len(set(link_labels(alike, rules(same_camera_gap=5.0))[0])) == 1
    assert len(set(link_labels(alike, rules(cues=("appearance", "colour", "attributes")))[0])) == 1
    table = Path(tempfile.mkdtemp()) / "transit.csv"
    table.write_text("from,to,min,max\ncam0,cam0,0,5\n")
    with pytest.raises(ParError, match="transit.csv:2: a transit row joins two cameras; one camera's gap is "
                                       "--same-camera-gap"):
        read_transit(table, ["cam0", "cam1"])


def test_a_day_links_as_its_visits_each_on_its_own_exactly_as_all_at_once(monkeypatch):
    """Sightings with a quiet transit window between them cannot be one person, so a day is linked as its visits,
    each its own small problem: the same people, numbered alike, as one n x n problem gives."""
    s = scale_sightings(800, seed=1)
    parts = visits(s, default_rules())
    assert len(parts) > 20 and sorted(np.concatenate(parts).tolist()) == list(range(800))
    assert len(visits(s, rules(cues=("appearance", "colour", "attributes")))) == 1  # no time, no window
    by_visit, _ = link_labels(s, default_rules())
    monkeypatch.setattr(linking, "visits", lambda s, rules: [np.argsort(s.start, kind="stable")])
    assert (link_labels(s, default_rules())[0] == by_visit).all()


def test_weights_are_cue_weight_pairs():
    """--weights names similarity cues with weights >= 0, at least one above 0; a cue not named weighs 0."""
    assert parse_weights("appearance=1, attributes=2.5") == {"appearance": 1.0, "colour": 0.0, "attributes": 2.5}
    assert parse_weights(None) is None
    for bad in ("time=1", "colour=-1", "colour", "colour=x", "colour=0"):
        with pytest.raises(ParError, match="--weights"):
            parse_weights(bad)


def people_walking(n: int, seconds_apart: float, seed: int = 0) -> tuple[Sightings, np.ndarray]:
    """`n` people, each through cameras 0 then 1 (3 s walk), one every `seconds_apart` s, looks their own."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 32))
    answers = np.concatenate([rng.uniform(0.05, 0.85, size=(n, 1)), rng.dirichlet(np.ones(3), size=n)], axis=1)
    cams, times, looks, truth = [], [], [], []
    for person in range(n):
        t = seconds_apart * person
        for cam in (0, 1):
            cams.append(cam)
            times.append((t, t + 4))
            looks.append(base[person] + 0.3 * rng.normal(size=32))
            truth.append(person)
            t += 7
    probs = (answers[truth] + rng.uniform(-0.05, 0.05, size=(len(truth), 4))).clip(0.01, 0.89)
    return sightings(cams, times, looks, probs=probs.astype(np.float32)), np.array(truth)


def test_the_live_link_is_the_offline_link_and_forgets_who_cannot_be_joined():
    """Arriving one by one, within one transit window: the live linker's last link is par link's (the same people).
    People far apart in time settle and leave it: it holds a window's people, not the run's."""
    from par_pipeline.footage.online_linking import replay

    s, truth = people_walking(6, 10.0)
    offline, _ = link_labels(s, default_rules())
    last, first, held = replay(s, default_rules())
    assert same_partition(last, offline) and len(set(offline.tolist())) >= 4
    assert held == len(s)  # nothing settled before the end: every row stayed open
    far, truth = people_walking(30, 100.0, seed=1)
    rules = default_rules(max_gap=20.0)
    last, first, held = replay(far, rules)
    assert same_partition(last, truth) and same_partition(link_labels(far, rules)[0], last)
    assert held <= 4  # a person's two sightings and the next person's
    assert (first[::2] == last[::2]).all()  # a person's first sighting had their number when it arrived


def test_a_live_person_keeps_the_number_they_arrived_with():
    """Numbers are given as people arrive and stay theirs: someone seen first but whose track ends last (a long
    stay in view) arrives last and gets the last number, and nobody already numbered is renumbered for them
    (`par link` numbers by first sighting: the same people, other numbers); a person linked to an earlier one
    takes that one's number."""
    from par_pipeline.footage.online_linking import replay

    e = np.eye(16)
    # 0: a long stay in camera 0 (0-30 s); 1, 2: one person through cameras 1 and 2 (5-8 s, 11-14 s); 3: another
    s = sightings([0, 1, 2, 1], [(0.0, 30.0), (5.0, 8.0), (11.0, 14.0), (16.0, 19.0)], [e[0], e[1], e[1], e[2]])
    offline, _ = link_labels(s, default_rules())
    last, first, _ = replay(s, default_rules())
    assert same_partition(last, offline) and last[1] == last[2] and len(set(last.tolist())) == 3
    assert (first == last).all()  # every record kept the number it arrived with
    assert last.tolist() == [2, 0, 0, 1] and offline.tolist() == [0, 1, 1, 2]  # by arrival, not by first sighting


def test_a_route_alerts_when_the_link_makes_it_and_retracts_when_the_settled_link_does_not(tmp_path):
    """door > yard: a yard record linked to an earlier door record alerts at once; when a later yard record turns
    out nearer and the settled person is two yard sightings, the alert is retracted."""
    from par_pipeline.footage.live_link import LiveLink, parse_routes, route_end
    from par_pipeline.footage.records import _vector_text

    assert route_end(("door", "yard"), [(5, "yard", "a"), (1, "door", "b"), (9, "yard", "c")]) == "a"
    assert route_end(("door", "yard"), [(1, "yard", "a"), (3, "yard", "c")]) is None
    assert parse_routes("door > yard, yard>door", ["door", "yard"]) == [("door", "yard"), ("yard", "door")]
    for bad in ("door", "door > hall", "door > door"):
        with pytest.raises(ParError, match="--alert-route"):
            parse_routes(bad, ["door", "yard"])
    alerts: list[dict] = []
    link = LiveLink(tmp_path, {"door": (1, 1000.0), "yard": (1, 1000.0)},
                    ["backpack", "top color red", "top color blue", "top color black"], ["backpack", "top color"],
                    rules(weights={"colour": 1.0}, threshold=0.3), lambda: 1000.0, [("door", "yard")],
                    alerts.append)
    e = np.eye(8)

    def record(track: int, t0: float, t1: float, colour: np.ndarray) -> dict:
        colour = colour / np.linalg.norm(colour)
        return {"id": track, "first_time": t0, "last_time": t1, "line": f"track {track}",
                "appearance": _vector_text(colour), "colour": _vector_text(colour),
                "probabilities": {"backpack": 0.5, "top color red": 0.2, "top color blue": 0.3, "top color black": 0.5}}
    for k in range(4):  # others, so that the site's mean is not the three below (nobody settles before the end)
        link.arrived("door", record(10 + k, 100.0 + 10 * k, 101.0 + 10 * k, e[4 + k]))
    link.arrived("door", record(1, 0.0, 4.0, e[0]))
    link.arrived("yard", record(2, 7.0, 11.0, 0.6 * e[0] + 0.8 * e[1]))
    assert [(a["event"], a["rule"], a["camera"], a["track"]) for a in alerts] == [("alert", "door > yard", "yard", 2)]
    assert alerts[0]["sightings"] == [{"camera": "door", "track": 1}, {"camera": "yard", "track": 2}]
    link.arrived("yard", record(3, 12.0, 13.0, 0.3 * e[0] + e[1]))
    summary = link.finish()
    assert [(a["event"], a["track"]) for a in alerts] == [("alert", 2), ("retracted", 2)]
    assert link.people[("yard", 1, 2)] == link.people[("yard", 1, 3)] != link.people[("door", 1, 1)]
    assert summary["route_alerts"] == 1 and summary["routes"] == ["door > yard"]
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["alert", "retracted"] and lines[0]["format"] == "par-alert"
