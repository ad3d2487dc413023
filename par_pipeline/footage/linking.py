"""The same person across cameras: tracks of several cameras linked into people by appearance, colour, attributes
and time.

Every pair of tracks gets, as whole matrices (no Python loop over pairs):
- appearance: the cosine of the tracks' appearances (their mean CLIP image embeddings, records' `appearance`);
- colour: the cosine of their colour histograms (chromaticity of the upper and lower body, records' `colour`);
- attributes: the cosine of their answer distributions' square roots (per group: a yes/no group p and 1 - p, a
  multi-valued group its values' probabilities normalised; the Bhattacharyya coefficient's vectors);
  each of the three after the sightings' mean is removed (`centred`; per camera for `camera_centred` cues: the
  colour, as each camera has its own colour response), so what every track shares does not count;
- a conflict: a group both tracks answer confidently (the answer's probability >= `confident`) and differently. A
  conflict forbids the pair: a confident "backpack" and a confident "no backpack" are not one person. Groups that
  describe the moment rather than the person (`moment_groups`: pose, motion; a camera sees a walker from its own
  side) take part in neither;
- time: two tracks that overlap in time cannot be one person (cameras whose views overlap are not modelled), nor two
  tracks of different cameras closer in time than the pair's minimum transit, nor two tracks of one camera further
  apart than `same_camera_gap` (a person passes a camera once on a visit; a track the tracker lost and found again
  is the exception: its gaps are short, while someone dressed alike passing the same camera soon after is the
  commonest wrong link there is).
The similarity is the weighted mean of the cues used; tracks are joined by complete linkage (a group's distance is
its farthest pair's, so no forbidden pair ever ends in one person) while the closest groups are nearer than the
threshold. A join must also keep each of the person's consecutive sightings within the transit window of their
cameras (`--max-gap`, or the pair's max in a transit table): that rule is about consecutive sightings only, which
is why the clustering is par's own loop over joins (one numpy row update a join) and not scipy's `linkage`, which
can only forbid pairs. It also means that sightings with a quiet window between them (nobody seen for longer than
any transit) cannot be one person: each such part of the day is linked on its own (`visits`). PP-Human's method
(`baseline_labels`) is kept beside it for the benchmark.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..resources import load_json

CUES = ("appearance", "colour", "attributes", "time")
SIMILARITY_CUES = ("appearance", "colour", "attributes")
FAR = np.float32(np.inf)


@dataclass
class Sightings:
    """Every track of every camera, a row each."""
    cameras: list[str]
    camera: np.ndarray  # [n] int: index into cameras
    track: np.ndarray  # [n] int: the track's id in its folder
    start: np.ndarray  # [n] float: seconds on the site's clock
    end: np.ndarray  # [n] float
    appearance: np.ndarray  # [n, D] float32, unit length
    colour: np.ndarray  # [n, C] float32, unit length
    probs: np.ndarray  # [n, A] float32
    groups: list[list[int]]  # per attribute group its columns of `probs`
    group_names: list[str]
    value_names: list[list[str]]

    def __len__(self) -> int:
        return len(self.camera)


@dataclass(frozen=True)
class LinkRules:
    """How `par link` decides (defaults: data_manifests/linking/default.json)."""
    threshold: float  # join while the similarity of the closest groups is at least this
    weights: dict[str, float]  # each similarity cue's weight (appearance, colour, attributes)
    confident: float  # an answer this probable (or more) is confident: two confident answers that differ conflict
    max_gap: float  # seconds from a sighting's end to the next sighting's start, in another camera
    same_camera_gap: float  # seconds from a sighting's end to the next one in the same camera (a track lost, found)
    moment_groups: tuple[str, ...] = ()  # groups that describe the moment (pose, motion), not the person: not compared
    camera_centred: tuple[str, ...] = ()  # cues centred per camera (each camera's colour response is its own)
    cues: tuple[str, ...] = CUES
    transit: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)  # (from, to) -> min, max s

    @property
    def window(self) -> float:
        """The most seconds between a person's sighting and their next one, any cameras."""
        return max([self.max_gap, self.same_camera_gap, *(most for _, most in self.transit.values())])

    def record(self, cameras: list[str]) -> dict[str, Any]:
        return {"cues": list(self.cues), "threshold": self.threshold, "weights": self.weights,
                "confident": self.confident, "max_gap_s": self.max_gap,
                "same_camera_gap_s": self.same_camera_gap, "moment_groups": list(self.moment_groups),
                "camera_centred": list(self.camera_centred),
                "transit": [{"from": cameras[a], "to": cameras[b], "min": lo, "max": hi}
                            for (a, b), (lo, hi) in sorted(self.transit.items())]}


