"""The one training engine: all k folds of a trial (and several trials) train together.

Read `train_trials` top to bottom like a nanoGPT loop: per epoch, each position draws its
rows (`batches.EpochRows`) and their weights (`weights.RowWeights`); per step, one forward,
one loss, one backward and one fused AdamW step advance every fold-model; after each epoch,
`Stops` validates every fold, keeps its best weights, stops it after `patience` epochs
without improvement and asks each trial's hook whether to go on. A stopped fold leaves the
stack (its rows, weights and optimizer state are sliced away), so it stops costing compute.
The optional ingredients are objects called at fixed points of the loop, so that a new one
touches its own module and one line here: domain-adversarial training (`domain.Adversary`),
input noise (in the batches), class and importance weights (in the row weights).

The caller's `on_epoch(epoch, mean_val_loss, fold_losses)` hook sees the mean over folds of
each fold's best validation loss so far after every epoch (what Optuna's pruners see) and
may end its trial by returning a reason.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from sweeps.data.folds import Folds
from sweeps.engine import categories
from sweeps.engine.batches import EpochRows
from sweeps.engine.config import NetConfig, groupable
from sweeps.engine.domain import Adversary
from sweeps.engine.losses import loss_and_grad
from sweeps.engine.model import StackedMLP
from sweeps.engine.optim import StackedAdamW, lr_factor
from sweeps.engine.positions import Positions
from sweeps.engine.scores import EVAL_CHUNK, FoldResult, final_scores, mean_losses, nan_mean, worst_of
from sweeps.engine.seeds import seeds_for
from sweeps.engine.weights import RowWeights

# on_epoch(epoch, mean of the folds' best validation loss so far, each fold's) -> a reason to stop, or None
EpochHook = Callable[[int, float, list], "str | None"]


def train_folds(folds: Folds, config: NetConfig, *, max_epochs: int, patience: int | None,
                seed: int, on_epoch: EpochHook | None = None, compact: bool = True,
                init: StackedMLP | None = None, horizon: int | None = None) -> FoldResult:
    """Train one fold-model per fold of `folds`, together, and return their results.

    Args:
        patience: epochs without improvement before a fold stops; None trains every fold
            for `max_epochs` (the benchmark's fixed-epoch mode). Folds without validation
            rows (`make_final_fit`) always train `max_epochs` and return the last weights.
        seed: the trial's seed; each fold derives its own init and batch-order seeds from
            it and its fold id, so a fold trains the same inside the stack or alone.
        compact: remove stopped folds from the stack (True), or keep computing them and
            ignore the result (False, "masking"; measured slower, kept for the benchmark).
        init: start every fold from these weights (a stack of one, e.g. a saved model:
            transfer learning) instead of a random initialisation.
        horizon: the epochs the learning-rate schedule spans (default `max_epochs`); a final
            fit that stops at the trials' best epoch keeps the study's horizon.
    """
    return train_trials(folds, [config], [seed], [on_epoch], max_epochs=max_epochs, patience=patience,
                        compact=compact, init=init, horizon=horizon)[0]


def train_trials(folds: Folds, configs: list[NetConfig], seeds: list[int], on_epochs: list[EpochHook | None], *,
                 max_epochs: int, patience: int | None, compact: bool = True, init: StackedMLP | None = None,
                 horizon: int | None = None) -> list[FoldResult]:
    """Train the k fold-models of each of several trials in one stack; one `FoldResult` per trial.

    The stack holds trial t's fold f at one position: weights [trials x k, ...]. Trials of
    different widths are padded to the widest (`StackedMLP.concat`: padded units stay 0);
    each trial keeps its own learning rate, weight decay, beta2 and schedule (one AdamW
    kernel call per trial), dropout, label smoothing, Huber threshold, noise, class weights and gradient
    clipping (per position), and its own random streams: a trial trains as it would alone
    (`tests/engine`). Each trial reports, is pruned and stops on its own; a pruned trial or a
    stopped fold leaves the stack.
    """
    started = time.perf_counter()
    _check_together(configs, init)
    device, classification = folds.X_train.device, folds.classification
    stacks = [_initial(folds, config, seed, init) for config, seed in zip(configs, seeds)]
    widths = [c.width if init is None else s.weights[0].shape[2] for c, s in zip(configs, stacks)]
    model, members = StackedMLP.concat(stacks), configs[0].ensemble
    positions = Positions(len(configs), folds.k, device)
    rows = EpochRows(folds, configs, seeds, positions)
    weights = RowWeights(folds, configs, positions)
    optimizer = _optimizer(model, configs, positions)
    total_steps = (horizon or max_epochs) * rows.n_steps
    adversary = Adversary(folds, configs, seeds, positions, model.weights[-1].shape[-2], total_steps) \
        if configs[0].adversarial else None
    dropout_rngs = [torch.Generator(device=device).manual_seed(seeds_for(s, [0], "dropout")[0]) for s in seeds]
    stops = Stops(folds, configs, [s.n_params for s in stacks], positions, weights, model, patience, on_epochs,
                  max_epochs, compact)
    smoothing = [c.label_smoothing if classification else 0.0 for c in configs]
    hubers = [0.0 if classification else c.huber for c in configs]
    clipping = [c.grad_clip for c in configs]
    step_count = 0
    for epoch in range(1, max_epochs + 1):
        runs = positions.runs()
        batches = rows.epoch()
        row_weights = weights.epoch(batches.order)
        if adversary is not None:
            adversary.epoch(rows.n_steps, rows.batch_size)
        label_smoothing, clip = positions.per_position(smoothing), positions.per_position(clipping)
        huber = positions.per_position(hubers)
        dropout = _dropout_plan(model, configs, runs, widths, dropout_rngs)
        loss_sum = torch.zeros(len(positions.live), device=device)
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
                grad_out, extra_dh = adversary.step(cache, model, grad_out, n_source, step_count)
            model.backward(cache, grad_out, optimizer.grads, extra_dh=extra_dh)
            if torch.is_tensor(clip) or clip:
                optimizer.clip(clip)
            factors = [lr_factor(configs[t].schedule, step_count, total_steps) for t, _ in runs]
            factor = factors if len(factors) > 1 else factors[0]
            optimizer.step(factor)
            if adversary is not None:
                adversary.optimizer.step(factor)
            step_count += 1
        leaving = stops.after_epoch(epoch, (loss_sum / (rows.rows * members)).tolist(), model)
        if stops.over:
            break
        if leaving and compact:
            kept = positions.drop(leaving)
            model = model.select(kept)
            optimizer = _optimizer(model, configs, positions, carry=optimizer, kept=kept)
            if adversary is not None:
                adversary.select(kept)
    return stops.results_of(model, widths, started)


# --- set-up ------------------------------------------------------------------------------------
def _check_together(configs: list[NetConfig], init: StackedMLP | None) -> None:
    if len(configs) > 1 and not all(groupable(configs[0], c) for c in configs[1:]):
        raise ValueError("train_trials: these trials cannot share a stack (depth, batch, embeddings or members differ)")
    if configs[0].freeze and init is None:
        raise ValueError("train_trials: freeze keeps loaded layers; it needs `init` (a transferred net)")


def _initial(folds: Folds, config: NetConfig, seed: int, init: StackedMLP | None) -> StackedMLP:
    """A trial's k fold-models as they start: `init`'s weights (transfer), or drawn from its seed."""
    if init is not None:
        stack = init.tiled(folds.k, folds.X_train.device)
        stack.dropout = config.dropout
        return stack
    return StackedMLP.init(seeds_for(seed, folds.fold_ids, "init"), folds.n_features, folds.n_outputs,
                           config.depth, config.width, config.dropout, folds.X_train.device,
                           n_numeric=folds.n_numeric, embedding=config.embedding_shape, members=config.ensemble,
                           categories=categories.layout(folds.category_blocks, config.category_dim))


def _optimizer(model: StackedMLP, configs: list[NetConfig], positions: Positions, carry: StackedAdamW | None = None,
               kept: torch.Tensor | None = None) -> StackedAdamW:
    """AdamW over the stack, one segment of settings per trial (`carry`: the state of the
    bigger stack the positions at `kept` come from)."""
    segments = [(n, configs[t].lr, configs[t].weight_decay, configs[t].beta2) for t, n in positions.runs()]
    if carry is not None:
        return carry.select(model.params, kept, segments)
    c = configs[0]
    return StackedAdamW(model.params, c.lr, c.weight_decay, betas=(0.9, c.beta2), no_decay=model.no_decay,
                        segments=segments if len(configs) > 1 else None, frozen=model.frozen(c.freeze))


def _dropout_plan(model: StackedMLP, configs: list[NetConfig], runs: list[tuple[int, int]], widths: list[int],
                  generators: list[torch.Generator]):
    """What `StackedMLP.forward` draws masks from: None (no dropout), one generator (one trial),
    or each trial's (positions, width, generator) (trials together)."""
    if not any(configs[t].dropout for t, _ in runs):
        return None
    if torch.is_tensor(model.dropout):
        return [(n, widths[t], generators[t]) for t, n in runs]
    return generators[runs[0][0]]


# --- after each epoch --------------------------------------------------------------------------------
class Stops:
    """Validation, best weights, early stopping and each trial's hook, after every epoch.

    Keeps, per stack position (live or not): the best validation loss and epoch, and the
    best weights (`best`). `after_epoch` returns the positions that leave the stack; `over`
    says that training ends. Folds without validation rows (a final fit) train every epoch,
    and their last weights are the model.
    """

    def __init__(self, folds: Folds, configs: list[NetConfig], n_params: list[int], positions: Positions,
                 weights: RowWeights, model: StackedMLP, patience: int | None, hooks: list[EpochHook | None],
                 max_epochs: int, compact: bool) -> None:
        self.folds, self.configs, self.positions, self.weights = folds, configs, positions, weights
        self.patience, self.hooks, self.compact = patience, hooks, compact
        k, P = folds.k, len(configs)
        self.results = [FoldResult([], [], [], [], [f"reached max_epochs={max_epochs}"] * k, n_params=n,
                                   fold_curves=[[] for _ in range(k)]) for n in n_params]
        self.best = model.clone()
        self.best_val = [math.inf] * (P * k)
        self.best_epoch = [0] * (P * k)
        self.done = [False] * (P * k)  # only used when masking: stopped folds still in the stack
        self.finished = [False] * P  # a trial pruned, diverged, or every fold of it stopped
        self.over = False

    def after_epoch(self, epoch: int, train: list[float], model: StackedMLP) -> list[int]:
        train_of = dict(zip(self.positions.live, train))
        if not self.folds.has_validation:
            self._final_fit_epoch(epoch, train_of)
            return []
        val, by_group = self._validate(model)
        val_of = dict(zip(self.positions.live, val))
        leaving: list[int] = []
        for t, _ in self.positions.runs():
            leaving += self._trial_epoch(t, epoch, train_of, val_of, by_group, model)
        live = self.positions.live
        self.over = all(self.finished) or all(self.done[p] or p in leaving for p in live)
        if not self.compact:
            for p in leaving:
                self.done[p] = True  # masking: it keeps computing, its results are ignored
        return leaving

    def _final_fit_epoch(self, epoch: int, train_of: dict[int, float]) -> None:
        """A final fit: fixed epochs, the last weights are the model."""
        live, owner = self.positions.live, self.positions.owner
        for t in {owner[p] for p in live}:
            values = [train_of[p] for p in live if owner[p] == t]
            self.results[t].curve_train.append(float(np.mean(values)))
            if not all(map(math.isfinite, values)):
                self.results[t].diverged = f"diverged: the training loss became non-finite at epoch {epoch}"
                self.finished[t] = True
        self.over = all(self.finished)

    def _validate(self, model: StackedMLP) -> tuple[list[float], torch.Tensor | None]:
        """Every live fold with its current weights (no dropout): its loss, and per group."""
        folds, now = self.folds, self.positions.folds_now()
        val, by_group = mean_losses(
            model.predict(folds.X_val[now], EVAL_CHUNK, folds.classification), folds.y_val[now],
            folds.val_weight[now], folds.classification, self.weights.validation(),
            None if folds.val_groups is None else folds.val_groups[now], len(folds.group_names))
        if self.configs[0].worst_group:  # folds stop on (and the trial is scored by) their worst group
            val = worst_of(by_group)
        return val.tolist(), by_group

    def _trial_epoch(self, t: int, epoch: int, train_of: dict, val_of: dict, by_group: torch.Tensor | None,
                     model: StackedMLP) -> list[int]:
        """Trial t's epoch: curves, divergence, best weights, early stopping, its hook. Returns its
        positions that leave the stack."""
        live, fold_of, result = self.positions.live, self.positions.fold_of, self.results[t]
        mine = [p for p in live if self.positions.owner[p] == t and not self.done[p]]
        if not mine:
            return []
        for p in mine:
            result.fold_curves[fold_of[p]].append(val_of[p])
        result.curve_train.append(float(np.mean([train_of[p] for p in mine])))
        result.curve_val.append(float(np.mean([val_of[p] for p in mine])))
        if by_group is not None:  # per group, the mean over the trial's training folds
            result.group_curve_val.append(nan_mean(by_group[self.positions.index([live.index(p) for p in mine])]))
        bad = [fold_of[p] for p in mine if not (math.isfinite(train_of[p]) and math.isfinite(val_of[p]))]
        if bad:
            result.diverged = f"diverged: the loss of fold {bad[0]} became non-finite at epoch {epoch}"
            for p in mine:
                result.stop_reasons[fold_of[p]] = f"trial ended at epoch {epoch}: a fold diverged"
            self.finished[t] = True
            return mine
        improved = [p for p in mine if val_of[p] < self.best_val[p]]
        for p in improved:
            self.best_val[p], self.best_epoch[p] = val_of[p], epoch
        if improved:
            _copy_positions(self.best, model, [live.index(p) for p in improved], improved)
        stopping = []
        if self.patience is not None:
            stopping = [p for p in mine if epoch - self.best_epoch[p] >= self.patience]
            for p in stopping:
                result.stop_reasons[fold_of[p]] = (
                    f"early stop at epoch {epoch}: no better validation loss for {self.patience} epochs")
        trial_best = [self.best_val[p] for p in self.positions.of_trial(t)]
        reported = float(np.mean(trial_best))
        result.reported.append(reported)
        hook = self.hooks[t]
        reason = hook(epoch, reported, trial_best) if hook is not None else None
        if reason:
            result.interrupted = reason
            for p in mine:
                if p not in stopping:
                    result.stop_reasons[fold_of[p]] = f"trial ended at epoch {epoch} by the epoch hook (pruning)"
            self.finished[t] = True
            return mine
        if len(stopping) == len(mine) and all(self.done[p] or p in stopping
                                              for p in live if self.positions.owner[p] == t):
            self.finished[t] = True
        return stopping

    def results_of(self, model: StackedMLP, widths: list[int], started: float) -> list[FoldResult]:
        """Each trial's result, scored at its best weights (a final fit: its last)."""
        final = self.best if self.folds.has_validation else model
        P, k = len(self.configs), self.folds.k
        for t, (result, config) in enumerate(zip(self.results, self.configs)):
            own = final.select(self.positions.index(list(self.positions.of_trial(t)))) if P > 1 else final
            result.model = own.crop(widths[t], config.dropout) if P > 1 else own
            final_scores(result, result.model, self.folds, self.best_epoch[t * k:(t + 1) * k],
                         self.weights.balanced_classes, self.configs[0].worst_group)
            result.seconds = time.perf_counter() - started
        return self.results


def _copy_positions(dst: StackedMLP, src: StackedMLP, positions: list[int], folds: list[int]) -> None:
    """dst[folds] = src[positions], for every tensor (the best weights so far)."""
    device = src.weights[0].device
    src_index = torch.tensor(positions, device=device)
    dst_index = torch.tensor(folds, device=device)
    for d, s in zip(dst.params, src.params):
        d.index_copy_(0, dst_index, s.index_select(0, src_index))
