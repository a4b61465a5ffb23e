"""k independent MLPs stored as one stack: weights `[k, in, out]`, biases `[k, 1, out]`.

One batched matmul (`baddbmm`) runs a layer of all k fold-models at once; the backward
pass is written out by hand (a ReLU MLP needs three lines per layer), which skips
autograd's per-op bookkeeping: on small nets that bookkeeping, not arithmetic, is the
cost (see README, Performance). `tests/test_model.py` checks the gradients against autograd.

Dropout follows every hidden ReLU. Its mask is drawn as random bytes (1.4 ns per element
here, against 18 ns for `F.dropout`), so the drop probability is rounded to a multiple of
1/256; the 1/(1-p) rescale rides for free on the next layer's matmul (`alpha=`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass
class StackedMLP:
    """Parameters of k MLPs of the same architecture, one per fold."""

    weights: list[torch.Tensor]  # per layer [k, in, out]
    biases: list[torch.Tensor]  # per layer [k, 1, out]
    dropout: float = 0.0

    @classmethod
    def init(cls, seeds: list[int], n_in: int, n_out: int, depth: int, width: int,
             dropout: float = 0.0, device: torch.device | str = "cpu") -> StackedMLP:
        """One MLP per seed, each initialised like `torch.nn.Linear`: U(±1/sqrt(fan_in))."""
        sizes = [n_in] + [width] * depth + [n_out]
        weights, biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            weights.append(torch.empty(len(seeds), fan_in, fan_out))
            biases.append(torch.empty(len(seeds), 1, fan_out))
        for f, seed in enumerate(seeds):  # per-fold generators: a fold's init ignores the others
            generator = torch.Generator().manual_seed(seed)
            for w, b in zip(weights, biases):
                bound = 1.0 / math.sqrt(w.shape[1])
                w[f].uniform_(-bound, bound, generator=generator)
                b[f].uniform_(-bound, bound, generator=generator)
        return cls([w.to(device) for w in weights], [b.to(device) for b in biases], dropout)

    @property
    def k(self) -> int:
        return self.weights[0].shape[0]

    @property
    def params(self) -> list[torch.Tensor]:
        return [t for pair in zip(self.weights, self.biases) for t in pair]

    @property
    def n_params(self) -> int:
        """Parameters of one fold-model."""
        return sum(t[0].numel() for t in self.params)

    def select(self, index: torch.Tensor) -> StackedMLP:
        """A new stack holding only the fold-models at `index` (copies)."""
        return StackedMLP([w[index] for w in self.weights], [b[index] for b in self.biases], self.dropout)

    def clone(self) -> StackedMLP:
        return StackedMLP([w.clone() for w in self.weights], [b.clone() for b in self.biases], self.dropout)

    # --- saving: named tensors and a JSON-able description -------------------------------
    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        tensors = {}
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            tensors[f"w{layer}"], tensors[f"b{layer}"] = w, b
        return {"kind": "mlp", "layers": len(self.weights), "dropout": self.dropout}, tensors

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> StackedMLP:
        if meta.get("kind") != "mlp":
            raise ValueError(f"unknown network kind {meta.get('kind')!r}")
        layers = int(meta["layers"])
        weights = [tensors[f"w{i}"].float() for i in range(layers)]
        biases = [tensors[f"b{i}"].float() for i in range(layers)]
        for w, b, nxt in zip(weights, biases, weights[1:] + [None]):
            if w.ndim != 3 or b.shape != (w.shape[0], 1, w.shape[2]) or (nxt is not None and nxt.shape[1] != w.shape[2]):
                raise ValueError("layer shapes do not chain")
        return cls(weights, biases, float(meta["dropout"]))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        """Eval-mode outputs `[k, rows, n_out]` for inputs `[k, rows, n_in]`, in row chunks."""
        return torch.cat([self.forward(x[:, i:i + chunk])[0] for i in range(0, max(x.shape[1], 1), chunk)], dim=1)

    # --- forward and backward ----------------------------------------------------------
    def forward(self, x: torch.Tensor, dropout_rng: torch.Generator | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs `[k, B, n_out]` and the activations the backward pass needs.

        With `dropout_rng`, hidden units are dropped (training); without, none are (eval).
        """
        keep_threshold, scale = _dropout_threshold(self.dropout) if dropout_rng is not None else (0, 1.0)
        activations = [x]
        h, alpha = x, 1.0
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.baddbmm(b, h, w, alpha=alpha)
            if layer == last:
                return z, activations
            h = z.relu_()
            if keep_threshold:
                h.mul_(_random_bytes(h.shape, dropout_rng).ge_(keep_threshold))  # 0/1 bytes, no bool copy
                alpha = scale
            activations.append(h)
        raise AssertionError("unreachable")

    def backward(self, activations: list[torch.Tensor], grad_out: torch.Tensor,
                 grads: list[torch.Tensor], training: bool = True) -> None:
        """Write d(sum of per-fold losses)/d(params) into `grads` (same order as `params`).

        `activations[l]` is the (masked, unscaled) input of layer l; `grad_out` the
        gradient of the summed per-fold losses with respect to the outputs.
        """
        scale = _dropout_threshold(self.dropout)[1] if training and self.dropout else 1.0
        dz = grad_out
        for layer in range(len(self.weights) - 1, -1, -1):
            h = activations[layer]
            alpha = scale if layer > 0 else 1.0  # the input layer's x is never dropped
            dw, db = grads[2 * layer], grads[2 * layer + 1]
            torch.baddbmm(dw, h.transpose(1, 2), dz, beta=0.0, alpha=alpha, out=dw)
            torch.sum(dz, dim=1, keepdim=True, out=db)
            if layer > 0:
                dh = torch.baddbmm(h, dz, self.weights[layer].transpose(1, 2), beta=0.0, alpha=alpha)
                # ReLU and dropout in one: the gradient flows where the stored activation is > 0.
                dz = torch.ops.aten.threshold_backward(dh, h, 0.0)