def default_rules(**given: Any) -> LinkRules:
    """The shipped defaults (data_manifests/linking/default.json), with what is given instead."""
    d = load_json("linking", "default")
    values = {k: d[k] for k in ("threshold", "weights", "confident", "max_gap", "same_camera_gap")}
    values["moment_groups"] = tuple(d["moment_groups"])
    values["camera_centred"] = tuple(d["camera_centred"])
    values.update({k: v for k, v in given.items() if v is not None})
    return LinkRules(**values)


CENTRE_PRIOR = 4  # the mean removed is sum / (n + CENTRE_PRIOR): a few sightings keep most of what they share


Totals = dict[tuple[str, int], tuple[np.ndarray, int]]  # (cue, camera or ALL_CAMERAS) -> (sum, count)
ALL_CAMERAS = -1


def centring_totals(s: Sightings, rules: LinkRules) -> Totals:
    """What the cues are centred by: each cue's sum and count over the sightings, per camera for the cues that are
    centred per camera (`camera_centred`). Totals add up, so the live linker keeps them for everything seen."""
    out: Totals = {}
    for cue, v in similarity_vectors(s, rules).items():
        v = v.astype(np.float64)
        if cue in rules.camera_centred:
            for k in np.unique(s.camera).tolist():
                mine = s.camera == k
                out[(cue, k)] = (v[mine].sum(0), int(mine.sum()))
        else:
            out[(cue, ALL_CAMERAS)] = (v.sum(0), len(v))
    return out


def add_totals(a: Totals, b: Totals) -> Totals:
    return {k: (a[k][0] + b[k][0], a[k][1] + b[k][1]) if k in a and k in b else a.get(k) or b[k]
            for k in {*a, *b}}


def centred(vectors: np.ndarray, camera: np.ndarray, totals: Totals, cue: str) -> np.ndarray:
    """Unit vectors less their mean, normalised again: what every track shares (the scene's light and background,
    a CLIP embedding's common direction) stops counting as likeness; for a cue centred per camera, what every
    track of the camera shares (its colour response). The mean is shrunk towards zero (CENTRE_PRIOR), so two
    sightings alone are not pushed apart by their own mean."""
    v = vectors.astype(np.float64)
    if (cue, ALL_CAMERAS) in totals:
        summed, count = totals[(cue, ALL_CAMERAS)]
        v = v - summed[None, :] / (count + CENTRE_PRIOR)
    else:
        for k in np.unique(camera).tolist():
            summed, count = totals[(cue, k)]
            v[camera == k] -= summed[None, :] / (count + CENTRE_PRIOR)
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def group_columns(groups: list[str], attributes: list[str]) -> tuple[list[list[int]], list[list[str]]]:
    """Per group its attribute columns and its answers' names, from a tracks.json's `groups` and `attributes` (a
    yes/no group is its own attribute; a multi-valued group's attributes are `GROUP VALUE`)."""
    columns, values = [], []
    for g in groups:
        if g in attributes:
            columns.append([attributes.index(g)])
            values.append(["no", "yes"])
        else:
            cols = [k for k, a in enumerate(attributes) if a.startswith(g + " ")]
            columns.append(cols)
            values.append([attributes[k][len(g) + 1:] for k in cols])
    return columns, values


def answer_distributions(s: Sightings, moment_groups: tuple[str, ...] = ()) -> list[np.ndarray]:
    """Per group that describes the person (not `moment_groups`) [n, V] the distribution of its answers (yes/no:
    1 - p, p; several values: normalised)."""
    out = []
    for name, cols in zip(s.group_names, s.groups):
        if name in moment_groups:
            continue
        p = s.probs[:, cols].astype(np.float64)
        if len(cols) == 1:
            out.append(np.concatenate([1 - p, p], axis=1))
        else:
            out.append(p / np.maximum(p.sum(1, keepdims=True), 1e-12))
    return out


BLOCK = 256  # rows of the pair matrix computed at once: temporaries of ~BLOCK x n, small enough (~20 MB at n =
# 10,000) to be reused from the heap; 1,024 made them mmap'd anew for each block, twice as slow on a first call


