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

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from sweeps.folds import Folds
from sweeps.model import StackedMLP, loss_and_grad, per_row_losses, seeds_for
from sweeps.optim import StackedAdamW, lr_factor

# on_epoch(epoch, mean of the folds' best validation loss so far, each fold's) -> a reason to stop, or None
EpochHook = Callable[[int, float, list], "str | None"]
EVAL_CHUNK = 16384  # rows per forward pass when validating: bounds memory on big tables


@dataclass(frozen=True)
class NetConfig:
    """One trial's network and optimizer settings.

    The defaults of the options are the plain MLP of sweeps 0.1 ("off"): a trial's params
    hold every option it used that differs from them, so a stored trial retrains the same
    whatever later versions choose as the defaults of `Space`.
    """

    depth: int
    width: int
    dropout: float
    weight_decay: float
    lr: float
    batch_size: int = 128
    class_weight: str = "none"  # "balanced": each class weighs n / (classes x its count) in training
    balanced_validation: bool = False  # score validation (and the trial) by the class-balanced loss
    noise: float = 0.0  # Gaussian input noise (std, in standardized feature units) while training
    embedding: str = "none"  # "periodic": PLR embeddings of the numeric inputs
    n_frequencies: int = 48  # periodic embeddings: frequencies per feature
    frequency_scale: float = 1.0  # periodic embeddings: std of the initial frequencies
    embedding_dim: int = 24  # periodic embeddings: outputs per feature
    ensemble: int = 1  # members of the shared-weight ensemble in each fold-model (TabM-mini)
    label_smoothing: float = 0.0  # classification training target (1 - e) one-hot + e / classes
    beta2: float = 0.999  # AdamW's second-moment decay
    schedule: str = "constant"  # or "cosine" (with warm-up), over max_epochs
    grad_clip: float = 0.0  # per fold-model gradient norm limit; 0: no clipping

    @classmethod
    def from_params(cls, params: dict) -> NetConfig:
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params})

    @property
    def embedding_shape(self) -> tuple[int, float, int] | None:
        if self.embedding != "periodic":
            return None
        return (self.n_frequencies, self.frequency_scale, self.embedding_dim)


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
    started = time.perf_counter()
    device = folds.X_train.device
    k, n_train = folds.k, folds.X_train.shape[1]
    fold_ids = folds.fold_ids
    if init is not None:
        model = init.tiled(k, device)
        model.dropout = config.dropout
    else:
        model = StackedMLP.init(seeds_for(seed, fold_ids, "init"), folds.n_features, folds.n_outputs,
                                config.depth, config.width, config.dropout, device, n_numeric=folds.n_numeric,
                                embedding=config.embedding_shape, members=config.ensemble)
    members = model.members
    # Training may weigh classes per trial; validation weighs them per study, so that every
    # trial's value is on one scale (see Study.balanced_validation).
    balanced = class_weights(folds) if folds.classification else None
    weights = balanced if config.class_weight == "balanced" else None
    val_weights = balanced if config.balanced_validation else None
    smoothing = config.label_smoothing if folds.classification else 0.0
    noise_rng = torch.Generator(device=device).manual_seed(seeds_for(seed, [0], "noise")[0])
    best = model.clone()
    batch_rngs = [torch.Generator().manual_seed(s) for s in seeds_for(seed, fold_ids, "batches")]
    dropout_rng = torch.Generator(device=device).manual_seed(seeds_for(seed, [0], "dropout")[0])
    optimizer = StackedAdamW(model.params, config.lr, config.weight_decay, betas=(0.9, config.beta2),
                             no_decay=model.no_decay)

    active = torch.arange(k, device=device)  # stack position -> fold index
    active_list = list(range(k))
    done = [False] * k  # only used when masking: stopped folds still in the stack
    best_val = [math.inf] * k
    best_epoch = [0] * k
    stop_reasons = [f"reached max_epochs={max_epochs}"] * k
    result = FoldResult([], [], [], [], stop_reasons, n_params=model.n_params)
    result.fold_curves = [[] for _ in range(k)]
    n_steps = math.ceil(n_train / config.batch_size)
    total_steps = (horizon or max_epochs) * n_steps
    step_count = 0

    for epoch in range(1, max_epochs + 1):
        # Each fold shuffles its own rows; gathering once per epoch makes every batch a view.
        order = torch.stack([torch.randperm(n_train, generator=batch_rngs[f]) for f in active_list])
        order = order.to(device)
        X = folds.X_train[active.unsqueeze(1), order]
        y = folds.y_train[active.unsqueeze(1), order]
        loss_sum = torch.zeros(len(active_list), device=device)
        step_weights = None if weights is None else weights[active]  # once per epoch, not per step
        for step in range(n_steps):
            rows = slice(step * config.batch_size, (step + 1) * config.batch_size)
            x = X[:, rows]
            if config.noise:  # augmentation: a fresh perturbation of every row, every step
                x = x + config.noise * torch.randn(x.shape, generator=noise_rng, device=device)
            out, cache = model.forward(x, dropout_rng if config.dropout else None)
            # Every member learns from the same rows: their targets, once per member.
            targets = y[:, rows] if members == 1 else y[:, rows].repeat(1, members)
            batch_loss, grad_out = loss_and_grad(out, targets, folds.classification, step_weights, smoothing)
            loss_sum += batch_loss
            model.backward(cache, grad_out, optimizer.grads)
            if config.grad_clip:
                optimizer.clip(config.grad_clip)
            optimizer.step(lr_factor(config.schedule, step_count, total_steps))
            step_count += 1

        train = (loss_sum / (n_train * members)).tolist()
        if not folds.has_validation:  # a final fit: fixed epochs, the last weights are the model
            result.curve_train.append(float(np.mean(train)))
            if not all(map(math.isfinite, train)):
                result.diverged = f"diverged: the training loss became non-finite at epoch {epoch}"
                break
            continue

        # Validate every training fold with its current weights (no dropout).
        val = _weighted_mean_loss(model, folds.X_val[active], folds.y_val[active],
                                  folds.val_weight[active], folds.classification,
                                  None if val_weights is None else val_weights[active]).tolist()
        live = [i for i, f in enumerate(active_list) if not done[f]]
        for i in live:
            result.fold_curves[active_list[i]].append(val[i])
        result.curve_train.append(float(np.mean([train[i] for i in live])))
        result.curve_val.append(float(np.mean([val[i] for i in live])))
        bad = [active_list[i] for i in live if not (math.isfinite(train[i]) and math.isfinite(val[i]))]
        if bad:
            result.diverged = f"diverged: the loss of fold {bad[0]} became non-finite at epoch {epoch}"
            for i in live:
                stop_reasons[active_list[i]] = f"trial ended at epoch {epoch}: a fold diverged"
            break

        improved = [i for i in live if val[i] < best_val[active_list[i]]]
        for i in improved:
            best_val[active_list[i]] = val[i]
            best_epoch[active_list[i]] = epoch
        if improved:
            _copy_folds(best, model, positions=improved, folds=[active_list[i] for i in improved])

        stopping = []
        if patience is not None:
            stopping = [i for i in live if epoch - best_epoch[active_list[i]] >= patience]
            for i in stopping:
                stop_reasons[active_list[i]] = (
                    f"early stop at epoch {epoch}: no better validation loss for {patience} epochs")

        reported = float(np.mean(best_val))
        result.reported.append(reported)
        if on_epoch is not None:
            reason = on_epoch(epoch, reported, best_val)
            if reason:
                result.interrupted = reason
                for i in live:
                    if i not in stopping:
                        stop_reasons[active_list[i]] = f"trial ended at epoch {epoch} by the epoch hook (pruning)"
                break
        if len(stopping) == len(live):
            break
        if stopping and compact:
            keep = [i for i in range(len(active_list)) if i not in stopping]
            index = torch.tensor(keep, device=device)
            model = model.select(index)
            optimizer = optimizer.select(model.params, index)
            active_list = [active_list[i] for i in keep]
            active = torch.tensor(active_list, device=device)
        for i in stopping if not compact else ():
            done[active_list[i]] = True  # masking: it keeps computing, its results are ignored

    result.model = best if folds.has_validation else model
    _final_scores(result, result.model, folds, best_epoch, val_weights)
    result.seconds = time.perf_counter() - started
    return result


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
    epoch_rows = folds.X_train.shape[1] * (n_in + 1)
    return 4 * k * (6 * params + activations + epoch_rows)


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


