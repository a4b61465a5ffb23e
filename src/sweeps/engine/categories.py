"""Learned embeddings of the categorical columns (`Space(category_dim=d)`), stacked over fold-models.

Each categorical column j arrives one-hot encoded (its kept categories, and a shared column
for rare ones; `data.preprocess`). With `category_dim=d`, every category of column j gets a
learned d-vector, and the first hidden layer reads the J columns' vectors instead of their
one-hot blocks: RealMLP's and TabM's treatment of categories, a low-rank factorization of the
first layer's weights for each column, with its own weight decay.

Every column of every fold-model is one weight `[k, C, J*d]` that is zero outside each
column's block (rows of column j, outputs j*d:(j+1)*d) and stays zero (its gradient is
masked, and AdamW's decay of zero is zero). The first layer then reads the one-hot part
`[k, B, C]` through the product of this weight and its own rows for the vectors, `[k, C, width]`
(`fold_into`), computed once per step: the rows of a batch cost what one-hot inputs cost, and
the embedding adds three matmuls of C x J*d x width, whatever the batch (`bench_engine.py
--only categories`). With shared-weight members, whose adapters scale each input column of
the first layer per member, the vectors are computed per row instead (`forward`).
Folds may keep different categories (each fold's encoder is fitted on its training part), so
the block layout, and the mask, are per fold. `tests/engine` checks the gradient against
autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def layout(blocks: list[list[tuple[int, int]]], dim: int) -> tuple[list[list[tuple[int, int]]], int] | None:
    """(each fold's blocks, d) when a trial embeds categories: `category_dim` asked, and the table
    has categorical columns (`Folds.category_blocks`); None otherwise (one-hot inputs as they are)."""
    return (blocks, dim) if dim and blocks and blocks[0] else None


@dataclass
class CategoryEmbedding:
    weight: torch.Tensor  # [k, C, J*d]: category vectors, zero outside each column's block
    mask: torch.Tensor  # [k, C, J*d]: 1 inside the blocks (not trained)
    dim: int  # d

    @classmethod
    def init(cls, blocks: list[list[tuple[int, int]]], width: int, dim: int,
             generators: list[torch.Generator]) -> CategoryEmbedding:
        """Per fold: its columns' (first one-hot column, count) within the `width` one-hot columns;
        vectors drawn from N(0, 1/d) (a category's vector has about unit norm, as a one-hot row)."""
        k, columns = len(blocks), len(blocks[0])
        weight = torch.zeros(k, width, columns * dim)
        mask = torch.zeros(k, width, columns * dim)
        for f, (fold_blocks, generator) in enumerate(zip(blocks, generators)):
            for j, (start, count) in enumerate(fold_blocks):
                mask[f, start:start + count, j * dim:(j + 1) * dim] = 1.0
            weight[f] = torch.randn(width, columns * dim, generator=generator) / math.sqrt(dim) * mask[f]
        return cls(weight, mask, dim)

    @property
    def width(self) -> int:
        """One-hot columns read."""
        return self.weight.shape[1]

    @property
    def out(self) -> int:
        """Columns written: J * d."""
        return self.weight.shape[2]

    def fold_into(self, rows: torch.Tensor) -> torch.Tensor:
        """The first layer's weight for the one-hot columns `[k, C, width]`, from its rows for the
        category vectors `rows` `[k, J*d, width]`."""
        return torch.bmm(self.weight, rows)

    def folded_backward(self, one_hot: torch.Tensor, dz: torch.Tensor, rows: torch.Tensor,
                        d_rows: torch.Tensor, d_weight: torch.Tensor) -> None:
        """Gradients of `fold_into`'s two factors, from the first layer's pre-activation gradient
        `dz` `[k, B, width]`: into `d_rows` `[k, J*d, width]` and `d_weight` `[k, C, J*d]`."""
        g = torch.bmm(one_hot.transpose(1, 2), dz)  # [k, C, width]: the gradient one-hot inputs would have
        torch.bmm(self.weight.transpose(1, 2), g, out=d_rows)
        torch.bmm(g, rows.transpose(1, 2), out=d_weight)
        d_weight.mul_(self.mask)

    def forward(self, one_hot: torch.Tensor, cache) -> torch.Tensor:
        cache.category_input = one_hot
        return torch.bmm(one_hot, self.weight)

    def backward(self, cache, d_out: torch.Tensor, d_weight: torch.Tensor) -> None:
        torch.bmm(cache.category_input.transpose(1, 2), d_out, out=d_weight)
        d_weight.mul_(self.mask)

    def select(self, index: torch.Tensor) -> CategoryEmbedding:
        return CategoryEmbedding(self.weight[index], self.mask[index], self.dim)