@dataclass
class Cues:
    """Per sighting what the pair scores are made of: each similarity cue's centred unit vectors, and the
    confident answers (a group's one-hot answer where it is confident, else zeros)."""
    vectors: dict[str, np.ndarray]  # cue -> [n, d] float32
    sure: np.ndarray  # [n, G] float32: 1 where the group's answer is confident
    answers: np.ndarray  # [n, sum of the groups' values] float32: the confident answers, one-hot

    def pair(self, rules: LinkRules, i: int, j: int) -> dict[str, float]:
        """Two sightings' similarity and each cue's cosine (people.json's links)."""
        each = {cue: float(v[i] @ v[j]) for cue, v in self.vectors.items()}
        used = {k: rules.weights.get(k, 0.0) for k in each if k in rules.cues}
        return {"similarity": sum(w * each[k] for k, w in used.items()) / max(sum(used.values()), 1e-12), **each}


def similarity_vectors(s: Sightings, rules: LinkRules) -> dict[str, np.ndarray]:
    """Each similarity cue's unit vectors before centring (the attributes': their distributions' square roots)."""
    dists = answer_distributions(s, rules.moment_groups)
    roots = np.concatenate([np.sqrt(d) for d in dists], axis=1).astype(np.float32)
    roots /= np.maximum(np.linalg.norm(roots, axis=1, keepdims=True), 1e-12)
    return {"appearance": s.appearance, "colour": s.colour, "attributes": roots}


def cues_of(s: Sightings, rules: LinkRules, totals: Totals | None = None) -> Cues:
    """`totals`: what to centre with (`centring_totals`), when not these sightings' own."""
    totals = totals if totals is not None else centring_totals(s, rules)
    dists = answer_distributions(s, rules.moment_groups)
    sure = np.concatenate([(d.max(1, keepdims=True) >= rules.confident) for d in dists], axis=1).astype(np.float32)
    answers = np.concatenate([np.eye(d.shape[1], dtype=np.float32)[d.argmax(1)] * sure[:, [g]]
                              for g, d in enumerate(dists)], axis=1)
    return Cues({cue: centred(v, s.camera, totals, cue) for cue, v in similarity_vectors(s, rules).items()},
                sure, answers)


def link_distances(s: Sightings, cues: Cues, rules: LinkRules, among: np.ndarray | None = None) -> np.ndarray:
    """[n, n] float32 over the sightings `among` (default: all): 1 - the pair's similarity (the weighted mean of
    the cues' cosines: one product of the cues' vectors scaled by the square roots of their weights), +inf where
    time forbids the pair. Attribute conflicts are checked when two groups are about to join (`_conflict_free`):
    only the few pairs that come that close need it."""
    among = np.arange(len(s)) if among is None else among
    n = len(among)
    used = {k: rules.weights.get(k, 0.0) for k in SIMILARITY_CUES if k in rules.cues}
    total = max(sum(used.values()), 1e-12)
    x = np.concatenate([np.sqrt(w / total) * cues.vectors[k][among] for k, w in used.items() if w > 0] or
                       [np.zeros((n, 1), np.float32)], axis=1).astype(np.float32)
    start, end, camera = s.start[among], s.end[among], s.camera[among]
    timed = "time" in rules.cues
    least = np.zeros((len(s.cameras),) * 2, dtype=np.float32)
    for (i, j), (lo, _) in rules.transit.items():
        least[i, j] = lo
    dist = np.empty((n, n), dtype=np.float32)
    for r0 in range(0, n, BLOCK):
        rows = slice(r0, min(n, r0 + BLOCK))
        block = dist[rows]
        np.matmul(x[rows], x.T, out=block)
        np.subtract(1.0, block, out=block)
        cam = camera[rows, None]
        after = start[None, :] - end[rows, None]  # from the row's end to the column's start
        before = start[rows, None] - end[None, :]  # from the column's end to the row's start
        gap = np.maximum(after, before)  # <= 0 while the two overlap in time
        same_camera = cam == camera[None, :]
        # one camera never sees one person twice at once; with time, no camera does, and one camera sees a person
        # once on a visit, but for a track lost and found again (same_camera_gap)
        forbidden = gap <= 0 if timed else same_camera & (gap <= 0)
        if timed:
            forbidden |= same_camera & (gap > rules.same_camera_gap)
        if timed and rules.transit:  # closer in time than the pair's least transit, either way
            pair, back = least[cam, camera[None, :]], least[camera[None, :], cam]
            forbidden |= ~same_camera & (((after >= 0) & (after < pair)) | ((before >= 0) & (before < back)))
        np.copyto(block, FAR, where=forbidden)
    np.fill_diagonal(dist, FAR)
    return dist


def _conflict_free(cues: Cues, members: np.ndarray) -> bool:
    """No two of these sightings answer a group confidently and differently (both confident, minus both
    confident and the same)."""
    sure, answers = cues.sure[members], cues.answers[members]
    return bool(((sure @ sure.T - answers @ answers.T) < 0.5).all())


