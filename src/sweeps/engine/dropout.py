"""Dropout as the stacked nets use it: masks of random bytes, the rescale left to a matmul.

Masks are drawn as random bytes (1.4 ns per element here, against 18 ns for `F.dropout`), so
the drop probability is rounded to a multiple of 1/256 (`effective_dropout`); the 1/(1-p)
rescale rides for free on the next layer's matmul (`alpha=`). Trials trained together keep
one probability per stack position, each trial's mask drawn from its own generator.
"""

from __future__ import annotations

import math

import torch

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def drop(h: torch.Tensor, dropout: float | torch.Tensor, rng) -> float:
    """Dropout on `h`, in place; returns the rescale the next matmul applies (`alpha`).

    One probability: a 0/1 byte mask from `rng`, the 1/(1-p) rescale left to the next
    matmul (free). One per stack position (trials trained together): `rng` is a list of
    (positions, width, generator) per trial, each trial's mask drawn from its own
    generator as it would be alone, and the rescale applied here, per position.
    """
    if rng is None or (not torch.is_tensor(dropout) and not dropout):
        return 1.0
    if not torch.is_tensor(dropout):
        threshold, scale = _threshold(dropout)
        h.mul_(_random_bytes(h.shape, rng).ge_(threshold))  # 0/1 bytes, no bool copy
        return scale
    mask = torch.ones_like(h)
    start = 0
    for count, width, generator in rng:
        p = float(dropout[start])
        threshold, scale = _threshold(p)
        if threshold:
            rows = slice(start, start + count)
            mask[rows, :, :width] = _random_bytes(torch.Size([count, h.shape[1], width]), generator).ge_(threshold)
            mask[rows] *= scale
        start += count
    h.mul_(mask)
    return 1.0


def backward_scale(dropout: float | torch.Tensor, training: bool, device: torch.device
                   ) -> tuple[float, float | torch.Tensor]:
    """(alpha of the matmuls, factor of the gradient through each dropout) for the backward pass."""
    if not training:
        return 1.0, 1.0
    if torch.is_tensor(dropout):
        thresholds = torch.clamp(torch.round(dropout * 256), max=255)
        return 1.0, (256.0 / (256 - thresholds)).view(-1, 1, 1).to(device)
    scale = _threshold(dropout)[1] if dropout else 1.0
    return scale, scale


def _threshold(p: float) -> tuple[int, float]:
    """Byte threshold below which a unit is dropped, and the rescale 1/(1 - effective p)."""
    threshold = int(round(p * 256))
    threshold = min(threshold, 255)
    return threshold, 256.0 / (256 - threshold)


def effective_dropout(p: float) -> float:
    """The drop probability the byte masks actually use (p rounded to a multiple of 1/256)."""
    return _threshold(p)[0] / 256


def _random_bytes(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Uniform random uint8 of `shape`: 8 per random int64, the cheapest bits torch draws."""
    n = math.prod(shape)
    words = torch.randint(_INT64_MIN, _INT64_MAX, ((n + 7) // 8,), dtype=torch.int64,
                          generator=generator, device=generator.device)
    return words.view(torch.uint8)[:n].view(shape)
