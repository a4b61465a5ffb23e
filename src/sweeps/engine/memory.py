"""How much memory a trial needs, and how much the device has: checked before allocating."""

from __future__ import annotations

import torch

from sweeps.data.folds import Folds
from sweeps.data.shared import WINDOW_ROWS
from sweeps.engine import categories
from sweeps.engine.config import NetConfig
from sweeps.engine.scores import EVAL_CHUNK


def memory_needed(folds: Folds, config: NetConfig) -> int:
    """Bytes one trial needs at its peak, roughly: checked before allocating (objective.py).

    Weights, gradients, two AdamW moments, the best weights and a copy made when stopped
    folds leave the stack: 6 copies of the parameters; plus the activations of a batch or
    of a validation chunk (per member, and the embeddings' intermediates), and the
    per-epoch shuffled copy of the training rows.
    """
    k, n_in, n_out = folds.k, folds.n_features, folds.n_outputs
    width, depth, members = config.width, config.depth, config.ensemble
    d_in, embedding = n_in, 0
    if config.embedding_shape:
        n, _, d = config.embedding_shape
        numeric = folds.n_numeric
        d_in = numeric * d + n_in - numeric
        embedding = numeric * (n + 2 * n * d + d)
    embedded = categories.layout(folds.category_blocks, config.category_dim)
    if embedded:
        one_hot, columns = n_in - folds.n_numeric, len(embedded[0][0])
        d_in += columns * config.category_dim - one_hot
        embedding += 2 * one_hot * columns * config.category_dim  # the vectors, and their mask
    params = (embedding + d_in * width + (depth - 1) * width * width + depth * width
              + members * (width * n_out + n_out + d_in))
    rows = max(config.batch_size * 2, min(folds.X_val.shape[1], EVAL_CHUNK))
    activations = rows * (members * (width * depth + d_in) + embedding // max(1, width))
    if config.adversarial:  # a batch of target rows rides along, and the domain classifier's layer
        activations = 2 * activations + 2 * config.batch_size * members * 64
    epoch_rows = folds.X_train.shape[1] * (n_in + 1)
    if folds.shared:  # a window of rows at a time, and the one shared copy is already in memory
        epoch_rows = min(folds.X_train.shape[1], WINDOW_ROWS) * (n_in + 1)
    return 4 * k * (6 * params + activations + epoch_rows)


def available_memory(device: torch.device) -> int | None:
    """Bytes the device can still give (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
