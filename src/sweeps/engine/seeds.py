"""Every random stream of the engine, derived from a trial's seed, one per fold and purpose:
a fold draws its initial weights, batch orders and target rows the same inside the stack
as alone."""

from __future__ import annotations

import numpy as np


def seeds_for(seed: int, fold_ids: list[int] | np.ndarray, stream: str) -> list[int]:
    """Independent, reproducible seeds: one per fold and purpose (init, batches, ...)."""
    salt = int.from_bytes(stream.encode(), "little") % (2**31)
    return [int(np.random.SeedSequence([seed, int(f), salt]).generate_state(1)[0]) for f in fold_ids]
