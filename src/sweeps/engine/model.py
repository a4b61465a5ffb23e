"""k networks stored as one stack: every tensor has the fold-model as its leading dimension.

This module is the stack's core (shapes, initialisation, selecting and padding positions,
the MLP's forward and hand-written backward, saving); the layers' optional pieces are their
own small modules: `embeddings` (periodic embeddings), `members` (the shared-weight
ensemble), `dropout` (byte masks), and `losses`.

One batched matmul (`baddbmm`) runs a layer of all k fold-models at once; the backward
pass is written out by hand (a ReLU MLP needs three lines per layer), which skips
autograd's per-op bookkeeping: on small nets that bookkeeping, not arithmetic, is the
cost (see README, Performance). `tests/engine/test_model.py` checks the gradients against autograd.

The network of one fold-model, input to output:

1. Optional **periodic embeddings** of the numeric inputs (Gorishniy et al. 2022, "PLR"):
   per feature j, learned frequencies c_j -> [cos 2πc_j x_j, sin 2πc_j x_j] -> a linear map
   of its own -> ReLU. One-hot (categorical) inputs pass through unchanged.
2. Optional **shared-weight ensemble** of E members (TabM-mini, Gorishniy et al. 2025):
   member e sees the input scaled by its own adapter r_e (initialised to random ±1), all
   members share the hidden layers, and each has its own output layer. Members are
   trained on the mean of their losses; the fold-model predicts their mean.
3. The MLP: `depth` hidden layers of `width` ReLU units, dropout after each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sweeps.engine import members as ensemble
from sweeps.engine.categories import CategoryEmbedding
from sweeps.engine.dropout import backward_scale, drop
from sweeps.engine.embeddings import Periodic


# The transient memory of one chunk of predictions (`StackedMLP.predict`): a big table is
# predicted in as many chunks as this takes, whatever the caller's chunk.
PREDICT_BYTES = 256 * 2**20


@dataclass
class Cache:
    """What the forward pass keeps for the backward pass."""

    activations: list[torch.Tensor | None]  # input of each layer after the first (masked, unscaled)
    inputs: list[torch.Tensor] = field(default_factory=list)  # the first layer's input, in column blocks
    member_weight: torch.Tensor | None = None  # [k, D, E*width]: the first layer, scaled per member
    features_t: torch.Tensor | None = None  # numeric inputs as [k*F, 1, B]
    trig: torch.Tensor | None = None  # [k*F, 2n, B]: cos z, then sin z
    embedded: torch.Tensor | None = None  # [k*F, d, B] after ReLU
    category_input: torch.Tensor | None = None  # [k, B, C]: the one-hot columns the category embedding read

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
    categories: CategoryEmbedding | None = None  # on the one-hot inputs after the numeric ones

    def __post_init__(self) -> None:
        if self.weights[-1].ndim == 3:  # one member: the output layer as [k, 1, width, out]
            self.weights[-1] = self.weights[-1].unsqueeze(1)
            self.biases[-1] = self.biases[-1].unsqueeze(1)

    @classmethod
    def init(cls, seeds: list[int], n_in: int, n_out: int, depth: int, width: int,
             dropout: float = 0.0, device: torch.device | str = "cpu", *, n_numeric: int = 0,
             embedding: tuple[int, float, int] | None = None, members: int = 1,
             categories: tuple[list[list[tuple[int, int]]], int] | None = None) -> StackedMLP:
        """One network per seed; linear layers initialised like `torch.nn.Linear`: U(±1/sqrt(fan_in)).

        `embedding` is (n_frequencies, frequency_scale, embedding_dim) for the first `n_numeric`
        inputs; frequencies are drawn from N(0, scale²) truncated at ±3 scale, as in
        `rtdl_num_embeddings.PeriodicEmbeddings`. `categories` is (each fold's blocks of one-hot
        columns, dim) for the inputs after the numeric ones (`categories.CategoryEmbedding`).
        """
        if depth < 1:
            raise ValueError("depth must be >= 1")
        k = len(seeds)
        n_one_hot = n_in - n_numeric
        d_numeric = n_numeric * embedding[2] if embedding else n_numeric
        d_in = d_numeric + (len(categories[0][0]) * categories[1] if categories else n_one_hot)
        sizes = [d_in] + [width] * depth
        weights = [torch.empty(k, a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        biases = [torch.empty(k, 1, b) for b in sizes[1:]]
        weights.append(torch.empty(k, members, sizes[-1], n_out))
        biases.append(torch.empty(k, members, 1, n_out))
        periodic = Periodic.empty(k, n_numeric, embedding[0], embedding[2]) if embedding else None
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
                periodic.init_(f, embedding[1], generator)
            if scales is not None:
                scales[f] = torch.randint(0, 2, scales[f].shape, generator=generator).float() * 2 - 1
        category = None
        if categories:  # drawn after everything else: a net without them is initialised as before
            category = CategoryEmbedding.init(categories[0], n_one_hot, categories[1],
                                              [torch.Generator().manual_seed(seed + 1) for seed in seeds])
        move = lambda t: t.to(device)  # noqa: E731
        if periodic is not None:
            periodic = Periodic(*map(move, (periodic.frequencies, periodic.weight, periodic.bias)))
        return cls([move(w) for w in weights], [move(b) for b in biases], dropout, periodic,
                   n_numeric if embedding else 0, None if scales is None else move(scales),
                   None if category is None else CategoryEmbedding(move(category.weight), move(category.mask),
                                                                   category.dim))

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
        front = [] if self.embedding is None else self.embedding.tensors
        if self.categories is not None:  # its mask rides along as a frozen tensor: sliced alike, never stepped
            front += [self.categories.weight, self.categories.mask]
        if self.scales is not None:
            front.append(self.scales)
        return front + [t for pair in zip(self.weights, self.biases) for t in pair]

    @property
    def no_decay(self) -> list[bool]:
        """Per tensor of `params`: True for those weight decay must not pull to 0 (the embeddings'
        frequencies and the members' ±1 adapters: their scale is their meaning)."""
        return [role in ("frequencies", "scales", "category_mask") for role in self._roles()]

    def frozen(self, layers: int) -> list[bool]:
        """Per tensor of `params`: True for the first `layers` hidden layers and everything
        before them (embeddings, the members' adapters); the output layer is never frozen."""
        roles = self._roles()
        front = len(roles) - 2 * len(self.weights)
        layers = min(layers, len(self.weights) - 1)
        kept = front + 2 * layers if layers else 0
        return [i < kept or role == "category_mask" for i, role in enumerate(roles)]

    @property
    def n_params(self) -> int:
        """Parameters of one fold-model (the category embeddings' vectors, not their zeros)."""
        counted = [t[0].numel() for t, role in zip(self.params, self._roles()) if role not in ("category",
                                                                                            "category_mask")]
        if self.categories is not None:
            counted.append(int(self.categories.mask[0].sum()))
        return sum(counted)

    def _with(self, tensors: list[torch.Tensor], dropout: float | torch.Tensor | None = None) -> StackedMLP:
        """The same architecture holding `tensors` (in the order of `params`)."""
        tensors = list(tensors)
        embedding = None
        if self.embedding is not None:
            embedding = Periodic(tensors.pop(0), tensors.pop(0), tensors.pop(0))
        categories = CategoryEmbedding(tensors.pop(0), tensors.pop(0), self.categories.dim) \
            if self.categories is not None else None
        scales = tensors.pop(0) if self.scales is not None else None
        return StackedMLP(tensors[0::2], tensors[1::2], self.dropout if dropout is None else dropout, embedding,
                          self.n_numeric, scales, categories)

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
        dropout = torch.cat([s.dropout if torch.is_tensor(s.dropout) else torch.full((s.k,), float(s.dropout))
                             for s in stacks])
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
            ["category", "category_mask"] if self.categories is not None else []) + (
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
        if self.categories is not None:
            arch.update(category_dim=self.categories.dim)
        return arch

    @property
    def n_inputs(self) -> int:
        """Columns of the input rows (numeric, then one-hot)."""
        d_in = self.weights[0].shape[1]
        if self.categories is not None:
            d_in += self.categories.width - self.categories.out
        if self.embedding is not None:
            F, _, d = self.embedding.shape
            d_in += F - F * d
        return d_in

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
        if self.categories is not None:
            tensors.update(category_weight=self.categories.weight, category_mask=self.categories.mask)
        meta = {"kind": "mlp", "layers": len(self.weights), "dropout": self.dropout, "n_numeric": self.n_numeric}
        if self.categories is not None:
            meta["category_dim"] = self.categories.dim
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
        categories = None
        if "category_weight" in tensors:
            categories = CategoryEmbedding(tensors["category_weight"].float(), tensors["category_mask"].float(),
                                           int(meta["category_dim"]))
        net = cls(weights, biases, float(meta["dropout"]), embedding, int(meta.get("n_numeric", 0)),
                  tensors["scales"].float() if "scales" in tensors else None, categories)
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
        if self.categories is not None:
            c = self.categories
            if c.weight.shape != c.mask.shape or c.weight.shape[0] != k or c.out > d_in or c.dim < 1 \
                    or c.out % c.dim or bool(((c.mask != 0) & (c.mask != 1)).any()):
                raise ValueError("category embedding shapes do not match")

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
        cache.inputs = parts = self._first_inputs(x, cache)
        weight, bias = self.weights[0], self.biases[0]
        if members > 1:  # every member's adapted weights, in one matmul (`members`)
            weight = ensemble.scaled_weight(weight, self.scales)
            bias = bias.repeat(1, 1, members)
            cache.member_weight = weight
        z, offset = bias, 0
        for part in parts:
            z = torch.baddbmm(z, part, weight[:, offset:offset + part.shape[2]])
            offset += part.shape[2]
        if self._folded:  # the one-hot columns through the category vectors' rows (`categories`)
            z = torch.baddbmm(z, cache.category_input, self.categories.fold_into(weight[:, offset:]))
        if members > 1:
            z = ensemble.member_major(z, members)
        cache.activations.append(None)  # the first layer's input is `inputs`
        h = z.relu_()
        alpha = drop(h, self.dropout, dropout_rng)
        for w, b in zip(self.weights[1:-1], self.biases[1:-1]):
            cache.activations.append(h)
            h = torch.baddbmm(b, h, w, alpha=alpha).relu_()
            drop(h, self.dropout, dropout_rng)
        cache.activations.append(h)
        head, head_bias = self.weights[-1], self.biases[-1]
        n_out = head.shape[-1]
        out = torch.baddbmm(head_bias.view(k * members, 1, n_out), h.view(k * members, batch, h.shape[-1]),
                            head.view(k * members, head.shape[-2], n_out), alpha=alpha)
        return out.view(k, members * batch, n_out), cache

    def _first_inputs(self, x: torch.Tensor, cache: Cache) -> list[torch.Tensor]:
        """The first layer's input parts: numeric columns (embedded or not), then the one-hot
        columns (embedded per categorical column, or as they are)."""
        one_hot = None
        if self.categories is not None:
            split = x.shape[2] - self.categories.width
            x, one_hot = x[..., :split], x[..., split:]
        parts = self.embedding.forward(x, cache) if self.embedding is not None else ([x] if x.shape[2] else [])
        if self._folded:
            cache.category_input = one_hot
        elif one_hot is not None:
            parts.append(self.categories.forward(one_hot, cache))
        return parts

    @property
    def _folded(self) -> bool:
        """Category embeddings read through one weight per step (`categories.fold_into`): without
        members (theirs scale each input column of the first layer per member)."""
        return self.categories is not None and self.members == 1

    def backward_scale(self, training: bool) -> tuple[float, float | torch.Tensor]:
        """(alpha of the matmuls, factor of the gradient through each dropout) for the backward pass."""
        return backward_scale(self.dropout, training, self.weights[0].device)

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
        alpha, scale = self.backward_scale(training)
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
        if members > 1:
            dz = ensemble.batch_major(dz, members)
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
            else:
                dw[:, rows], d_scales[:, rows] = ensemble.first_layer_grads(part, dz, weight[:, rows],
                                                                            scales_t[:, rows], members)
        effective = cache.member_weight if members > 1 else weight
        if self.embedding is not None:
            F, _, d = self.embedding.shape
            # transposed, [k, F*d, B] (summed over members), as the embeddings lay their outputs out
            d_flat_t = torch.bmm(effective[:, : F * d], dz.transpose(1, 2))
            self.embedding.backward(cache, d_flat_t, grads[0], grads[1], grads[2])
        if self.categories is not None:  # its rows are the first layer's last
            start = weight.shape[1] - self.categories.out
            d_weight = grads[3 if self.embedding is not None else 0]
            if self._folded:
                self.categories.folded_backward(cache.category_input, dz, weight[:, start:], dw[:, start:], d_weight)
            else:
                d_vectors = torch.bmm(dz, effective[:, start:].transpose(1, 2))
                self.categories.backward(cache, d_vectors, d_weight)

    # --- predictions -------------------------------------------------------------------
    def combine(self, out: torch.Tensor, classification: bool) -> torch.Tensor:
        """The fold-model's prediction from its members' outputs (`members.combine`)."""
        return ensemble.combine(out, self.members, classification)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, chunk: int = 65536, classification: bool = True) -> torch.Tensor:
        """Eval-mode predictions `[k, rows, n_out]` for inputs `[k, rows, n_in]`, in row chunks.

        With members: the combined prediction (`combine`); a single member's are its logits.
        """
        chunk = self.rows_within(PREDICT_BYTES, chunk, x.shape[2])
        parts = [self.combine(self.forward(x[:, i:i + chunk])[0], classification)
                 for i in range(0, max(x.shape[1], 1), chunk)]
        return torch.cat(parts, dim=1)

    def rows_within(self, budget: int, chunk: int, n_in: int) -> int:
        """At most `chunk` rows, fewer where a forward pass over them would hold more than `budget`
        bytes: the input, the first layer's input parts, the embeddings' cos and sin, and two
        hidden activations, for all k fold-models and E members. With the embeddings on 32
        columns (16 frequencies) of 5 folds, 65,536 rows took 2 GB at once."""
        width = self.weights[0].shape[2]
        floats = n_in + self.weights[0].shape[1] + 2 * self.members * width
        if self.embedding is not None:
            F, n, _ = self.embedding.shape
            floats += F * 2 * n
        return max(1, min(chunk, budget // (4 * self.k * floats)))


