"""One trial: suggest a configuration, train all k folds together, report, record.

The trial's value is the mean over folds of each fold's best validation loss. After every
epoch the mean over folds of the best validation loss so far is reported to Optuna: it is
what the trial's value would be if training ended there, so pruners compare like with like.
Its pruner reads it at once; the storage gets it every few seconds and with the trial's record
(`record.EpochValues`: a transaction per epoch was a tenth of a small table's sweep).

A trial whose loss becomes NaN or infinite is *pruned*, not failed, with the reason in
`prune_reason`: TPE learns from pruned trials (they rank below complete ones), while it
ignores failed ones and would keep proposing the same diverging region.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

import optuna

from sweeps.data.dataset import Dataset
from sweeps.store import candidates, internals, notes, record
from sweeps.sweep import pruners, stop
from sweeps.errors import FinishedElsewhere, SweepsError, Terminated, TrialFailed
from sweeps.store.storage import explain as storage_explain, heartbeat_failure
from sweeps.data.folds import Folds
from sweeps.spec.study import Study
from sweeps.sweep.trial import prepare, trial_seed
from sweeps.engine.config import NetConfig
from sweeps.engine.memory import available_memory, memory_needed
from sweeps.engine.train import train_trials


def allocation_failure(error: BaseException) -> bool:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("allocate" in text or "out of memory" in text)


def make_objective(spec: Study, folds: Folds, dataset: Dataset | None = None,
                   candidates: Path | None = None) -> Trainer:
    """The Optuna objective of a study, over folds prepared once per process (a `Trainer`).
    With `candidates` (a folder) and the `dataset`, complete trials among the study's best
    `Study.candidates` keep their out-of-fold predictions and fold-models there."""
    return Trainer(spec, folds, dataset, candidates)


class Trainer:
    """Trials of one study in this process: the Optuna objective (one trial at a time), and the
    pieces `sweep.slots` trains many trials with.

    How a trial can end, and what is recorded:
    - complete: its value, and the evidence (record.write_trial);
    - pruned (the pruner, or a loss that became NaN/inf): `prune_reason`;
    - failed, the study goes on (`TrialFailed`, caught by the optimize loop): too little
      memory for the configuration, measured before allocating or raised while training;
    - failed, the study stops: Ctrl+C / SIGTERM (`fail_reason` says which), a space
      function that raises (`SweepsError`), a storage failure, or a bug.
    """

    def __init__(self, spec: Study, folds: Folds, dataset: Dataset | None = None,
                 candidates_folder: Path | None = None) -> None:
        self.spec, self.init = prepare(spec, folds)
        self.folds, self.dataset, self.candidates_folder = folds, dataset, candidates_folder
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.device = folds.X_train.device
        self.epoch_values: dict[int, record.EpochValues] = {}  # by trial number: each running trial's unwritten epochs

    # --- the pieces ----------------------------------------------------------------------
    def fail(self, trial: optuna.Trial, reason: str) -> None:
        try:
            record.write_fail_reason(trial, reason, self.epoch_values.pop(trial.number, None))
            notes.save_trial_note(trial, notes.trial_note(None, self.spec.task, f"failed: {reason}"))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # finished elsewhere meanwhile: its own state stands

    def configure(self, trial: optuna.Trial) -> NetConfig:
        """The trial's configuration (drawn now), checked to fit in memory (`TrialFailed` if not)."""
        record.write_worker(trial, self.worker)  # which machine and process ran it
        config = NetConfig.from_params(self.spec.suggest(trial), self.spec.validation)
        needed, available = memory_needed(self.folds, config), available_memory(self.device)
        if available is not None and needed > 0.8 * available:
            raise TrialFailed(
                f"out of memory: depth {config.depth}, width {config.width} needs about "
                f"{needed / 2**30:.1f} GiB for {self.folds.k} folds, {available / 2**30:.1f} GiB is free on "
                f"{self.device.type}; narrow the space's width range")
        return config

    def hook(self, trial: optuna.Trial):
        """The trial's per-epoch hook: report to Optuna, ask the pruner, say why it prunes."""
        storage = internals.storage_of(trial.study)
        held = self.epoch_values[trial.number] = record.EpochValues(trial)

        def on_epoch(epoch: int, mean_val_loss: float, fold_losses: list[float]) -> str | None:
            failure = heartbeat_failure(storage)
            if failure is not None:
                raise failure  # the heartbeat thread could not write to the storage: stop here
            pruners.report_folds(trial, fold_losses)  # for FoldPairedPruner, in this process
            with stop.deferred():  # a write that a stop must not cut in half
                try:
                    held.add(epoch, mean_val_loss)
                except optuna.exceptions.UpdateFinishedTrialError:
                    return FINISHED_ELSEWHERE  # its training stops; `finish` says so
                prune = pruners.may_prune_at(trial.study.pruner, epoch) and trial.should_prune()
            if prune:
                pruner = trial.study.pruner
                name = getattr(pruner, "last_pruner", None) or type(pruner).__name__
                halving = (optuna.pruners.SuccessiveHalvingPruner, optuna.pruners.HyperbandPruner)
                compared = "worse than earlier trials at that epoch"
                if isinstance(getattr(pruner, "pruner", pruner), halving):  # AfterStartup's inner pruner
                    compared = "not among the best of the trials that reached that epoch (a rung of successive halving)"
                return getattr(pruner, "last_reason", None) or (
                    f"pruned by {name} at epoch {epoch}: mean validation loss {mean_val_loss:.4g} was {compared}")
            return None

        return on_epoch

    def train(self, trials: list[optuna.Trial], configs: list[NetConfig]) -> list:
        """Train the trials' configurations together (they must be `groupable`)."""
        try:
            with stop.immediate():  # Ctrl+C / SIGTERM stop training at once
                return train_trials(self.folds, configs, [self.seed(t) for t in trials],
                                    [self.hook(t) for t in trials], max_epochs=self.spec.max_epochs,
                                    patience=self.spec.patience, init=self.init)
        except BaseException as e:
            failed = self.training_failed(trials, e)
            if failed is not None:
                raise failed from None
            raise
        finally:
            for trial in trials:
                pruners.forget(trial)

    def seed(self, trial: optuna.Trial) -> int:
        """The trial's training seed: from its number, so it trains the same however it is run."""
        return trial_seed(self.spec.seed, trial.number)

    def training_failed(self, trials: list[optuna.Trial], error: BaseException) -> TrialFailed | None:
        """Record why training `trials` stopped with `error`: a `TrialFailed` to raise when the
        study goes on (too little memory for them), None when `error` stops the study."""
        if isinstance(error, Terminated):
            for trial in trials:
                self.fail(trial, "terminated (SIGTERM); rerun to resume the study")
        elif isinstance(error, KeyboardInterrupt):
            for trial in trials:
                self.fail(trial, "interrupted (Ctrl+C); rerun to resume the study")
        elif isinstance(error, Exception):
            if allocation_failure(error):  # these configurations are too big; the next ones may fit
                reason = f"out of memory while training: {type(error).__name__}: {str(error).splitlines()[0]}"
                for trial in trials:
                    self.fail(trial, reason)
                return TrialFailed(reason)
            if storage_explain(error) is None:  # a storage that fails cannot take a reason either
                for trial in trials:
                    self.fail(trial, f"{type(error).__name__}: {error}")
        return None

    def finish(self, trial: optuna.Trial, result) -> float:
        """Record a trained trial; its value, or `TrialPruned` with the reason (`FinishedElsewhere`
        when another process finished it meanwhile: nothing is written)."""
        held = self.epoch_values.pop(trial.number, None)
        try:
            if result.interrupted == FINISHED_ELSEWHERE:
                raise optuna.exceptions.UpdateFinishedTrialError()
            attrs = record.write_trial(trial, result, self.spec.task, self.folds.group_names, held)  # before pruning
        except optuna.exceptions.UpdateFinishedTrialError:
            state = internals.frozen(trial.study, trial).state.name
            raise FinishedElsewhere(f"trial #{trial.number} was finished outside this sweep while it trained "
                                    f"(it is {state} now: the dashboard with --allow-writes, or a script); its "
                                    "training stopped there, and the sweep goes on") from None
        reason = result.diverged or result.interrupted
        notes.save_trial_note(trial, notes.trial_note(result, self.spec.task, reason, attrs))
        if reason:
            raise optuna.TrialPruned(reason)
        self.keep_candidate(trial, result)
        return result.cv_loss

    def keep_candidate(self, trial: optuna.Trial, result) -> None:
        """A complete trial among the study's best keeps what an ensemble is selected from."""
        if self.candidates_folder is None or self.dataset is None or not self.spec.candidates:
            return
        try:
            candidates.write(self.candidates_folder, trial, result.cv_loss, result, self.folds, self.dataset,
                             self.spec.task, dict(trial.params), self.spec.candidates)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the study's own disk, as a rule: stop, as storage does
                raise SweepsError(f"{self.candidates_folder}: the disk is full ({e.strerror}); free some space, "
                                  "or set SWEEPS_CANDIDATES_DIR or --storage on another disk; finished trials "
                                  "are kept.") from None
            # Anything else (a folder made read-only, say): one warning, and the sweep goes on without
            # candidates; the ensemble will say which trials it lacks.
            print(f"sweeps: warning: out-of-fold predictions cannot be kept in {self.candidates_folder} "
                  f"({e.strerror or e}); this run keeps no more candidates for final_model='ensemble'.",
                  file=sys.stderr)
            self.candidates_folder = None

    # --- one trial: the Optuna objective ---------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> float:
        try:
            config = self.configure(trial)
        except TrialFailed as e:
            self.fail(trial, str(e))
            raise
        except SweepsError as e:  # e.g. a space function that raised: the study stops, with the reason
            self.fail(trial, str(e))
            raise
        [result] = self.train([trial], [config])
        return self.finish(trial, result)


FINISHED_ELSEWHERE = "finished outside this sweep"  # the epoch hook's reason when a report is refused

