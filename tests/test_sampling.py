"""The frame-choice rule (data/sampling.py): evenly spaced frames as numpy's linspace, and the keyed random draw of
training: uniform without replacement (with it when a tracklet is short), nested prefixes across T, one view per
frame, and a tracklet's draw independent of the batch that asks for it. The statistics are over fixed keys, so the
figures are the same on every machine."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from par_pipeline.data.sampling import MAX_BATCH, evenly_spaced, keyed_draws, keyed_uniform, sample_frames

# chi-square critical values at p = 0.001 (a correct draw fails 1 time in 1,000 key sets; these keys are fixed)
CHI2_999 = {4: 18.47, 9: 27.88, 14: 36.12}


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_keys_are_splitmix64():
    """The key of one part is SplitMix64 of it (its published first output for seed 0), so draws are the same on
    every machine and numpy version."""
    assert int(keyed_uniform(0)) == 0xE220A8397B1DCDAF
    assert keyed_uniform(3, np.arange(4)).shape == (4,)
    assert len(set(keyed_uniform(0, 1, np.arange(10_000)).tolist())) == 10_000


def test_evenly_spaced_is_rounded_linspace():
    for t in range(1, 17):
        n = np.arange(1, 400)
        expected = np.stack([np.linspace(0, k - 1, t).round().astype(np.int64) for k in n])
        assert np.array_equal(evenly_spaced(n, t), expected)
        assert np.array_equal(sample_frames(37, t, None), expected[36])


def test_draw_is_uniform_without_replacement():
    """n = 6, T = 2 over 30,000 tracklets: each of the 15 pairs equally likely, never a frame twice; each frame
    equally likely for T = 1."""
    tracklets = np.arange(30_000)
    picks, _ = keyed_draws(np.full(len(tracklets), 6), 2, 1, seed=0, epoch=3, tracklets=tracklets)
    assert (picks[:, 0] < picks[:, 1]).all()
    pairs = {p: i for i, p in enumerate(itertools.combinations(range(6), 2))}
    counts = np.bincount([pairs[tuple(p)] for p in picks.tolist()], minlength=15)
    assert chi_square(counts) < CHI2_999[14]
    single, _ = keyed_draws(np.full(len(tracklets), 10), 1, 1, seed=0, epoch=3, tracklets=tracklets)
    assert chi_square(np.bincount(single[:, 0], minlength=10)) < CHI2_999[9]


def test_short_tracklets_draw_with_replacement():
    """n < T: T positions among n, with repeats, sorted, each position equally likely."""
    tracklets = np.arange(20_000)
    picks, _ = keyed_draws(np.full(len(tracklets), 5), 8, 1, seed=1, epoch=0, tracklets=tracklets)
    assert picks.min() == 0 and picks.max() == 4 and (np.diff(picks, axis=1) >= 0).all()
    assert (np.diff(picks, axis=1) == 0).any(axis=1).all()  # 8 among 5: always a repeat
    assert chi_square(np.bincount(picks.reshape(-1), minlength=5)) < CHI2_999[4]


def test_draws_are_nested_and_views_belong_to_frames():
    """T = 1, 2, 4 are prefixes of T = 6's draw (for tracklets of at least 6 frames), and a frame carries the same
    view for every T; views are uniform over the stored ones."""
    rng = np.random.default_rng(0)
    counts = rng.integers(6, 300, size=5_000)
    tracklets = rng.permutation(100_000)[:5_000]
    views = np.full(5_000, 5)
    big, big_views = keyed_draws(counts, 6, views, seed=2, epoch=7, tracklets=tracklets)
    view_of = [dict(zip(p, v)) for p, v in zip(big.tolist(), big_views.tolist())]
    for t in (1, 2, 4):
        small, small_views = keyed_draws(counts, t, views, seed=2, epoch=7, tracklets=tracklets)
        for b in range(len(counts)):
            assert set(small[b]) <= set(big[b])
            assert [view_of[b][p] for p in small[b].tolist()] == small_views[b].tolist()
    assert chi_square(np.bincount(big_views.reshape(-1), minlength=5)) < CHI2_999[4]
    assert big.max() < 300 and (big < counts[:, None]).all()


def test_a_tracklets_draw_does_not_depend_on_its_batch():
    """The same (seed, epoch, tracklet) draws the same frames alone, in any batch, in any order, however the batch
    is split; another epoch or seed draws others."""
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 120, size=300)
    tracklets = np.arange(300) * 7
    views = rng.integers(1, 4, size=300)
    picks, view = keyed_draws(counts, 4, views, seed=0, epoch=2, tracklets=tracklets)
    for b in (0, 17, 299):
        alone = keyed_draws(counts[b:b + 1], 4, views[b:b + 1], seed=0, epoch=2, tracklets=tracklets[b:b + 1])
        assert np.array_equal(alone[0][0], picks[b]) and np.array_equal(alone[1][0], view[b])
    order = rng.permutation(300)
    shuffled = keyed_draws(counts[order], 4, views[order], seed=0, epoch=2, tracklets=tracklets[order])
    assert np.array_equal(shuffled[0], picks[order]) and np.array_equal(shuffled[1], view[order])
    assert MAX_BATCH >= 65_536
    many = np.tile(np.arange(300), MAX_BATCH // 300 + 1)[:MAX_BATCH + 5]  # more than one sort's worth
    split = keyed_draws(counts[many], 4, views[many], seed=0, epoch=2, tracklets=tracklets[many])
    assert np.array_equal(split[0], picks[many]) and np.array_equal(split[1], view[many])
    other_epoch = keyed_draws(counts, 4, views, seed=0, epoch=3, tracklets=tracklets)[0]
    other_seed = keyed_draws(counts, 4, views, seed=1, epoch=2, tracklets=tracklets)[0]
    wide = counts >= 20
    assert (other_epoch != picks).any(axis=1)[wide].mean() > 0.9
    assert (other_seed != picks).any(axis=1)[wide].mean() > 0.9


def test_an_empty_tracklet_cannot_be_drawn():
    with pytest.raises(ValueError, match="no valid frames"):
        keyed_draws(np.array([3, 0]), 2, 1, seed=0, epoch=0, tracklets=np.array([0, 1]))


def test_store_rows_of_valid_frames(views_store):
    """TokenStore's table of valid frames (built once, in array operations) gives each tracklet's readable frames
    and their rows, as the per-tracklet definition does, with frames skipped at extraction left out."""
    from par_pipeline.store.reader import TokenStore

    s = TokenStore(views_store)
    s.frame_ok = np.random.default_rng(0).random(len(s.frame_ok)) > 0.3  # as if a third were skipped
    indices = np.arange(len(s))
    expected = [np.flatnonzero(s.frame_ok[s.rows(i, np.arange((s.offsets[i + 1] - s.offsets[i]) // s.views[i]))])
                for i in indices]
    assert all(np.array_equal(s.valid_frames(i), e) for i, e in zip(indices, expected))
    assert s.valid_counts(indices).tolist() == [len(e) for e in expected]
    assert sorted(s.valid_rows(indices).tolist()) == sorted(r for i, e in zip(indices, expected)
                                                           for r in s.rows(i, e).tolist())
    every_view = [r for i, e in zip(indices, expected) for v in range(s.views[i]) for r in s.rows(i, e, v).tolist()]
    assert sorted(s.valid_rows(indices, all_views=True).tolist()) == sorted(every_view)
    train = s.indices("train")
    held = train[s.valid_counts(train) > 0]
    assert (s.views[held] > 1).all()
    picks = np.zeros((len(held), 2), dtype=np.int64)
    picks[:, 1] = s.valid_counts(held) - 1
    rows = s.rows_of_picks(held, picks, 1)
    assert rows.tolist() == [[s.row(i, e[0], 1), s.row(i, e[-1], 1)] for i, e in zip(held, (expected[i] for i in held))]
