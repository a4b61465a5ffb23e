"""The one training engine: all k folds of a trial train together, with early stopping.

Read it top to bottom like a nanoGPT loop: per epoch, each fold shuffles its own training
rows; per step, one forward, one backward and one fused AdamW step advance all k
fold-models; after each epoch, every fold is validated, keeps its best weights, and stops
after `patience` epochs without improvement. A stopped fold leaves the stack (its rows,
weights and optimizer state are sliced away), so it stops costing compute.

The caller's `on_epoch(epoch, mean_val_loss)` hook sees the mean over folds of each
fold's best validation loss so far after every epoch (what Optuna's pruners see) and
may end training by returning a reason.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from sweeps.engine.config import NetConfig, groupable
from sweeps.engine.domain import DomainHead, domain_seeds
from sweeps.engine.domain import ramp as domain_ramp
from sweeps.data.folds import Folds
from sweeps.engine.model import StackedMLP, loss_and_grad, per_row_losses, seeds_for
from sweeps.engine.optim import StackedAdamW, lr_factor
from sweeps.data.shared import WINDOW_ROWS

# on_epoch(epoch, mean of the folds' best validation loss so far, each fold's) -> a reason to stop, or None
EpochHook = Callable[[int, float, list], "str | None"]
EVAL_CHUNK = 16384  # rows per forward pass when validating: bounds memory on big tables


@dataclass
class FoldResult:
    """What training all folds of one configuration produced (per-fold lists in fold order)."""

    val_losses: list[float]  # each fold's best validation loss
    train_losses: list[float]  # each fold's training loss at its best epoch (eval mode, no dropout)
    metrics: list[float]  # accuracy (classification) or RMSE in target units (regression)
    best_epochs: list[int]  # 1-based epoch of each fold's best validation loss
    stop_reasons: list[str]
    curve_train: list[float] = field(default_factory=list)  # per epoch: mean minibatch loss of training folds
    curve_val: list[float] = field(default_factory=list)  # per epoch: mean validation loss of training folds
    reported: list[float] = field(default_factory=list)  # per epoch: what on_epoch saw
    fold_curves: list[list[float]] = field(default_factory=list)  # per fold, per epoch it trained: validation loss
    interrupted: str | None = None  # the hook's reason, if it ended training
    diverged: str | None = None  # set when a loss became NaN or infinite
    n_params: int = 0
    seconds: float = 0.0
    model: StackedMLP | None = None  # the best weights of every fold
    balanced_accuracies: list[float] = field(default_factory=list)  # classification only
    macro_f1s: list[float] = field(default_factory=list)  # classification only
    # Study(groups=): per fold, per group (Folds.group_names), at the best weights; NaN where a
    # fold's validation rows hold none of the group
    group_val_losses: list[list[float]] = field(default_factory=list)
    group_metrics: list[list[float]] = field(default_factory=list)  # accuracy, or RMSE in target units
    group_curve_val: list[list[float]] = field(default_factory=list)  # per epoch, per group: mean over folds

    @property
    def cv_loss(self) -> float:
        return float(np.mean(self.val_losses))

    @property
    def honest_cv_loss(self) -> float | None:
        """The CV loss with each fold's stopping epoch chosen on the *other* folds (see `honest_cv`)."""
        return honest_cv(self.fold_curves)