def _copy_folds(dst: StackedMLP, src: StackedMLP, positions: list[int], folds: list[int]) -> None:
    device = src.weights[0].device
    src_index = torch.tensor(positions, device=device)
    dst_index = torch.tensor(folds, device=device)
    for d, s in zip(dst.params, src.params):
        d.index_copy_(0, dst_index, s.index_select(0, src_index))


def class_weights(folds: Folds) -> torch.Tensor:
    """Per fold, "balanced" class weights from its training part: n / (classes x count)."""
    weights = []
    for f in range(folds.k):
        y = folds.y_train[f][folds.train_weight[f].bool()]
        counts = torch.bincount(y, minlength=folds.n_outputs).float()
        weights.append(len(y) / (folds.n_outputs * counts.clamp(min=1)))
    return torch.stack(weights)


@torch.no_grad()
def _weighted_mean_loss(model: StackedMLP, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
                        classification: bool, class_weight: torch.Tensor | None = None) -> torch.Tensor:
    out = model.predict(X, EVAL_CHUNK, classification)
    losses = per_row_losses(out, y, classification)
    if class_weight is not None:  # validation weighs classes as training does
        weight = weight * class_weight.gather(1, y)
    return (losses * weight).sum(1) / weight.sum(1)


@torch.no_grad()
def _final_scores(result: FoldResult, best: StackedMLP, folds: Folds, best_epoch: list[int],
                  class_weight: torch.Tensor | None = None) -> None:
    """Per-fold losses and metrics of the best weights: validation and (clean) training loss.

    Both losses use the validation's class weighting, so their gap is on one scale.
    """
    result.train_losses = _weighted_mean_loss(best, folds.X_train, folds.y_train, folds.train_weight,
                                              folds.classification, class_weight).tolist()
    if not folds.has_validation:
        result.best_epochs = [len(result.curve_train)] * folds.k
        return
    result.val_losses = _weighted_mean_loss(best, folds.X_val, folds.y_val, folds.val_weight,
                                            folds.classification, class_weight).tolist()
    out = best.predict(folds.X_val, EVAL_CHUNK, folds.classification)
    w = folds.val_weight
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
        mse = torch.tensor(result.val_losses, device=w.device)
        result.metrics = (mse.sqrt() * folds.target_std).tolist()
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
