"""A stack in training: the k fold-models of several trials, one epoch at a time, which trials
join and leave at epoch boundaries.

Read `Stack.epoch` top to bottom like a nanoGPT loop: each position draws its rows
(`batches.EpochRows`) and their weights (`weights.RowWeights`); per step, one forward, one
loss, one backward and one fused AdamW step advance every fold-model; after the epoch,
`stops.Stops` validates every fold, keeps its best weights, stops it after `patience` epochs
without improvement and asks each trial's hook whether to go on. A stopped fold or a finished
trial leaves the stack (its rows, weights and optimizer state are sliced away), so it stops
costing compute; `add` puts new trials in the freed room (continuous batching), padded to
the stack's width. The optional ingredients are objects called at fixed points of the loop,
so that a new one touches its own module and one line here: domain-adversarial training
(`domain.Adversary`), input noise (in the batches), class and importance weights (in the row
weights).

Everything a trial trains with is its own, so it trains the same in a stack as alone, and
joining late changes nothing: its seeds (init, batch order, dropout, noise), its epochs, its
learning rate schedule's clock and AdamW's step counters start when it joins.
"""

from __future__ import annotations

import time

import torch

from sweeps.data.folds import Folds
from sweeps.engine import categories
from sweeps.engine.batches import EpochRows
from sweeps.engine.config import NetConfig, groupable
from sweeps.engine.domain import Adversary
from sweeps.engine.dropout import TrialMasks
from sweeps.engine.losses import loss_and_grad
from sweeps.engine.model import StackedMLP
from sweeps.engine.optim import StackedAdamW, lr_factor, new_steps
from sweeps.engine.positions import Positions
from sweeps.engine.scores import FoldResult
from sweeps.engine.seeds import seeds_for
from sweeps.engine.stops import Stops
from sweeps.engine.weights import RowWeights


