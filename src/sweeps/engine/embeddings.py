"""Periodic embeddings of the numeric inputs (Gorishniy et al. 2022, "PLR"), stacked over fold-models.

Per feature j: learned frequencies c_j -> [cos 2πc_j x_j, sin 2πc_j x_j] -> a linear map of
its own -> ReLU. The forward pass writes what the backward pass needs into the model's
`Cache`; `tests/engine` checks the gradients against autograd and the outputs against
`rtdl_num_embeddings.PeriodicEmbeddings`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

_TWO_PI = 2 * math.pi


@functools.lru_cache(maxsize=16)
def _quarter_turns(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """[π/2] * n then [0] * n: the phases that make one sine give cos z and sin z."""
    return torch.cat([torch.full((n,), math.pi / 2, dtype=dtype), torch.zeros(n, dtype=dtype)]).to(device)


@dataclass
class Periodic:
    """Stacked periodic embeddings of F numeric inputs: n frequencies each, d outputs each."""

    frequencies: torch.Tensor  # [k, F, n]
    weight: torch.Tensor  # [k, F, 2n, d]
    bias: torch.Tensor  # [k, F, 1, d]

    @classmethod
    def empty(cls, k: int, features: int, n: int, d: int) -> Periodic:
        return cls(torch.empty(k, features, n), torch.empty(k, features, 2 * n, d), torch.empty(k, features, 1, d))

    def init_(self, f: int, scale: float, generator: torch.Generator) -> None:
        """Draw fold-model f's weights: frequencies from N(0, scale²) truncated at ±3 scale, as
        `rtdl_num_embeddings.PeriodicEmbeddings`; the linear maps like `torch.nn.Linear`."""
        n = self.frequencies.shape[2]
        torch.nn.init.trunc_normal_(self.frequencies[f], 0.0, scale, -3 * scale, 3 * scale, generator=generator)
        bound = 1.0 / math.sqrt(2 * n)
        self.weight[f].uniform_(-bound, bound, generator=generator)
        self.bias[f].uniform_(-bound, bound, generator=generator)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(F, n, d)"""
        return self.weight.shape[1], self.frequencies.shape[2], self.weight.shape[3]

    @property
    def tensors(self) -> list[torch.Tensor]:
        return [self.frequencies, self.weight, self.bias]

    def forward(self, x: torch.Tensor, cache) -> list[torch.Tensor]:
        """The first layer's input parts: the embedded numeric columns `[k, B, F*d]` (a transposed
        view), and the other columns of `x` `[k, B, D]` as they are.

        Everything is computed transposed, rows last: features [k*F, 1, B], cos and sin
        [k*F, 2n, B], embedded [k*F, d, B]. Each per-feature map is then W^T [d, 2n] @ [2n, B], a
        product whose output has B columns; the natural [B, 2n] @ [2n, d] has d (4-16) columns,
        on which CPU kernels run up to 5x slower. And [k*F, d, B] read as [k, F*d, B] is the first
        layer's input transposed, which a matmul takes as it is: no transposed copy either way.
        """
        k, batch = x.shape[0], x.shape[1]
        F, n, d = self.shape
        features_t = x[..., :F].transpose(1, 2).reshape(k * F, 1, batch)  # [k*F, 1, B]
        # [cos z; sin z] stacked from one sine, as cos z = sin(z + π/2): then W^T @ [cos; sin] is
        # one matmul against W whole. Two matmuls against W's row blocks (slices of W) took
        # 20-40x longer on CPU, where torch falls back to a slow path for such operands.
        scaled = (self.frequencies * _TWO_PI).view(k * F, n, 1)
        # (a broadcast addcmul of the same took 3.6x the multiply and add)
        trig = (torch.cat([scaled, scaled], dim=1) * features_t).add_(
            _quarter_turns(n, x.device, x.dtype).view(2 * n, 1)).sin_()  # [k*F, 2n, B]
        weight_t = self.weight.view(k * F, 2 * n, d).transpose(1, 2)  # [k*F, d, 2n]
        embedded = torch.baddbmm(self.bias.view(k * F, d, 1), weight_t, trig).relu_()  # [k*F, d, B]
        cache.features_t, cache.trig, cache.embedded = features_t, trig, embedded
        flat = embedded.view(k, F * d, batch).transpose(1, 2)  # [k, B, F*d], a view
        return [flat, x[..., F:]] if x.shape[2] > F else [flat]

    def backward(self, cache, d_flat_t: torch.Tensor, d_frequencies: torch.Tensor, d_weight: torch.Tensor,
                 d_bias: torch.Tensor) -> None:
        """Write the gradients of the embeddings' three tensors, given d(loss)/d(embedded columns)
        transposed, `[k, F*d, B]` (as `forward` lays them out)."""
        k = self.frequencies.shape[0]
        F, n, d = self.shape
        batch = d_flat_t.shape[2]
        d_pre = torch.ops.aten.threshold_backward(d_flat_t.view(k * F, d, batch), cache.embedded, 0.0)  # [k*F, d, B]
        trig = cache.trig  # [k*F, 2n, B]
        torch.bmm(trig, d_pre.transpose(1, 2), out=d_weight.view(k * F, 2 * n, d))  # contiguous out: the fast path
        torch.sum(d_pre, dim=2, keepdim=True, out=d_bias.view(k * F, d, 1))
        d_trig = torch.bmm(self.weight.view(k * F, 2 * n, d), d_pre)  # [k*F, 2n, B]: d/d cos z, then d/d sin z
        # d/dz of cos z and sin z: -sin z and cos z; then dz/dc = 2π x.
        dz = d_trig[:, n:] * trig[:, :n]
        dz.sub_(d_trig[:, :n] * trig[:, n:])  # [k*F, n, B]
        torch.bmm(dz, cache.features_t.transpose(1, 2), out=d_frequencies.view(k * F, n, 1))
        d_frequencies.mul_(_TWO_PI)
