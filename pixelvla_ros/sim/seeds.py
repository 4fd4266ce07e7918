"""Episode seeds: training and held-out evaluation seeds are disjoint by construction.

``episode_seed(split, index)`` maps a split and an index to a seed: train seeds are ``index`` in
[0, 2**40), eval seeds are ``2**40 + index``. ``split_of_seed`` inverts it, and ``check_seed`` raises
:class:`SeedSplitError` when a seed of one split is used for the other (e.g. an eval seed for training).
"""

from __future__ import annotations

SPLITS = ("train", "eval")
SPLIT_SPAN = 2**40
_BASE = {"train": 0, "eval": SPLIT_SPAN}


class SeedSplitError(ValueError):
    """A seed was used for a split it does not belong to."""


def episode_seed(split: str, index: int) -> int:
    if split not in _BASE:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    index = int(index)
    if not 0 <= index < SPLIT_SPAN:
        raise ValueError(f"index must be in [0, {SPLIT_SPAN}), got {index}")
    return _BASE[split] + index


def split_of_seed(seed: int) -> str:
    seed = int(seed)
    if 0 <= seed < SPLIT_SPAN:
        return "train"
    if SPLIT_SPAN <= seed < 2 * SPLIT_SPAN:
        return "eval"
    raise ValueError(f"seed {seed} is outside every split range [0, {2 * SPLIT_SPAN})")


def check_seed(seed: int, split: str) -> int:
    """Return ``seed`` if it belongs to ``split``; raise SeedSplitError otherwise."""
    actual = split_of_seed(seed)
    if actual != split:
        raise SeedSplitError(f"seed {seed} belongs to the {actual!r} split, not {split!r}")
    return int(seed)
