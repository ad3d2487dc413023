"""Which tracklets a run trains on, holds out for validation and evaluates: the training split's tracklets with
readable frames, a seeded fraction of its persons held out whole (`--val-fraction`), and `val`, the split `par eval`
scores those held-out persons as."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ParError
from ..store.reader import TokenStore


def split_validation(
    store: TokenStore, train_idx: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) tracklets: a `fraction` of the training persons, drawn with `seed`, held out whole."""
    if fraction <= 0:
        return train_idx, np.zeros(0, dtype=np.int64)
    persons = np.unique(store.person_ids[train_idx])
    held = np.random.default_rng([seed, 11]).permutation(persons)[:max(1, int(round(fraction * len(persons))))]
    is_val = np.isin(store.person_ids[train_idx], held)
    if is_val.all():
        raise ParError(f"--val-fraction {fraction}: every training person would be held out; use a smaller fraction")
    return train_idx[~is_val], train_idx[is_val]


def training_and_validation(store: TokenStore, train_split: str, fraction: float, seed: int
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The tracklets a run trains on and the ones it holds out for validation (`--val-fraction`): training tracklets
    with readable frames, split by person. `par eval --split val` scores the same held-out tracklets."""
    train_idx = store.indices(train_split)
    train_idx = train_idx[store.valid_counts(train_idx) > 0]
    return split_validation(store, train_idx, fraction, seed)


HELD_OUT_SPLIT = "val"


def split_indices(store: TokenStore, split: str, meta: dict[str, Any], store_path: str) -> np.ndarray:
    """A store split's tracklets; `val` (when the store has no split of that name) is the training persons the run
    held out with --val-fraction, drawn again exactly as training drew them."""
    if split != HELD_OUT_SPLIT or split in store.splits:
        return store.indices(split)
    tc = meta["train_config"]
    if not tc.get("val_fraction"):
        raise ParError(f"{meta['_path']}: this run held out no validation persons (trained without --val-fraction), "
                       f"and {store_path} has no '{split}' split; evaluate another split, or train with --val-fraction")
    return training_and_validation(store, tc["train_split"], tc["val_fraction"], tc["seed"])[1]
