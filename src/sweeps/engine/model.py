"""k networks stored as one stack: every tensor has the fold-model as its leading dimension.

One batched matmul (`baddbmm`) runs a layer of all k fold-models at once; the backward
pass is written out by hand (a ReLU MLP needs three lines per layer), which skips
autograd's per-op bookkeeping: on small nets that bookkeeping, not arithmetic, is the
cost (see README, Performance). `tests/test_model.py` checks the gradients against autograd.

The network of one fold-model, input to output:

1. Optional **periodic embeddings** of the numeric inputs (Gorishniy et al. 2022, "PLR"):
   per feature j, learned frequencies c_j -> [cos 2πc_j x_j, sin 2πc_j x_j] -> a linear map
   of its own -> ReLU. One-hot (categorical) inputs pass through unchanged.
2. Optional **shared-weight ensemble** of E members (TabM-mini, Gorishniy et al. 2025):
   member e sees the input scaled by its own adapter r_e (initialised to random ±1), all
   members share the hidden layers, and each has its own output layer. Members are
   trained on the mean of their losses; the fold-model predicts their mean.
3. The MLP: `depth` hidden layers of `width` ReLU units, dropout after each.

Dropout masks are drawn as random bytes (1.4 ns per element here, against 18 ns for
`F.dropout`), so the drop probability is rounded to a multiple of 1/256; the 1/(1-p)
rescale rides for free on the next layer's matmul (`alpha=`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
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

    @property
    def shape(self) -> tuple[int, int, int]:
        """(F, n, d)"""
        return self.weight.shape[1], self.frequencies.shape[2], self.weight.shape[3]


@dataclass
class Cache:
    """What the forward pass keeps for the backward pass."""

    activations: list[torch.Tensor | None]  # input of each layer after the first (masked, unscaled)
    inputs: list[torch.Tensor] = field(default_factory=list)  # the first layer's input, in column blocks
    member_weight: torch.Tensor | None = None  # [k, D, E*width]: the first layer, scaled per member
    features_t: torch.Tensor | None = None  # numeric inputs as [k, F, B]
    trig: torch.Tensor | None = None  # [k*F, B, 2n]: cos z, then sin z
    embedded: torch.Tensor | None = None  # [k*F, B, d] after ReLU

    # Compatibility with code that treats the cache as the list of activations.
    def __getitem__(self, i):
        return self.activations[i]

    def __len__(self) -> int:
        return len(self.activations)


@dataclass
class StackedMLP:
    """Parameters of k networks of the same architecture, one per fold (see module docstring)."""

    weights: list[torch.Tensor]  # per layer [k, in, out]; the output layer [k, E, width, out]
    biases: list[torch.Tensor]  # per layer [k, 1, out]; the output layer [k, E, 1, out]
    dropout: float | torch.Tensor = 0.0  # one probability, or one per stack position (`concat`)
    embedding: Periodic | None = None  # on inputs [0, n_numeric)
    n_numeric: int = 0
    scales: torch.Tensor | None = None  # [k, E, D]: the members' input adapters (E > 1)

    def __post_init__(self) -> None:
        if self.weights[-1].ndim == 3:  # one member: the output layer as [k, 1, width, out]
            self.weights[-1] = self.weights[-1].unsqueeze(1)
            self.biases[-1] = self.biases[-1].unsqueeze(1)

    @classmethod
    def init(cls, seeds: list[int], n_in: int, n_out: int, depth: int, width: int,
             dropout: float = 0.0, device: torch.device | str = "cpu", *, n_numeric: int = 0,
             embedding: tuple[int, float, int] | None = None, members: int = 1) -> StackedMLP:
        """One network per seed; linear layers initialised like `torch.nn.Linear`: U(±1/sqrt(fan_in)).

        `embedding` is (n_frequencies, frequency_scale, embedding_dim) for the first `n_numeric`
        inputs; frequencies are drawn from N(0, scale²) truncated at ±3 scale, as in
        `rtdl_num_embeddings.PeriodicEmbeddings`.
        """
        if depth < 1:
            raise ValueError("depth must be >= 1")
        k = len(seeds)
        n_cat = n_in - n_numeric if embedding else 0
        d_in = n_numeric * embedding[2] + n_cat if embedding else n_in
        sizes = [d_in] + [width] * depth
        weights = [torch.empty(k, a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        biases = [torch.empty(k, 1, b) for b in sizes[1:]]
        weights.append(torch.empty(k, members, sizes[-1], n_out))
        biases.append(torch.empty(k, members, 1, n_out))
        periodic = None
        if embedding:
            n, scale, d = embedding
            periodic = Periodic(torch.empty(k, n_numeric, n), torch.empty(k, n_numeric, 2 * n, d),
                                torch.empty(k, n_numeric, 1, d))
        scales = torch.empty(k, members, d_in) if members > 1 else None
        for f, seed in enumerate(seeds):  # per-fold generators: a fold's init ignores the others
            generator = torch.Generator().manual_seed(seed)
            # The hidden layers and a single member's output layer are drawn first, in the order a
            # plain MLP always drew them: a plain net is initialised as before these options existed.
            for w, b in zip(weights, biases):
                bound = 1.0 / math.sqrt(w.shape[-2])
                w[f].uniform_(-bound, bound, generator=generator)
                b[f].uniform_(-bound, bound, generator=generator)
            if periodic is not None:
                n, scale, d = embedding
                torch.nn.init.trunc_normal_(periodic.frequencies[f], 0.0, scale, -3 * scale, 3 * scale,
                                            generator=generator)
                bound = 1.0 / math.sqrt(2 * n)
                periodic.weight[f].uniform_(-bound, bound, generator=generator)
                periodic.bias[f].uniform_(-bound, bound, generator=generator)
            if scales is not None:
                scales[f] = torch.randint(0, 2, scales[f].shape, generator=generator).float() * 2 - 1
        move = lambda t: t.to(device)  # noqa: E731
        if periodic is not None:
            periodic = Periodic(*map(move, (periodic.frequencies, periodic.weight, periodic.bias)))
        return cls([move(w) for w in weights], [move(b) for b in biases], dropout, periodic,
                   n_numeric if embedding else 0, None if scales is None else move(scales))

    # --- shape --------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return self.weights[0].shape[0]

    @property
    def members(self) -> int:
        return self.weights[-1].shape[1]

    @property
    def params(self) -> list[torch.Tensor]:
        """Every trained tensor, leading dimension k (`select` slices them all alike)."""
        front = [] if self.embedding is None else [self.embedding.frequencies, self.embedding.weight,
                                                    self.embedding.bias]
        if self.scales is not None:
            front.append(self.scales)
        return front + [t for pair in zip(self.weights, self.biases) for t in pair]

    @property
    def no_decay(self) -> list[bool]:
        """Per tensor of `params`: True for those weight decay must not pull to 0 (the embeddings'
        frequencies and the members' ±1 adapters: their scale is their meaning)."""
        front = [] if self.embedding is None else [True, False, False]
        if self.scales is not None:
            front.append(True)
        return front + [False] * (2 * len(self.weights))

    def frozen(self, layers: int) -> list[bool]:
        """Per tensor of `params`: True for the first `layers` hidden layers and everything
        before them (embeddings, the members' adapters); the output layer is never frozen."""
        if not layers:
            return [False] * len(self.params)
        front = (3 if self.embedding is not None else 0) + (1 if self.scales is not None else 0)
        layers = min(layers, len(self.weights) - 1)
        return [True] * (front + 2 * layers) + [False] * (2 * (len(self.weights) - layers))

    @property
    def n_params(self) -> int:
        """Parameters of one fold-model."""
        return sum(t[0].numel() for t in self.params)

    def _with(self, tensors: list[torch.Tensor], dropout: float | torch.Tensor | None = None) -> StackedMLP:
        """The same architecture holding `tensors` (in the order of `params`)."""
        tensors = list(tensors)
        embedding = None
        if self.embedding is not None:
            embedding = Periodic(tensors.pop(0), tensors.pop(0), tensors.pop(0))
        scales = tensors.pop(0) if self.scales is not None else None
        return StackedMLP(tensors[0::2], tensors[1::2], self.dropout if dropout is None else dropout, embedding,
                          self.n_numeric, scales)

    def select(self, index: torch.Tensor) -> StackedMLP:
        """A new stack holding only the fold-models at `index` (copies)."""
        dropout = self.dropout[index.to(self.dropout.device)] if torch.is_tensor(self.dropout) else None
        return self._with([t[index] for t in self.params], dropout)

    @classmethod
    def concat(cls, stacks: list[StackedMLP]) -> StackedMLP:
        """One stack of several (trials trained together): hidden layers padded with zeros to the widest.

        A padded unit's weights and bias are 0, so it stays 0 through ReLU, and so do the gradients
        of everything it touches: it changes no number of the real units. Every stack must share
        depth, embeddings and members; dropout becomes one probability per stack position.
        """
        if len(stacks) == 1:
            return stacks[0]
        width = max(s.weights[0].shape[2] for s in stacks)
        padded = []
        for stack in stacks:
            grow = width - stack.weights[0].shape[2]
            tensors = []
            for t, role in zip(stack.params, stack._roles()):
                pad = {"in_hidden": (0, grow), "hidden": (0, grow, 0, grow), "bias": (0, grow),
                       "head": (0, 0, 0, grow)}.get(role)
                tensors.append(torch.nn.functional.pad(t, pad) if pad and grow else t)
            padded.append(tensors)
        merged = [torch.cat(column) for column in zip(*padded)]
        dropout = torch.cat([torch.full((s.k,), float(s.dropout)) for s in stacks])
        return stacks[0]._with(merged, dropout)

    def crop(self, width: int, dropout: float) -> StackedMLP:
        """This stack's real units of a net `width` wide (undoing `concat`'s padding)."""
        tensors = []
        for t, role in zip(self.params, self._roles()):
            cut = {"in_hidden": (..., slice(0, width)), "hidden": (slice(None), slice(0, width), slice(0, width)),
                   "bias": (..., slice(0, width)), "head": (slice(None), slice(None), slice(0, width))}.get(role)
            tensors.append(t[cut].contiguous() if cut else t)
        return self._with(tensors, dropout)

    def _roles(self) -> list[str]:
        """What each tensor of `params` is, for padding: hidden widths change, inputs and outputs do not."""
        front = (["frequencies", "embedding", "embedding"] if self.embedding is not None else []) + (
            ["scales"] if self.scales is not None else [])
        layers = []
        depth = len(self.weights) - 1
        for layer in range(depth + 1):
            if layer == depth:
                layers += ["head", "head_bias"]
            else:
                layers += ["in_hidden" if layer == 0 else "hidden", "bias"]
        return front + layers

    def clone(self) -> StackedMLP:
        return self._with([t.clone() for t in self.params])

    def to(self, device: torch.device | str) -> StackedMLP:
        return self._with([t.to(device) for t in self.params])

    def tiled(self, k: int, device: torch.device | str) -> StackedMLP:
        """k copies of this stack's first fold-model (transfer learning: every fold starts from it)."""
        return self._with([t[:1].to(device).expand(k, *t.shape[1:]).clone() for t in self.params])

    def architecture(self) -> dict:
        """What the saved configuration must match to start from these weights."""
        depth = len(self.weights) - 1
        width = self.weights[0].shape[2] if depth else 0
        arch = {"depth": depth, "width": width, "ensemble": self.members,
                "embedding": "periodic" if self.embedding is not None else "none"}
        if self.embedding is not None:
            _, n, d = self.embedding.shape
            arch.update(n_frequencies=n, embedding_dim=d)
        return arch

    @property
    def n_inputs(self) -> int:
        if self.embedding is None:
            return self.weights[0].shape[1]
        F, _, d = self.embedding.shape
        return self.weights[0].shape[1] - F * d + F

    @property
    def n_outputs(self) -> int:
        return self.weights[-1].shape[-1]

    # --- saving: named tensors and a JSON-able description -------------------------------
    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        tensors = {}
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            tensors[f"w{layer}"], tensors[f"b{layer}"] = w, b
        if self.embedding is not None:
            tensors.update(frequencies=self.embedding.frequencies, embedding_weight=self.embedding.weight,
                           embedding_bias=self.embedding.bias)
        if self.scales is not None:
            tensors["scales"] = self.scales
        meta = {"kind": "mlp", "layers": len(self.weights), "dropout": self.dropout, "n_numeric": self.n_numeric}
        return meta, tensors

    @classmethod
    def from_state(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> StackedMLP:
        if meta.get("kind") != "mlp":
            raise ValueError(f"unknown network kind {meta.get('kind')!r}")
        layers = int(meta["layers"])
        weights = [tensors[f"w{i}"].float() for i in range(layers)]
        biases = [tensors[f"b{i}"].float() for i in range(layers)]
        embedding = None
        if "frequencies" in tensors:
            embedding = Periodic(tensors["frequencies"].float(), tensors["embedding_weight"].float(),
                                 tensors["embedding_bias"].float())
        net = cls(weights, biases, float(meta["dropout"]), embedding, int(meta.get("n_numeric", 0)),
                  tensors["scales"].float() if "scales" in tensors else None)
        net._check_shapes()
        return net

    def _check_shapes(self) -> None:
        k, d_in = self.weights[0].shape[0], self.weights[0].shape[1]
        for w, b, nxt in zip(self.weights[:-1], self.biases[:-1], self.weights[1:]):
            if w.ndim != 3 or b.shape != (k, 1, w.shape[2]) or nxt.shape[-2] != w.shape[2]:
                raise ValueError("layer shapes do not chain")
        head, head_bias = self.weights[-1], self.biases[-1]
        if head.ndim != 4 or head_bias.shape != (k, head.shape[1], 1, head.shape[3]):
            raise ValueError("output layer shapes do not match")
        if self.scales is not None and self.scales.shape != (k, head.shape[1], d_in):
            raise ValueError("member adapters do not match the input layer")
        if self.embedding is not None:
            F, n, d = self.embedding.shape
            if (self.embedding.frequencies.shape != (k, F, n) or self.embedding.bias.shape != (k, F, 1, d)
                    or F != self.n_numeric or d_in < F * d):
                raise ValueError("embedding shapes do not match")

    # --- forward and backward ----------------------------------------------------------
    def forward(self, x: torch.Tensor, dropout_rng: torch.Generator | None = None
                ) -> tuple[torch.Tensor, Cache]:
        """Outputs `[k, E*B, n_out]` (member e's rows are `e*B:(e+1)*B`) and what backward needs.

        With `dropout_rng`, hidden units are dropped (training); without, none are (eval).
        """
        k, batch = x.shape[0], x.shape[1]
        members = self.members
        cache = Cache([])
        # The first layer reads its input in parts (embedded numeric columns, then the rest),
        # each against its block of rows of the weights: no concatenated copy of the input.
        parts = self._embed(x, cache) if self.embedding is not None else [x]
        cache.inputs = parts
        weight, bias = self.weights[0], self.biases[0]
        if members > 1:
            # Member e's adapter r_e scales the input: x ⊙ r_e @ W = x @ (r_e ⊙ W). One matmul against
            # every member's scaled weights [k, D, E*width] runs all members without copying x E times.
            weight = (weight.unsqueeze(2) * self.scales.transpose(1, 2).unsqueeze(-1)).reshape(k, weight.shape[1], -1)
            bias = bias.repeat(1, 1, members)
            cache.member_weight = weight
        z, offset = bias, 0
        for part in parts:
            z = torch.baddbmm(z, part, weight[:, offset:offset + part.shape[2]])
            offset += part.shape[2]
        if members > 1:  # [k, B, E*width] -> member-major [k, E*B, width] for the shared layers and heads
            z = z.view(k, batch, members, -1).transpose(1, 2).reshape(k, members * batch, -1)
        cache.activations.append(None)  # the first layer's input is `inputs`
        h = z.relu_()
        alpha = self._drop(h, dropout_rng)
        for w, b in zip(self.weights[1:-1], self.biases[1:-1]):
            cache.activations.append(h)
            h = torch.baddbmm(b, h, w, alpha=alpha).relu_()
            self._drop(h, dropout_rng)
        cache.activations.append(h)
        head, head_bias = self.weights[-1], self.biases[-1]
        n_out = head.shape[-1]
        out = torch.baddbmm(head_bias.view(k * members, 1, n_out), h.view(k * members, batch, h.shape[-1]),
                            head.view(k * members, head.shape[-2], n_out), alpha=alpha)
        return out.view(k, members * batch, n_out), cache

    def _drop(self, h: torch.Tensor, rng) -> float:
        """Dropout on `h`, in place; returns the rescale the next matmul applies (`alpha`).

        One probability: a 0/1 byte mask from `rng`, the 1/(1-p) rescale left to the next
        matmul (free). One per stack position (trials trained together): `rng` is a list of
        (positions, width, generator) per trial, each trial's mask drawn from its own
        generator as it would be alone, and the rescale applied here, per position.
        """
        if rng is None or (not torch.is_tensor(self.dropout) and not self.dropout):
            return 1.0
        if not torch.is_tensor(self.dropout):
            threshold, scale = _dropout_threshold(self.dropout)
            h.mul_(_random_bytes(h.shape, rng).ge_(threshold))  # 0/1 bytes, no bool copy
            return scale
        mask = torch.ones_like(h)
        start = 0
        for count, width, generator in rng:
            p = float(self.dropout[start])
            threshold, scale = _dropout_threshold(p)
            if threshold:
                rows = slice(start, start + count)
                mask[rows, :, :width] = _random_bytes(torch.Size([count, h.shape[1], width]), generator).ge_(threshold)
                mask[rows] *= scale
            start += count
        h.mul_(mask)
        return 1.0

    def _backward_scale(self, training: bool) -> tuple[float, float | torch.Tensor]:
        """(alpha of the matmuls, factor of the gradient through each dropout) for the backward pass."""
        if not training:
            return 1.0, 1.0
        if torch.is_tensor(self.dropout):
            thresholds = torch.clamp(torch.round(self.dropout * 256), max=255)
            return 1.0, (256.0 / (256 - thresholds)).view(-1, 1, 1).to(self.weights[0].device)
        scale = _dropout_threshold(self.dropout)[1] if self.dropout else 1.0
        return scale, scale

    def _embed(self, x: torch.Tensor, cache: Cache) -> list[torch.Tensor]:
        """The first layer's input parts: the embedded numeric columns, and the others as they are."""
        emb = self.embedding
        k, batch = x.shape[0], x.shape[1]
        F, n, d = emb.shape
        features_t = x[..., :F].transpose(1, 2).contiguous()  # [k, F, B]
        # [cos z, sin z] side by side from one sine, as cos z = sin(z + π/2): then [cos, sin] @ W
        # is one matmul against W whole. Two matmuls against W's row blocks (slices of W) took
        # 20-40x longer on CPU, where torch falls back to a slow path for such operands.
        scaled = emb.frequencies * _TWO_PI  # [k, F, n]
        trig = torch.addcmul(_quarter_turns(n, x.device, x.dtype), features_t.unsqueeze(-1),
                             torch.cat([scaled, scaled], dim=-1).unsqueeze(2)).sin_().view(k * F, batch, 2 * n)
        weight = emb.weight.view(k * F, 2 * n, d)
        embedded = torch.baddbmm(emb.bias.view(k * F, 1, d), trig, weight).relu_()  # [k*F, B, d]
        cache.features_t, cache.trig, cache.embedded = features_t, trig, embedded
        flat = embedded.view(k, F, batch, d).transpose(1, 2).reshape(k, batch, F * d)
        return [flat, x[..., F:]] if x.shape[2] > F else [flat]

    def backward(self, cache: Cache, grad_out: torch.Tensor, grads: list[torch.Tensor],
                 training: bool = True, extra_dh: torch.Tensor | None = None) -> None:
        """Write d(sum of per-fold losses)/d(params) into `grads` (same order as `params`).

        `grad_out` is the gradient of the summed per-fold losses with respect to the outputs;
        `extra_dh`, another head's gradient with respect to the last hidden layer (as the
        output head sees it, before dropout's rescale): the domain classifier's (`domain.py`).
        """
        k, members = self.k, self.members
        activations = cache.activations
        batch = activations[-1].shape[1] // members
        alpha, scale = self._backward_scale(training)
        depth = len(self.weights) - 1
        n_front = len(grads) - 2 * len(self.weights)

        # Output layer: each member's own weights, as [k*E, width, out].
        width, n_out = self.weights[-1].shape[-2:]
        head = self.weights[-1].view(k * members, width, n_out)
        h = activations[-1].view(k * members, batch, width)
        dz = grad_out.view(k * members, batch, n_out)
        dw = grads[-2].view(k * members, width, n_out)
        torch.baddbmm(dw, h.transpose(1, 2), dz, beta=0.0, alpha=alpha, out=dw)
        torch.sum(dz, dim=1, keepdim=True, out=grads[-1].view(k * members, 1, n_out))
        dh = torch.bmm(dz, head.transpose(1, 2)).view(k, members * batch, width)
        if extra_dh is not None:
            dh.add_(extra_dh)
        if torch.is_tensor(scale) or scale != 1.0:
            dh.mul_(scale)
        for layer in range(depth - 1, 0, -1):  # the shared hidden layers
            # ReLU and dropout in one: the gradient flows where the stored activation is > 0.
            dz = torch.ops.aten.threshold_backward(dh, activations[layer + 1], 0.0)
            h = activations[layer]
            dw, db = grads[n_front + 2 * layer], grads[n_front + 2 * layer + 1]
            torch.baddbmm(dw, h.transpose(1, 2), dz, beta=0.0, alpha=alpha, out=dw)
            torch.sum(dz, dim=1, keepdim=True, out=db)
            dh = torch.bmm(dz, self.weights[layer].transpose(1, 2))
            if torch.is_tensor(scale) or scale != 1.0:
                dh.mul_(scale)
        dz = torch.ops.aten.threshold_backward(dh, activations[1], 0.0)
        self._first_layer_backward(cache, dz, grads, n_front)

    def _first_layer_backward(self, cache: Cache, dz: torch.Tensor, grads: list[torch.Tensor], n_front: int) -> None:
        k, members = self.k, self.members
        weight, dw, db = self.weights[0], grads[n_front], grads[n_front + 1]
        width = weight.shape[2]
        if members > 1:  # member-major [k, E*B, width] -> [k, B, E*width], the first layer's layout
            batch = dz.shape[1] // members
            dz = dz.view(k, members, batch, width).transpose(1, 2).reshape(k, batch, members * width)
            torch.sum(dz.view(k, -1, members, width), dim=(1, 2), out=db.view(k, width))
            scales_t = self.scales.transpose(1, 2)  # [k, D, E]
            d_scales = grads[n_front - 1].transpose(1, 2)  # [k, D, E], a view: written in place
        else:
            torch.sum(dz, dim=1, keepdim=True, out=db)
        offset = 0
        for part in cache.inputs:
            rows = slice(offset, offset + part.shape[2])
            offset += part.shape[2]
            if members == 1:
                dw[:, rows] = torch.bmm(part.transpose(1, 2), dz)
                continue
            # d/d(r_e ⊙ W) = x^T dz_e; the shared W gets the sum over members of r_e ⊙ that,
            # and r_e the sum over units of W ⊙ that.
            g = torch.bmm(part.transpose(1, 2), dz).view(k, part.shape[2], members, width)
            dw[:, rows] = (g * scales_t[:, rows].unsqueeze(-1)).sum(2)
            d_scales[:, rows] = (g * weight[:, rows].unsqueeze(2)).sum(-1)
        if self.embedding is not None:
            effective = cache.member_weight if members > 1 else weight
            F, _, d = self.embedding.shape
            d_flat = torch.bmm(dz, effective[:, : F * d].transpose(1, 2))  # [k, B, F*d], summed over members
            self._embedding_backward(cache, d_flat, grads[0], grads[1], grads[2])

    def _embedding_backward(self, cache: Cache, d_flat: torch.Tensor, d_frequencies: torch.Tensor,
                            d_weight: torch.Tensor, d_bias: torch.Tensor) -> None:
        emb = self.embedding
        k = self.k
        F, n, d = emb.shape
        batch = d_flat.shape[1]
        d_embedded = d_flat.view(k, batch, F, d).transpose(1, 2).reshape(k * F, batch, d)
        d_pre = torch.ops.aten.threshold_backward(d_embedded, cache.embedded, 0.0)
        d_weight = d_weight.view(k * F, 2 * n, d)
        trig = cache.trig
        torch.bmm(trig.transpose(1, 2), d_pre, out=d_weight)  # contiguous out: the fast path
        torch.sum(d_pre, dim=1, keepdim=True, out=d_bias.view(k * F, 1, d))
        d_trig = torch.bmm(d_pre, emb.weight.view(k * F, 2 * n, d).transpose(1, 2))  # d/d cos z, then d/d sin z
        # d/dz of cos z and sin z: -sin z and cos z; then dz/dc = 2π x.
        dz = d_trig[..., n:] * trig[..., :n]
        dz.sub_(d_trig[..., :n] * trig[..., n:])
        torch.bmm(cache.features_t.view(k * F, 1, batch), dz, out=d_frequencies.view(k * F, 1, n))
        d_frequencies.mul_(_TWO_PI)

    # --- predictions -------------------------------------------------------------------
    def combine(self, out: torch.Tensor, classification: bool) -> torch.Tensor:
        """The fold-model's prediction from its members' outputs `[k, E*B, n_out]` -> `[k, B, n_out]`:
        log of the members' mean probability (classification), or their mean (regression)."""
        members = self.members
        if members == 1:
            return out
        k, rows, n_out = out.shape
        out = out.view(k, members, rows // members, n_out)
        if classification:
            return _logsumexp_members(log_softmax(out)) - math.log(members)
        return out.mean(1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 65536, classification: bool = True) -> torch.Tensor:
        """Eval-mode predictions `[k, rows, n_out]` for inputs `[k, rows, n_in]`, in row chunks.

        With members: the combined prediction (`combine`); a single member's are its logits.
        """
        parts = [self.combine(self.forward(x[:, i:i + chunk])[0], classification)
                 for i in range(0, max(x.shape[1], 1), chunk)]
        return torch.cat(parts, dim=1)


def _logsumexp_members(log_p: torch.Tensor) -> torch.Tensor:
    """log Σ_e exp(log_p[:, e]) for `[k, E, B, C]`: the log of the members' summed probabilities."""
    top = log_p.amax(dim=1, keepdim=True)
    return (log_p - top).exp_().sum(dim=1).log_().add_(top.squeeze(1))


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
                  class_weight: torch.Tensor | None = None, label_smoothing: float | torch.Tensor = 0.0,
                  row_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-fold summed loss over the batch `[k]`, and d(per-fold mean loss)/d(out).

    Classification: cross-entropy on logits `[k, B, C]` with class indices `[k, B]`;
    with `class_weight` `[k, C]`, the weighted mean of `torch.nn.CrossEntropyLoss(weight=)`;
    with `label_smoothing` ε, the target is (1 - ε) on the class and ε / C on every class, as
    `torch.nn.CrossEntropyLoss(label_smoothing=)`. The returned loss is always the
    *unsmoothed* one: trials are compared on it.
    Regression: squared error on `[k, B, 1]` against standardized targets `[k, B]`.
    With `row_weight` `[k, B]` (importance weights), the weighted mean over the batch, the
    weights multiplying any class weights.
    """
    batch = out.shape[1]
    if not classification:
        diff = out.squeeze(-1) - y
        if row_weight is not None:
            scale = row_weight / row_weight.sum(1, keepdim=True)
            return (diff.square() * scale).sum(1).mul_(batch), diff.mul_(scale).mul_(2.0).unsqueeze(-1)
        loss_sum = diff.square().sum(dim=1)
        return loss_sum, diff.mul_(2.0 / batch).unsqueeze(-1)
    index = y.unsqueeze(-1)
    shifted = out - out.amax(dim=-1, keepdim=True)
    grad = shifted.exp()
    total = grad.sum(dim=-1, keepdim=True)
    picked = shifted.gather(-1, index).squeeze(-1).sub_(total.log().squeeze(-1))  # log p of the target
    grad.div_(total)  # softmax
    if torch.is_tensor(label_smoothing):  # one per stack position (trials trained together)
        smoothing = label_smoothing.view(-1, 1, 1).to(grad.dtype)
        grad.scatter_add_(-1, index, (smoothing - 1.0).expand(index.shape).contiguous())
        grad.sub_(smoothing / out.shape[-1])
    else:
        grad.scatter_add_(-1, index, torch.full_like(index, -(1.0 - label_smoothing), dtype=grad.dtype))
        if label_smoothing:
            grad.sub_(label_smoothing / out.shape[-1])
    if class_weight is not None or row_weight is not None:
        row = class_weight.gather(1, y) if class_weight is not None else 1.0  # [k, B]: each row's class weight
        row = row if row_weight is None else row * row_weight
        scale = row / row.sum(1, keepdim=True)  # weighted mean over the batch
        return (picked * scale).sum(1).mul_(-batch), grad.mul_(scale.unsqueeze(-1))
    return picked.sum(1).neg_(), grad.mul_(1.0 / batch)


def log_softmax(out: torch.Tensor) -> torch.Tensor:
    """`torch.log_softmax(out, -1)`, 2.5x faster here for the few classes of tabular data: torch's
    kernel works row by row, these are four whole-tensor passes ([5, 1024, 10]: 145 vs 366 µs)."""
    shifted = out - out.amax(dim=-1, keepdim=True)
    return shifted.sub_(shifted.exp().sum(dim=-1, keepdim=True).log_())


def per_row_losses(out: torch.Tensor, y: torch.Tensor, classification: bool) -> torch.Tensor:
    """Loss of every row `[k, B]` (cross-entropy or squared error), no gradient."""
    if classification:
        return log_softmax(out).gather(-1, y.unsqueeze(-1)).squeeze(-1).neg_()
    return (out.squeeze(-1) - y).square_()


def seeds_for(seed: int, fold_ids: list[int] | np.ndarray, stream: str) -> list[int]:
    """Independent, reproducible seeds: one per fold and purpose (init, batches, ...)."""
    salt = int.from_bytes(stream.encode(), "little") % (2**31)
    return [int(np.random.SeedSequence([seed, int(f), salt]).generate_state(1)[0]) for f in fold_ids]