def _dropout_threshold(p: float) -> tuple[int, float]:
    """Byte threshold below which a unit is dropped, and the rescale 1/(1 - effective p)."""
    threshold = int(round(p * 256))
    threshold = min(threshold, 255)
    return threshold, 256.0 / (256 - threshold)


def effective_dropout(p: float) -> float:
    """The drop probability the byte masks actually use (p rounded to a multiple of 1/256)."""
    return _dropout_threshold(p)[0] / 256


def _random_bytes(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Uniform random uint8 of `shape`: 8 per random int64, the cheapest bits torch draws."""
    n = math.prod(shape)
    words = torch.randint(_INT64_MIN, _INT64_MAX, ((n + 7) // 8,), dtype=torch.int64,
                          generator=generator, device=generator.device)
    return words.view(torch.uint8)[:n].view(shape)


# --- losses ---------------------------------------------------------------------------------
def loss_and_grad(out: torch.Tensor, y: torch.Tensor, classification: bool,
                  class_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-fold summed loss over the batch `[k]`, and d(per-fold mean loss)/d(out).

    Classification: cross-entropy on logits `[k, B, C]` with class indices `[k, B]`;
    with `class_weight` `[k, C]`, the weighted mean of `torch.nn.CrossEntropyLoss(weight=)`.
    Regression: squared error on `[k, B, 1]` against standardized targets `[k, B]`.
    """
    batch = out.shape[1]
    if classification:
        log_p = torch.log_softmax(out, dim=-1)
        index = y.unsqueeze(-1)
        if class_weight is not None:
            row = class_weight.gather(1, y)  # [k, B]: each row's class weight
            scale = row / row.sum(1, keepdim=True)  # weighted mean over the batch
            loss_sum = (log_p.gather(-1, index).squeeze(-1) * scale).sum(1).mul_(-batch)
            grad = log_p.exp_()
            grad.scatter_add_(-1, index, torch.full_like(index, -1, dtype=grad.dtype))
            return loss_sum, grad.mul_(scale.unsqueeze(-1))
        loss_sum = log_p.gather(-1, index).sum(dim=(1, 2)).neg_()
        grad = log_p.exp_()  # softmax, in place
        grad.scatter_add_(-1, index, torch.full_like(index, -1, dtype=grad.dtype))
        return loss_sum, grad.mul_(1.0 / batch)
    diff = out.squeeze(-1) - y
    loss_sum = diff.square().sum(dim=1)
    return loss_sum, diff.mul_(2.0 / batch).unsqueeze(-1)


def per_row_losses(out: torch.Tensor, y: torch.Tensor, classification: bool) -> torch.Tensor:
    """Loss of every row `[k, B]` (cross-entropy or squared error), no gradient."""
    if classification:
        return torch.log_softmax(out, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1).neg_()
    return (out.squeeze(-1) - y).square_()


def seeds_for(seed: int, fold_ids: list[int] | np.ndarray, stream: str) -> list[int]:
    """Independent, reproducible seeds: one per fold and purpose (init, batches, ...)."""
    salt = int.from_bytes(stream.encode(), "little") % (2**31)
    return [int(np.random.SeedSequence([seed, int(f), salt]).generate_state(1)[0]) for f in fold_ids]
