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
        """The first layer's input parts: the embedded numeric columns `[k, B, F*d]`, and the
        other columns of `x` `[k, B, D]` as they are."""
        k, batch = x.shape[0], x.shape[1]
        F, n, d = self.shape
        features_t = x[..., :F].transpose(1, 2).contiguous()  # [k, F, B]
        # [cos z, sin z] side by side from one sine, as cos z = sin(z + π/2): then [cos, sin] @ W
        # is one matmul against W whole. Two matmuls against W's row blocks (slices of W) took
        # 20-40x longer on CPU, where torch falls back to a slow path for such operands.
        scaled = self.frequencies * _TWO_PI  # [k, F, n]
        trig = torch.addcmul(_quarter_turns(n, x.device, x.dtype), features_t.unsqueeze(-1),
                             torch.cat([scaled, scaled], dim=-1).unsqueeze(2)).sin_().view(k * F, batch, 2 * n)
        weight = self.weight.view(k * F, 2 * n, d)
        embedded = torch.baddbmm(self.bias.view(k * F, 1, d), trig, weight).relu_()  # [k*F, B, d]
        cache.features_t, cache.trig, cache.embedded = features_t, trig, embedded
        flat = embedded.view(k, F, batch, d).transpose(1, 2).reshape(k, batch, F * d)
        return [flat, x[..., F:]] if x.shape[2] > F else [flat]

    def backward(self, cache, d_flat: torch.Tensor, d_frequencies: torch.Tensor, d_weight: torch.Tensor,
                 d_bias: torch.Tensor) -> None:
        """Write the gradients of the embeddings' three tensors, given d(loss)/d(embedded columns)."""
        k = self.frequencies.shape[0]
        F, n, d = self.shape
        batch = d_flat.shape[1]
        d_embedded = d_flat.view(k, batch, F, d).transpose(1, 2).reshape(k * F, batch, d)
        d_pre = torch.ops.aten.threshold_backward(d_embedded, cache.embedded, 0.0)
        d_weight = d_weight.view(k * F, 2 * n, d)
        trig = cache.trig
        torch.bmm(trig.transpose(1, 2), d_pre, out=d_weight)  # contiguous out: the fast path
        torch.sum(d_pre, dim=1, keepdim=True, out=d_bias.view(k * F, 1, d))
        d_trig = torch.bmm(d_pre, self.weight.view(k * F, 2 * n, d).transpose(1, 2))  # d/d cos z, then d/d sin z
        # d/dz of cos z and sin z: -sin z and cos z; then dz/dc = 2π x.
        dz = d_trig[..., n:] * trig[..., :n]
        dz.sub_(d_trig[..., :n] * trig[..., n:])
        torch.bmm(cache.features_t.view(k * F, 1, batch), dz, out=d_frequencies.view(k * F, 1, n))
        d_frequencies.mul_(_TWO_PI)