def honest_cv(fold_curves: list[list[float]]) -> float | None:
    """A CV estimate whose stopping epoch was not chosen on the fold it scores.

    Early stopping keeps each fold's best epoch, chosen on that fold's own validation rows,
    which then score it: the CV loss is optimistic (skorch#837, sklearn#1626). Here fold f is
    scored at the epoch where the mean of the *other* folds' validation curves is lowest
    (among the epochs every one of them trained, and fold f too): leave-one-fold-out
    selection of the epoch. The difference to the CV loss is the optimism of early stopping.
    """
    k = len(fold_curves)
    if k < 2 or any(not c for c in fold_curves):
        return None
    scores = []
    for f, curve in enumerate(fold_curves):
        others = [c for g, c in enumerate(fold_curves) if g != f]
        epochs = min(len(curve), *(len(c) for c in others))
        mean_others = np.mean([c[:epochs] for c in others], axis=0)
        scores.append(curve[int(np.argmin(mean_others))])
    value = float(np.mean(scores))
    return value if math.isfinite(value) else None


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
    kernel call per trial), dropout, label smoothing, noise, class weights and gradient
    clipping (per position), and its own random streams: a trial trains as it would alone
    (`tests/test_train.py`). Each trial reports, is pruned and stops on its own; a pruned
    trial or a stopped fold leaves the stack.
    """
    started = time.perf_counter()
    device = folds.X_train.device
    k, n_train = folds.k, folds.X_train.shape[1]
    P = len(configs)
    if P > 1 and not all(groupable(configs[0], c) for c in configs[1:]):
        raise ValueError("train_trials: these trials cannot share a stack (depth, batch, embeddings or members differ)")
    if configs[0].freeze and init is None:
        raise ValueError("train_trials: freeze keeps loaded layers; it needs `init` (a transferred net)")
    fold_ids = folds.fold_ids
    stacks = []
    for config, seed in zip(configs, seeds):
        if init is not None:
            stack = init.tiled(k, device)
            stack.dropout = config.dropout
        else:
            stack = StackedMLP.init(seeds_for(seed, fold_ids, "init"), folds.n_features, folds.n_outputs,
                                    config.depth, config.width, config.dropout, device, n_numeric=folds.n_numeric,
                                    embedding=config.embedding_shape, members=config.ensemble)
        stacks.append(stack)
    results = [FoldResult([], [], [], [], [f"reached max_epochs={max_epochs}"] * k, n_params=s.n_params)
               for s in stacks]
    for result in results:
        result.fold_curves = [[] for _ in range(k)]
    model = StackedMLP.concat(stacks)
    widths = [c.width if init is None else s.weights[0].shape[2] for c, s in zip(configs, stacks)]
    members = model.members
    batch_size = configs[0].batch_size

    # Stack positions, trial-major: position -> (trial, fold). `best` keeps every position.
    owner = [t for t in range(P) for _ in range(k)]
    fold_of = [f for _ in range(P) for f in range(k)]
    live = list(range(P * k))  # positions still in the stack, in stack order
    index = lambda positions: torch.tensor(positions, device=device)  # noqa: E731

    # Training may weigh classes per trial; validation weighs them per study, so that every
    # trial's value is on one scale (see Study.balanced_validation).
    balanced = class_weights(folds) if folds.classification else None
    weighted = [c.class_weight == "balanced" for c in configs]
    row_weights = None
    if balanced is not None and any(weighted):
        row_weights = torch.stack([balanced[f] if weighted[t] else torch.ones_like(balanced[f])
                                   for t, f in zip(owner, fold_of)])
    val_weights = balanced[fold_of] if configs[0].balanced_validation and balanced is not None else None
    # Importance weighting (Study(target_data=)): each training row weighs its density ratio.
    importance = None
    if configs[0].importance != "none":
        if folds.train_importance is None:
            raise ValueError("train_trials: importance weighting needs folds made with target rows")
        importance = folds.train_importance[fold_of]  # [positions, n_train]
    per_position = lambda values: torch.tensor(values, dtype=torch.float32, device=device)  # noqa: E731
    smoothing = [c.label_smoothing if folds.classification else 0.0 for c in configs]
    clip = [c.grad_clip for c in configs]
    noise_rngs = [torch.Generator(device=device).manual_seed(seeds_for(s, [0], "noise")[0]) for s in seeds]
    dropout_rngs = [torch.Generator(device=device).manual_seed(seeds_for(s, [0], "dropout")[0]) for s in seeds]
    batch_rngs = [torch.Generator().manual_seed(r) for s in seeds for r in seeds_for(s, fold_ids, "batches")]
    best = model.clone()

    def segments(positions: list[int]) -> list[tuple[int, int]]:
        """(trial, positions of it) runs in stack order."""
        runs: list[tuple[int, int]] = []
        for p in positions:
            if runs and runs[-1][0] == owner[p]:
                runs[-1] = (owner[p], runs[-1][1] + 1)
            else:
                runs.append((owner[p], 1))
        return runs

    def optimizer_for(stack: StackedMLP, positions: list[int], carry: StackedAdamW | None = None,
                      keep: torch.Tensor | None = None) -> StackedAdamW:
        runs = [(n, configs[t].lr, configs[t].weight_decay, configs[t].beta2) for t, n in segments(positions)]
        if carry is not None:
            return carry.select(stack.params, keep, runs)
        c = configs[0]
        return StackedAdamW(stack.params, c.lr, c.weight_decay, betas=(0.9, c.beta2), no_decay=stack.no_decay,
                            segments=runs if P > 1 else None, frozen=stack.frozen(c.freeze))

    optimizer = optimizer_for(model, live)
    # Domain-adversarial training (`domain.py`): a domain classifier per position, its own
    # AdamW (the trial's lr and beta2, no decay), and target rows drawn per position.
    adversarial = configs[0].adversarial
    head = domain_optimizer = None
    if adversarial:
        if folds.target_X is None:
            raise ValueError("train_trials: adversarial training needs folds made with target rows")
        head = DomainHead.init([r for s in seeds for r in domain_seeds(s, fold_ids)], model.weights[-1].shape[-2],
                               device)

        def domain_optimizer_for(positions: list[int], carry: StackedAdamW | None = None,
                                 keep: torch.Tensor | None = None) -> StackedAdamW:
            runs = [(n, DOMAIN_LR * configs[t].lr, 0.0, configs[t].beta2) for t, n in segments(positions)]
            if carry is not None:
                return carry.select(head.params, keep, runs)
            return StackedAdamW(head.params, DOMAIN_LR * configs[0].lr, 0.0, betas=(0.9, configs[0].beta2),
                                no_decay=[True] * 4, segments=runs if P > 1 else None)

        domain_optimizer = domain_optimizer_for(live)
        target_rngs = [torch.Generator().manual_seed(r) for s in seeds for r in seeds_for(s, fold_ids, "target rows")]
    best_val = [math.inf] * (P * k)
    best_epoch = [0] * (P * k)
    done = [False] * (P * k)  # only used when masking: stopped folds still in the stack
    finished = [False] * P  # a trial pruned, diverged, or every fold of it stopped
    # Re-sampling (classification): every epoch draws `per_class` rows of each class from the
    # fold's real training rows; validation rows are never touched.
    resampling = configs[0].resampling if folds.classification and configs[0].resampling != "none" else None
    epoch_rows = n_train
    if resampling is not None:
        epoch_class_rows = [class_rows(folds, f) for f in range(k)]
        per_class = epoch_class_size(resampling, folds.split_class_counts)
        epoch_rows = per_class * folds.n_outputs
    n_steps = math.ceil(epoch_rows / batch_size)
    total_steps = (horizon or max_epochs) * n_steps
    step_count = 0

    for epoch in range(1, max_epochs + 1):
        runs = segments(live)
        # What differs per trial, as one value per position, or one value when every trial agrees.
        uniform = lambda values: values[0] if len(set(values)) == 1 else per_position(  # noqa: E731
            [values[owner[p]] for p in live])
        epoch_smoothing, epoch_clip = uniform(smoothing), uniform(clip)
        any_noise = any(configs[t].noise for t, _ in runs)
        dropout_plan = None  # one generator (one trial), or each trial's own (trials together)
        if any(configs[t].dropout for t, _ in runs):
            dropout_plan = [(n, widths[t], dropout_rngs[t]) for t, n in runs] if torch.is_tensor(model.dropout) \
                else dropout_rngs[runs[0][0]]
        # Each fold shuffles its own rows (or draws its class-balanced epoch from them);
        # gathering once per epoch makes every batch a view.
        if resampling is None:
            order = torch.stack([torch.randperm(n_train, generator=batch_rngs[p]) for p in live]).to(device)
        else:
            order = torch.stack([resampled_epoch(epoch_class_rows[fold_of[p]], per_class, batch_rngs[p])
                                 for p in live]).to(device)
        folds_now = index([fold_of[p] for p in live])
        # One shared copy of the rows (`sweeps.shared`): read and preprocess the epoch a window
        # of rows at a time, not all at once (that would be the copy the layout avoids).
        window = folds.shared and _window_steps(batch_size) < n_steps
        X = None if window else folds.X_train[folds_now.unsqueeze(1), order]
        y = folds.y_train[folds_now.unsqueeze(1), order]
        loss_sum = torch.zeros(len(live), device=device)
        live_at = index(live)
        step_weights = None if row_weights is None else row_weights[live_at]  # once per epoch, not per step
        epoch_importance = None if importance is None else importance[live_at].gather(1, order)
        if head is not None:  # each position's target rows for the epoch, a batch's worth per step
            target_order = torch.stack([torch.randint(folds.target_X.shape[1], (n_steps * batch_size,),
                                                      generator=target_rngs[p]) for p in live]).to(device)
        for step in range(n_steps):
            rows = slice(step * batch_size, (step + 1) * batch_size)
            if window:
                steps = _window_steps(batch_size)
                if step % steps == 0:
                    start = step * batch_size
                    X = folds.X_train[folds_now.unsqueeze(1), order[:, start:start + steps * batch_size]]
                x = X[:, slice(rows.start - start, rows.stop - start)]
            else:
                x = X[:, rows]
            if any_noise:  # augmentation: a fresh perturbation of every row, every step, per trial
                x = _with_noise(x, runs, configs, noise_rngs)
            n_source = x.shape[1]
            if head is not None:  # the target rows ride along: the domain classifier sees both
                x = torch.cat([x, folds.target_X[folds_now.unsqueeze(1), target_order[:, rows][:, :n_source]]], dim=1)
            out, cache = model.forward(x, dropout_plan)
            if head is not None:  # the labels' loss is the training rows' alone
                out = out.view(len(live), members, 2 * n_source, -1)[:, :, :n_source].reshape(
                    len(live), members * n_source, -1)
            # Every member learns from the same rows: their targets, once per member.
            targets = y[:, rows] if members == 1 else y[:, rows].repeat(1, members)
            row_weight = None
            if epoch_importance is not None:
                row_weight = epoch_importance[:, rows] if members == 1 else epoch_importance[:, rows].repeat(1, members)
            batch_loss, grad_out = loss_and_grad(out, targets, folds.classification, step_weights, epoch_smoothing,
                                                 row_weight)
            loss_sum += batch_loss
            extra_dh = None
            if head is not None:
                grad_out = _pad_target_rows(grad_out, len(live), members, n_source)
                extra_dh = _domain_step(head, domain_optimizer, cache, model, members, n_source,
                                        adversarial * domain_ramp(step_count / total_steps))
            model.backward(cache, grad_out, optimizer.grads, extra_dh=extra_dh)
            if torch.is_tensor(epoch_clip) or epoch_clip:
                optimizer.clip(epoch_clip)
            factors = [lr_factor(configs[t].schedule, step_count, total_steps) for t, _ in runs]
            optimizer.step(factors if len(factors) > 1 else factors[0])
            if domain_optimizer is not None:
                domain_optimizer.step(factors if len(factors) > 1 else factors[0])
            step_count += 1

        train = (loss_sum / (epoch_rows * members)).tolist()
        train_of = dict(zip(live, train))
        if not folds.has_validation:  # a final fit: fixed epochs, the last weights are the model
            for t in {owner[p] for p in live}:
                values = [train_of[p] for p in live if owner[p] == t]
                results[t].curve_train.append(float(np.mean(values)))
                if not all(map(math.isfinite, values)):
                    results[t].diverged = f"diverged: the training loss became non-finite at epoch {epoch}"
                    finished[t] = True
            if all(finished):
                break
            continue

        # Validate every training fold with its current weights (no dropout).
        val, val_by_group = _mean_losses(
            model.predict(folds.X_val[folds_now], EVAL_CHUNK, folds.classification), folds.y_val[folds_now],
            folds.val_weight[folds_now], folds.classification, None if val_weights is None else val_weights[live_at],
            None if folds.val_groups is None else folds.val_groups[folds_now], len(folds.group_names))
        if configs[0].worst_group:  # folds stop on (and the trial is scored by) their worst group
            val = worst_of(val_by_group)
        val_of = dict(zip(live, val.tolist()))
        stopping: list[int] = []
        for t, _ in runs:
            result, config = results[t], configs[t]
            mine = [p for p in live if owner[p] == t and not done[p]]
            if not mine:
                continue
            for p in mine:
                result.fold_curves[fold_of[p]].append(val_of[p])
            result.curve_train.append(float(np.mean([train_of[p] for p in mine])))
            result.curve_val.append(float(np.mean([val_of[p] for p in mine])))
            if val_by_group is not None:  # per group, the mean over the trial's training folds
                result.group_curve_val.append(_nan_mean(val_by_group[index([live.index(p) for p in mine])]))
            bad = [fold_of[p] for p in mine if not (math.isfinite(train_of[p]) and math.isfinite(val_of[p]))]
            if bad:
                result.diverged = f"diverged: the loss of fold {bad[0]} became non-finite at epoch {epoch}"
                for p in mine:
                    result.stop_reasons[fold_of[p]] = f"trial ended at epoch {epoch}: a fold diverged"
                finished[t] = True
                stopping += mine
                continue
            improved = [p for p in mine if val_of[p] < best_val[p]]
            for p in improved:
                best_val[p], best_epoch[p] = val_of[p], epoch
            if improved:
                _copy_positions(best, model, [live.index(p) for p in improved], improved)
            trial_stopping = []
            if patience is not None:
                trial_stopping = [p for p in mine if epoch - best_epoch[p] >= patience]
                for p in trial_stopping:
                    result.stop_reasons[fold_of[p]] = (
                        f"early stop at epoch {epoch}: no better validation loss for {patience} epochs")
            positions = range(t * k, (t + 1) * k)
            trial_best = [best_val[p] for p in positions]
            reported = float(np.mean(trial_best))
            result.reported.append(reported)
            hook = on_epochs[t]
            reason = hook(epoch, reported, trial_best) if hook is not None else None
            if reason:
                result.interrupted = reason
                for p in mine:
                    if p not in trial_stopping:
                        result.stop_reasons[fold_of[p]] = f"trial ended at epoch {epoch} by the epoch hook (pruning)"
                finished[t] = True
                trial_stopping = mine
            elif len(trial_stopping) == len(mine) and all(done[p] or p in trial_stopping
                                                          for p in live if owner[p] == t):
                finished[t] = True
            stopping += trial_stopping
        if all(finished) or all(done[p] or p in stopping for p in live):
            break
        if stopping and compact:
            keep = [i for i, p in enumerate(live) if p not in stopping]
            kept = index(keep)
            model = model.select(kept)
            live = [live[i] for i in keep]
            optimizer = optimizer_for(model, live, optimizer, kept)
            if head is not None:
                head = head.select(kept)
                domain_optimizer = domain_optimizer_for(live, domain_optimizer, kept)
        for p in stopping if not compact else ():
            done[p] = True  # masking: it keeps computing, its results are ignored

    final = best if folds.has_validation else model
    for t, (result, config) in enumerate(zip(results, configs)):
        positions = index(list(range(t * k, (t + 1) * k)))
        own = final.select(positions) if P > 1 else final
        result.model = own.crop(widths[t], config.dropout) if P > 1 else own
        _final_scores(result, result.model, folds, best_epoch[t * k:(t + 1) * k],
                      balanced if configs[0].balanced_validation else None, configs[0].worst_group)
        result.seconds = time.perf_counter() - started
    return results


def _with_noise(x: torch.Tensor, runs: list[tuple[int, int]], configs: list[NetConfig],
                generators: list[torch.Generator]) -> torch.Tensor:
    """x plus each trial's Gaussian noise, drawn from its own generator as it would be alone."""
    if len(runs) == 1:
        t = runs[0][0]
        return x + configs[t].noise * torch.randn(x.shape, generator=generators[t], device=x.device)
    noisy, start = x.clone(), 0
    for t, count in runs:
        if configs[t].noise:
            part = noisy[start:start + count]
            part += configs[t].noise * torch.randn(part.shape, generator=generators[t], device=x.device)
        start += count
    return noisy


