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
    matmul (free). One per stack position (trials trained together): `rng` is a
    `TrialMasks`, each trial's bytes drawn from its own generator as they would be alone,
    and the rescale applied here, per position.
    """
    if rng is None or (not torch.is_tensor(dropout) and not dropout):
        return 1.0
    if isinstance(rng, TrialMasks):
        rng.apply(h)
        return 1.0
    threshold, scale = _threshold(dropout)
    h.mul_(_random_bytes(h.shape, rng).ge_(threshold))  # 0/1 bytes, no bool copy
    return scale


class TrialMasks:
    """The dropout of trials trained together: each trial's masks from its own generator.

    `trials`: (positions, width, generator) per trial, in stack order; `dropout`: the drop
    probability per stack position. The bytes of every trial go into one buffer, each where
    its positions and units are (straight from the generator when its units fill the
    stack's width), and one comparison and two multiplies per layer drop and rescale every
    position. Drawing a mask per trial and writing it into a mask of ones took 23 % of an
    8-trial d2 w128 stack's time (docs/benchmarks.md, "Many trials in one stack").
    """

    def __init__(self, trials: list[tuple[int, int, torch.Generator]], dropout: torch.Tensor,
                 device: torch.device) -> None:
        thresholds = torch.clamp(torch.round(dropout.double() * 256), max=255)
        self.threshold = thresholds.to(torch.uint8).view(-1, 1, 1).to(device)
        self.scale = (256.0 / (256 - thresholds)).float().view(-1, 1, 1).to(device)
        self.draws, start = [], 0  # (first position, positions, width, generator) of trials that drop
        for count, width, generator in trials:
            if thresholds[start] > 0:
                self.draws.append((start, count, width, generator))
            start += count

    def apply(self, h: torch.Tensor) -> None:
        """Drop `h`'s units in place, each trial's by its own bytes, and rescale the kept ones.

        A trial that does not drop compares its buffer's (unset) bytes with 0: always kept.
        Units past a trial's width are padding and stay 0 whatever their bytes."""
        k, rows, width = h.shape
        random = torch.empty(h.shape, dtype=torch.uint8, device=h.device)
        for start, count, units, generator in self.draws:
            block = random[start:start + count]
            if units == width and (rows * width) % 8 == 0:  # whole words in place, as `_random_bytes` draws them
                torch.randint(_INT64_MIN, _INT64_MAX, (count * rows * width // 8,), dtype=torch.int64,
                              generator=generator, device=h.device, out=block.view(-1).view(torch.int64))
            else:
                block[:, :, :units] = _random_bytes(torch.Size([count, rows, units]), generator)
        # in place on the bytes (0/1), as one trial's masks: a new bool tensor was 4x slower here
        h.mul_(random.ge_(self.threshold)).mul_(self.scale)


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