def _gaps_allowed(s: Sightings, members: np.ndarray, rules: LinkRules) -> bool:
    """Each sighting of a person and the next in time within their cameras' transit window (`same_camera_gap`
    within one camera): a person's sightings form one visit, so what is linked is decided within a bounded window
    of time (what lets the live linker forget, `OnlineLinker`, and a day link as many small parts, `visits`)."""
    order = members[np.argsort(s.start[members], kind="stable")]
    for a, b in zip(order[:-1], order[1:]):
        ca, cb = int(s.camera[a]), int(s.camera[b])
        _, most = rules.transit.get((ca, cb), (0.0, rules.same_camera_gap if ca == cb else rules.max_gap))
        if s.start[b] - s.end[a] > most:
            return False
    return True


def visits(s: Sightings, rules: LinkRules) -> list[np.ndarray]:
    """The sightings cut where nobody was seen for longer than the transit window (`LinkRules.window`): no
    person's consecutive sightings can straddle such a cut (`_gaps_allowed`), so each part links on its own, as
    it would among all (a day of a site is many small problems, not one n x n matrix)."""
    order = np.argsort(s.start, kind="stable")
    if "time" not in rules.cues or len(order) < 2:
        return [order]
    latest = np.maximum.accumulate(s.end[order])  # the end of everything started so far
    cuts = np.flatnonzero(s.start[order][1:] - latest[:-1] > rules.window) + 1
    return np.split(order, cuts)


def _join(s: Sightings, cues: Cues, rules: LinkRules, among: np.ndarray) -> list[np.ndarray]:
    """The people among these sightings (each an array of sightings): complete linkage over `link_distances`,
    a join refused where it breaks the transit window or an attribute conflict."""
    n = len(among)
    dist = link_distances(s, cues, rules, among)
    members: dict[int, np.ndarray] = {i: np.array([i]) for i in range(n)}
    nearest = dist.argmin(1)
    near = dist[np.arange(n), nearest]
    limit = 1.0 - rules.threshold
    while True:
        a = int(near.argmin())
        if not near[a] <= limit:
            break
        b = int(nearest[a])
        joined = np.concatenate([members[a], members[b]])
        if ("time" in rules.cues and not _gaps_allowed(s, among[joined], rules)) or (
                "attributes" in rules.cues and not _conflict_free(cues, among[joined])):
            dist[a, b] = dist[b, a] = FAR  # these two groups stay apart; each looks for its next nearest
        else:
            members[a] = joined
            del members[b]
            row = np.maximum(dist[a], dist[b])  # complete linkage: the farthest pair
            row[a] = FAR
            dist[a], dist[:, a] = row, row
            dist[b], dist[:, b] = FAR, FAR
            near[b] = FAR
        # rows whose nearest was one of the two (a row with nothing in reach stays so: distances only grow)
        stale = np.flatnonzero(((nearest == a) | (nearest == b)) & (near < FAR))
        if len(stale):
            nearest[stale] = dist[stale].argmin(1)
            near[stale] = dist[stale, nearest[stale]]
    return [among[m] for m in members.values()]


def link_labels(s: Sightings, rules: LinkRules, totals: Totals | None = None) -> tuple[np.ndarray, Cues]:
    """The person of every sighting (0 .. P-1, numbered by first appearance) and the cues behind it."""
    cues = cues_of(s, rules, totals)
    people = [m for part in visits(s, rules) if len(part) for m in _join(s, cues, rules, part)]
    labels = np.empty(len(s), dtype=np.int64)
    for person, m in enumerate(sorted(people, key=lambda m: (s.start[m].min(), int(m.min())))):
        labels[m] = person
    return labels, cues


def baseline_labels(s: Sightings, threshold: float = 0.5) -> np.ndarray:
    """PP-Human's cross-camera link (MTMCT): each track's mean appearance feature, cosine distance, every pair of one
    camera masked, complete-linkage agglomerative clustering cut at a distance of `threshold`; no time, no
    attributes. Numbered as `link_labels` numbers people."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = len(s)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    dist = np.clip(1.0 - s.appearance @ s.appearance.T, 0.0, 2.0).astype(np.float64)
    dist[s.camera[:, None] == s.camera[None, :]] = 10.0  # masked: above any cut
    np.fill_diagonal(dist, 0.0)
    clusters = fcluster(linkage(squareform(dist, checks=False), "complete"), threshold, criterion="distance")
    first = {c: s.start[clusters == c].min() for c in np.unique(clusters)}
    order = {c: k for k, c in enumerate(sorted(first, key=lambda c: (first[c], int(np.argmax(clusters == c)))))}
    return np.array([order[c] for c in clusters], dtype=np.int64)