class Stack:
    """Trials training together; `add` trials, then `epoch` until `training` is empty.

    Args:
        patience: epochs without improvement before a fold stops; None trains every fold
            for `max_epochs` (the benchmark's fixed-epoch mode). Folds without validation
            rows (`make_final_fit`) always train `max_epochs` and return the last weights.
        compact: remove stopped folds from the stack (True), or keep computing them and
            ignore the result (False, "masking"; measured slower, kept for the benchmark).
        init: start every fold from these weights (a stack of one, e.g. a saved model:
            transfer learning) instead of a random initialisation.
        horizon: the epochs the learning-rate schedule spans (default `max_epochs`); a final
            fit that stops at the trials' best epoch keeps the study's horizon.
    """

    def __init__(self, folds: Folds, *, max_epochs: int, patience: int | None, compact: bool = True,
                 init: StackedMLP | None = None, horizon: int | None = None) -> None:
        self.folds, self.max_epochs, self.init, self.compact = folds, max_epochs, init, compact
        self.device = folds.X_train.device
        self.configs: list[NetConfig] = []  # per trial, in the order they joined
        self.widths: list[int] = []
        self.joined_at: list[int] = []  # the stack's epochs done when the trial joined
        self.seconds: list[float] = []  # the trial's share of the stack's time so far (by its positions)
        self.schedule_steps: list[int] = []  # the trial's optimizer steps so far: its schedule's clock
        self.adam_steps: list[list[torch.Tensor]] = []  # the trial's AdamW step counters
        self.dropout_rngs: list[torch.Generator] = []
        self.positions = Positions(0, folds.k, self.device)
        self.stops = Stops(folds, self.configs, self.positions, patience, max_epochs, compact)
        self.model: StackedMLP | None = None
        self.optimizer: StackedAdamW | None = None
        self.rows: EpochRows | None = None
        self.weights: RowWeights | None = None
        self.adversary: Adversary | None = None
        self.epochs_done = 0
        self.horizon = horizon or max_epochs

    # --- who trains ---------------------------------------------------------------------------
    @property
    def training(self) -> list[int]:
        """The trials still training (indices in the order they joined)."""
        return [t for t, done in enumerate(self.stops.finished) if not done]

    def accepts(self, config: NetConfig) -> bool:
        """Whether a trial of `config` can join: the same shape but for the width, and not into a
        domain-adversarial stack (its classifier's ramp runs on the stack's clock)."""
        if not self.configs:
            return True
        return groupable(self.configs[0], config) and not config.adversarial

    def add(self, configs: list[NetConfig], seeds: list[int], hooks: list | None = None) -> list[int]:
        """Trials join the stack (at an epoch boundary); returns their indices. `hooks`: each
        trial's `on_epoch(epoch, mean of the folds' best validation loss so far, each fold's)`,
        which may end it by returning a reason (None: no hook)."""
        hooks = list(hooks) if hooks is not None else [None] * len(configs)
        first = self.configs[0] if self.configs else configs[0]
        if not all(groupable(first, c) for c in configs) or (self.configs and not all(map(self.accepts, configs))):
            raise ValueError("train_trials: these trials cannot share a stack (depth, batch, embeddings or members "
                             "differ, or one would join a domain-adversarial stack in training)")
        if first.freeze and self.init is None:
            raise ValueError("train_trials: freeze keeps loaded layers; it needs `init` (a transferred net)")
        stacks = [self._initial(c, s) for c, s in zip(configs, seeds)]
        trials = list(range(len(self.configs), len(self.configs) + len(configs)))
        self.configs += configs
        self.widths += [c.width if self.init is None else s.weights[0].shape[2] for c, s in zip(configs, stacks)]
        self.joined_at += [self.epochs_done] * len(configs)
        self.seconds += [0.0] * len(configs)
        self.schedule_steps += [0] * len(configs)
        self.dropout_rngs += [torch.Generator(device=self.device).manual_seed(seeds_for(s, [0], "dropout")[0])
                              for s in seeds]
        positions = self.positions.add(len(configs))
        self.stops.add(stacks, positions, hooks)
        self._grow(stacks, len(configs))
        if self.rows is None:
            self.rows = EpochRows(self.folds, self.configs, seeds, self.positions)
            self.weights = RowWeights(self.folds, self.configs, self.positions)
        else:
            self.rows.add(seeds)
        if first.adversarial and self.adversary is None:
            self.adversary = Adversary(self.folds, self.configs, seeds, self.positions,
                                       self.model.weights[-1].shape[-2], self.horizon * self.rows.n_steps)
        return trials

    def _initial(self, config: NetConfig, seed: int) -> StackedMLP:
        """A trial's k fold-models as they start: `init`'s weights (transfer), or drawn from its seed."""
        folds = self.folds
        if self.init is not None:
            stack = self.init.tiled(folds.k, self.device)
            stack.dropout = config.dropout
            return stack
        return StackedMLP.init(seeds_for(seed, folds.fold_ids, "init"), folds.n_features, folds.n_outputs,
                               config.depth, config.width, config.dropout, self.device,
                               n_numeric=folds.n_numeric, embedding=config.embedding_shape, members=config.ensemble,
                               categories=categories.layout(folds.category_blocks, config.category_dim))

    def _grow(self, stacks: list[StackedMLP], joining: int) -> None:
        """The model and the optimizer with the new trials' positions after the live ones (all
        padded to the widest: a padded unit stays 0 and changes nothing)."""
        new_trials = range(len(self.configs) - joining, len(self.configs))
        self.adam_steps += [new_steps(stacks[0].params) for _ in new_trials]
        if self.model is None:
            self.model = StackedMLP.concat(stacks)
            c = self.configs[0]
            self.optimizer = StackedAdamW(self.model.params, c.lr, c.weight_decay, betas=(0.9, c.beta2),
                                          no_decay=self.model.no_decay, segments=self._segments(),
                                          frozen=self.model.frozen(c.freeze), steps=self._steps())
            return
        old = self.model
        zeros = [s._with([torch.zeros_like(t) for t in s.params]) for s in stacks]
        self.model = StackedMLP.concat([old] + stacks)
        moments = [StackedMLP.concat([old._with(m)] + zeros).params
                   for m in (self.optimizer.exp_avgs, self.optimizer.exp_avg_sqs)]
        self.optimizer = self.optimizer.grown(self.model.params, *moments, self._segments(), self._steps())

    def _segments(self) -> list[tuple[int, float, float, float]]:
        """AdamW's settings per trial, in stack order: one kernel call each."""
        return [(n, self.configs[t].lr, self.configs[t].weight_decay, self.configs[t].beta2)
                for t, n in self.positions.runs()]

    def _steps(self) -> list[list[torch.Tensor]]:
        return [self.adam_steps[t] for t, _ in self.positions.runs()]

    # --- one epoch of every live trial ------------------------------------------------------------
    def epoch(self) -> list[tuple[int, FoldResult]]:
        """Train every live trial one epoch; the trials that finished, with their results."""
        started = time.perf_counter()
        folds, model, optimizer, rows, adversary = self.folds, self.model, self.optimizer, self.rows, self.adversary
        configs, classification, members = self.configs, folds.classification, self.configs[0].ensemble
        positions = self.positions
        runs = positions.runs()
        batches = rows.epoch()
        row_weights = self.weights.epoch(batches.order)
        if adversary is not None:
            adversary.epoch(rows.n_steps, rows.batch_size)
        label_smoothing = positions.per_position([c.label_smoothing if classification else 0.0 for c in configs])
        huber = positions.per_position([0.0 if classification else c.huber for c in configs])
        clip = positions.per_position([c.grad_clip for c in configs])
        dropout = self._dropout_plan(runs)
        total_steps = self.horizon * rows.n_steps
        stack_step = self.epochs_done * rows.n_steps  # the adversary's clock (its stack never grows)
        loss_sum = torch.zeros(len(positions.live), device=self.device)
        for step in range(rows.n_steps):
            batch = slice(step * rows.batch_size, (step + 1) * rows.batch_size)
            x, y = batches.batch(step)
            n_source = x.shape[1]
            if adversary is not None:  # the target rows ride along: the domain classifier sees both
                x = adversary.inputs(x, batch, batches.folds_now)
            out, cache = model.forward(x, dropout)
            if adversary is not None:
                out = adversary.labelled(out, n_source)
            targets = y if members == 1 else y.repeat(1, members)  # every member learns from the same rows
            batch_loss, grad_out = loss_and_grad(out, targets, classification, row_weights.classes, label_smoothing,
                                                 row_weights.batch(batch), huber)
            loss_sum += batch_loss
            extra_dh = None
            if adversary is not None:
                grad_out, extra_dh = adversary.step(cache, model, grad_out, n_source, stack_step + step)
            model.backward(cache, grad_out, optimizer.grads, extra_dh=extra_dh)
            if torch.is_tensor(clip) or clip:
                optimizer.clip(clip)
            factors = [lr_factor(configs[t].schedule, self.schedule_steps[t] + step, total_steps) for t, _ in runs]
            factor = factors if len(factors) > 1 else factors[0]
            optimizer.step(factor)
            if adversary is not None:
                adversary.optimizer.step(factor)
        for t, _ in runs:
            self.schedule_steps[t] += rows.n_steps
        self.epochs_done += 1
        epochs = [self.epochs_done - joined for joined in self.joined_at]
        leaving, finished = self.stops.after_epoch(epochs, (loss_sum / (rows.rows * members)).tolist(), model,
                                                   self.weights)
        # Each trial's time is its share of the epoch (by its positions), not the wall clock from
        # when it joined: in a stack, and beside other stacks, that would count other trials' work.
        elapsed, positions_now = time.perf_counter() - started, sum(n for _, n in runs)
        for t, n in runs:
            self.seconds[t] += elapsed * n / positions_now
        results = [(t, self._result(t)) for t in finished]
        self.stops.forget(finished)
        for t in finished:  # a long-lived stack keeps nothing of its finished trials but a few numbers
            self.rows.release(t, list(self.positions.of_trial(t)))
            self.dropout_rngs[t] = None
        if leaving:
            self._drop(leaving)
        return results

    def _result(self, t: int) -> FoldResult:
        started = time.perf_counter()
        result = self.stops.result(t, self.model, self.widths[t], self.weights)
        result.seconds = self.seconds[t] + time.perf_counter() - started  # and its own final scoring
        return result

    def _drop(self, leaving: list[int]) -> None:
        kept = self.positions.drop(leaving)
        if not self.positions.live:  # empty: the next trials start a fresh stack, at their own width
            self.model = self.optimizer = self.adversary = None
            return
        self.model = self.model.select(kept)
        self.optimizer = self.optimizer.select(self.model.params, kept, self._segments(), self._steps())
        if self.adversary is not None:
            self.adversary.select(kept)

    def _dropout_plan(self, runs: list[tuple[int, int]]):
        """What `StackedMLP.forward` draws masks from: None (no dropout), one generator (one trial),
        or each trial's (positions, width, generator) (trials together)."""
        if not any(self.configs[t].dropout for t, _ in runs):
            return None
        if torch.is_tensor(self.model.dropout):
            return TrialMasks([(n, self.widths[t], self.dropout_rngs[t]) for t, n in runs], self.model.dropout,
                              self.device)
        return self.dropout_rngs[runs[0][0]]