def memory_needed(folds: Folds, config: NetConfig) -> int:
    """Bytes one trial needs at its peak, roughly: checked before allocating (objective.py).

    Weights, gradients, two AdamW moments, the best weights and a copy made when stopped
    folds leave the stack: 6 copies of the parameters; plus the activations of a batch or
    of a validation chunk (per member, and the embeddings' intermediates), and the
    per-epoch shuffled copy of the training rows.
    """
    k, n_in, n_out = folds.k, folds.n_features, folds.n_outputs
    width, depth, members = config.width, config.depth, config.ensemble
    d_in, embedding = n_in, 0
    if config.embedding_shape:
        n, _, d = config.embedding_shape
        numeric = folds.n_numeric
        d_in = numeric * d + n_in - numeric
        embedding = numeric * (n + 2 * n * d + d)
    params = (embedding + d_in * width + (depth - 1) * width * width + depth * width
              + members * (width * n_out + n_out + d_in))
    rows = max(config.batch_size * 2, min(folds.X_val.shape[1], EVAL_CHUNK))
    activations = rows * (members * (width * depth + d_in) + embedding // max(1, width))
    if config.adversarial:  # a batch of target rows rides along, and the domain classifier's layer
        activations = 2 * activations + 2 * config.batch_size * members * 64
    epoch_rows = folds.X_train.shape[1] * (n_in + 1)
    if folds.shared:  # a window of rows at a time, and the one shared copy is already in memory
        epoch_rows = min(folds.X_train.shape[1], WINDOW_ROWS) * (n_in + 1)
    return 4 * k * (6 * params + activations + epoch_rows)


DOMAIN_LR = 1.0  # the domain classifier's learning rate relative to the trial's (the paper uses one rate)


def _pad_target_rows(grad_out: torch.Tensor, positions: int, members: int, n_source: int) -> torch.Tensor:
    """The output gradient over training and target rows: zero on the target rows (no labels)."""
    full = grad_out.new_zeros(positions, members, 2 * n_source, grad_out.shape[-1])
    full[:, :, :n_source] = grad_out.view(positions, members, n_source, -1)
    return full.view(positions, members * 2 * n_source, -1)


def _domain_step(head: DomainHead, optimizer: StackedAdamW, cache, model: StackedMLP, members: int,
                 n_source: int, reversal: float) -> torch.Tensor:
    """The domain classifier's step on this batch's hidden features: its gradients into
    `optimizer`, and the reversed gradient for the network (`StackedMLP.backward`'s extra_dh)."""
    hidden = cache.activations[-1]  # [k, members * 2B, width]: each member's B training rows, then B target rows
    alpha = model._backward_scale(True)[0]  # dropout's rescale, as the output head applies it
    is_target = _domain_labels(n_source, members, hidden.device)
    _, d_logits = head.loss_and_grad(head.forward(hidden, alpha), is_target)
    return head.backward(hidden, d_logits, optimizer.grads, reversal, alpha)


@functools.lru_cache(maxsize=8)
def _domain_labels(n_source: int, members: int, device: torch.device) -> torch.Tensor:
    """[1, members * 2B, 1]: 0 for each member's B training rows, 1 for its B target rows (built
    once per batch size, not every step)."""
    labels = torch.cat([torch.zeros(n_source), torch.ones(n_source)]).repeat(members)
    return labels.to(device).view(1, -1, 1)


def _window_steps(batch_size: int) -> int:
    """Steps per window of rows read at once from a shared copy (`sweeps.data.shared.WINDOW_ROWS`)."""
    return max(1, WINDOW_ROWS // batch_size)


def available_memory(device: torch.device) -> int | None:
    """Bytes the device can still give (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _copy_positions(dst: StackedMLP, src: StackedMLP, positions: list[int], folds: list[int]) -> None:
    """dst[folds] = src[positions], for every tensor (the best weights so far)."""
    device = src.weights[0].device
    src_index = torch.tensor(positions, device=device)
    dst_index = torch.tensor(folds, device=device)
    for d, s in zip(dst.params, src.params):
        d.index_copy_(0, dst_index, s.index_select(0, src_index))


def class_rows(folds: Folds, fold: int) -> list[torch.Tensor]:
    """Per class, the positions of `fold`'s real training rows of that class (CPU, int64)."""
    y = folds.y_train[fold].cpu()
    real = folds.train_weight[fold].cpu().bool()
    return [torch.nonzero((y == c) & real).flatten() for c in range(folds.n_outputs)]


def epoch_class_size(resampling: str, class_counts: np.ndarray) -> int:
    """Rows per class in a re-sampled epoch, the same for every fold (the stack is rectangular).

    "over": as many as the largest class (random over-sampling: the smaller classes repeat
    rows); "under": as many as the smallest class present (random under-sampling, a fresh
    subset of the larger classes every epoch, so over the epochs every row is used).
    `class_counts` is `Folds.split_class_counts`, [folds of the split, classes]: folds differ
    by a row or so per class, and the smallest such count is taken.
    """
    pick = max if resampling == "over" else min
    return max(1, min(int(pick(c[c > 0])) for c in class_counts if (c > 0).any()))


def resampled_epoch(rows_by_class: list[torch.Tensor], per_class: int, generator: torch.Generator) -> torch.Tensor:
    """One epoch's row order: `per_class` rows of every class present, shuffled together.

    A class with at least `per_class` rows gives a random subset of them without
    repetition; a smaller one gives all its rows, then random repeats of them. Absent
    classes (possible in a tiny fold) give nothing; the epoch is then topped up by repeats
    of the drawn rows, so every fold's epoch has the same length.
    """
    drawn = []
    for rows in rows_by_class:
        n = len(rows)
        if n == 0:
            continue
        if n >= per_class:
            drawn.append(rows[torch.randperm(n, generator=generator)[:per_class]])
        else:
            extra = torch.randint(n, (per_class - n,), generator=generator)
            drawn.append(torch.cat([rows, rows[extra]]))
    epoch = torch.cat(drawn)
    missing = per_class * len(rows_by_class) - len(epoch)
    if missing:
        epoch = torch.cat([epoch, epoch[torch.randint(len(epoch), (missing,), generator=generator)]])
    return epoch[torch.randperm(len(epoch), generator=generator)]


def class_weights(folds: Folds) -> torch.Tensor:
    """Per fold, "balanced" class weights from its training part: n / (classes x count)."""
    weights = []
    for f in range(folds.k):
        y = folds.y_train[f][folds.train_weight[f].bool()]
        counts = torch.bincount(y, minlength=folds.n_outputs).float()
        weights.append(len(y) / (folds.n_outputs * counts.clamp(min=1)))
    return torch.stack(weights)


def _mean_losses(out: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, classification: bool,
                 class_weight: torch.Tensor | None = None, groups: torch.Tensor | None = None,
                 n_groups: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each position's weighted mean loss [P] of the predictions `out`, and with `groups`
    (one per row, -1: none) its mean loss per group [P, G] (`group_means`)."""
    losses = per_row_losses(out, y, classification)
    if class_weight is not None:  # validation weighs classes as training does
        weight = weight * class_weight.gather(1, y)
    mean = (losses * weight).sum(1) / weight.sum(1)
    return mean, None if groups is None else group_means(losses, weight, groups, n_groups)


def worst_of(by_group: torch.Tensor) -> torch.Tensor:
    """Each position's largest group loss (groups it has no rows of left out)."""
    return torch.nan_to_num(by_group, nan=-math.inf).amax(1)


def group_means(values: torch.Tensor, weight: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per stack position and group, the weighted mean of `values` [P, n] over its rows of that
    group (`groups` [P, n], -1: no group); NaN for a group a position has no rows of."""
    weight = weight * (groups >= 0)
    index = groups.clamp(min=0)
    contributions = values * weight
    sums = torch.zeros(values.shape[0], n_groups, dtype=contributions.dtype, device=values.device).scatter_add_(
        1, index, contributions)
    totals = torch.zeros_like(sums).scatter_add_(1, index, weight.to(sums.dtype))
    return torch.where(totals > 0, sums / totals.clamp(min=1e-30), torch.full_like(sums, math.nan))


def _nan_mean(rows: torch.Tensor) -> list[float]:
    """Column means ignoring NaN; NaN where a column has no number."""
    present = ~rows.isnan()
    return torch.where(present.any(0), torch.nan_to_num(rows).sum(0) / present.sum(0).clamp(min=1),
                       torch.full_like(rows[0], math.nan)).tolist()


@torch.no_grad()
def _final_scores(result: FoldResult, best: StackedMLP, folds: Folds, best_epoch: list[int],
                  class_weight: torch.Tensor | None = None, worst_group: bool = False) -> None:
    """Per-fold losses and metrics of the best weights: validation and (clean) training loss.

    Both losses use the validation's class weighting, so their gap is on one scale.
    """
    result.train_losses = _mean_losses(best.predict(folds.X_train, EVAL_CHUNK, folds.classification),
                                       folds.y_train, folds.train_weight, folds.classification,
                                       class_weight)[0].tolist()
    if not folds.has_validation:
        result.best_epochs = [len(result.curve_train)] * folds.k
        return
    out = best.predict(folds.X_val, EVAL_CHUNK, folds.classification)
    w = folds.val_weight
    plain, by_group = _mean_losses(out, folds.y_val, w, folds.classification, class_weight, folds.val_groups,
                                   len(folds.group_names))
    result.val_losses = (worst_of(by_group) if worst_group else plain).tolist()
    if by_group is not None:
        result.group_val_losses = by_group.tolist()
        if folds.classification:
            per_row = (out.argmax(-1) == folds.y_val).float()
        else:
            per_row = per_row_losses(out, folds.y_val, False)
        metric = group_means(per_row, w, folds.val_groups, len(folds.group_names))
        if not folds.classification:  # RMSE in target units, per group
            metric = metric.sqrt() * folds.target_std.unsqueeze(1)
        result.group_metrics = metric.tolist()
    if folds.classification:
        pred = out.argmax(-1)
        correct = (pred == folds.y_val).float()
        result.metrics = ((correct * w).sum(1) / w.sum(1)).tolist()
        for f in range(folds.k):
            real = w[f].bool()
            balanced, f1 = _balanced_scores(folds.y_val[f][real], pred[f][real], folds.n_outputs)
            result.balanced_accuracies.append(balanced)
            result.macro_f1s.append(f1)
    else:
        result.metrics = (plain.sqrt() * folds.target_std).tolist()
    result.best_epochs = list(best_epoch)


def _balanced_scores(y: torch.Tensor, pred: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """Balanced accuracy (mean recall) and macro-F1 over the classes present in `y`."""
    confusion = torch.bincount(y * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes).double()
    true, predicted, hit = confusion.sum(1), confusion.sum(0), confusion.diag()
    present = true > 0
    recall = hit[present] / true[present]
    precision = torch.where(predicted[present] > 0, hit[present] / predicted[present].clamp(min=1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(recall.mean()), float(f1.mean())
