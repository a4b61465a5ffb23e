"""Continuous batching: P slots of trials training in shared stacks, each refilled the moment
its trial ends.

`--batch P` keeps up to P trials of this process training at once. A trial is asked when a
slot is free, so the sampler knows every trial finished so far (and TPE's constant liar sees
the ones still training); it joins a stack of its shape at the next epoch boundary
(`engine.stack.Stack.add`) and trains there exactly as it would alone. When it stops, is
pruned or fails, it is told at once and its slot is asked for again: no trial waits for a
round's slowest member.

Trials share a stack when they have the same shape (`engine.config.groupable`: depth, batch
size, embeddings, members...) and widths of one `width_class`: up to `SMALL_WIDTH` units any
widths share, padded to the widest with units that stay 0 (the padding costs arithmetic, but
a second stack costs as much in per-operation dispatch: two classes, up to 32 and up to 64,
were no faster than one; docs/benchmarks.md, "Widths packed, not padded?"); above, only
equal widths, because there a step is arithmetic, which grows with the square of the padded
width, while sharing saves less (1.6x at d2 w128). A trial of another shape starts a stack of its own beside the others;
each round, every stack trains one epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from sweeps.engine.config import NetConfig
from sweeps.engine.stack import Stack
from sweeps.errors import FinishedElsewhere, SweepsError, TrialFailed
from sweeps.store import internals
from sweeps.sweep import pruners, stop
from sweeps.sweep.objective import allocation_failure

SMALL_WIDTH = 64  # units: up to here, padding to a stack's widest costs less than a stack of its own


def width_class(width: int) -> int:
    """Widths that share a stack: every width up to `SMALL_WIDTH`; above, each width alone."""
    return 0 if width <= SMALL_WIDTH else width


class NotAdmitted(Exception):
    """The study reached its target: the trial just asked was not needed (told FAIL already)."""


class Slots:
    """The trials this process trains at once, in stacks; `fill` asks for more, `epoch` trains.

    `ask(study)` asks Optuna for a trial and admits it (raising `NotAdmitted` when the study
    is full); `callbacks(study, frozen trial)` run after each trial is told.
    """

    def __init__(self, study: optuna.Study, trainer, ask: Callable[[optuna.Study], optuna.Trial],
                 callbacks: list) -> None:
        self.study, self.trainer, self.ask, self.callbacks = study, trainer, ask, callbacks
        self.stacks: list[tuple[Stack, dict[int, optuna.Trial]]] = []  # each stack, and its trials by index
        self.heartbeats: dict[int, object] = {}  # trial number -> its running heartbeat thread

    @property
    def live(self) -> int:
        return sum(len(trials) for _, trials in self.stacks)

    def fill(self, n: int) -> bool:
        """Ask for up to `n` trials and put each in a stack; True when the study was full."""
        for _ in range(n):
            with stop.deferred():
                try:
                    trial = self.ask(self.study)
                except NotAdmitted:
                    return True
                beat = internals.heartbeat(self.study, trial)
                beat.__enter__()
                self.heartbeats[trial.number] = beat
            try:
                config = self.trainer.configure(trial)
            except TrialFailed as e:
                self.trainer.fail(trial, str(e))
                self._tell(trial, TrialState.FAIL, None)
                continue
            except BaseException as e:  # a space function that raised (SweepsError), Ctrl+C: the study stops
                if isinstance(e, SweepsError):
                    self.trainer.fail(trial, str(e))
                else:
                    self.trainer.training_failed([trial], e)
                self._tell(trial, TrialState.FAIL, None)
                raise
            stack, trials = self._stack_for(config)
            [index] = stack.add([config], [self.trainer.seed(trial)], [self.trainer.hook(trial)])
            trials[index] = trial
        return False

    def _stack_for(self, config: NetConfig) -> tuple[Stack, dict[int, optuna.Trial]]:
        for stack, trials in self.stacks:
            if stack.accepts(config) and width_class(stack.configs[0].width) == width_class(config.width):
                return stack, trials
        spec = self.trainer.spec
        made = (Stack(self.trainer.folds, max_epochs=spec.max_epochs, patience=spec.patience, init=self.trainer.init),
                {})
        self.stacks.append(made)
        return made

    def epoch(self) -> None:
        """Every stack trains one epoch; the trials that finished are told."""
        for stack, trials in list(self.stacks):
            try:
                with stop.immediate():  # Ctrl+C / SIGTERM stop training at once
                    finished = stack.epoch()
            except Exception as e:
                if not allocation_failure(e):
                    raise  # the study stops: `fail_all` ends every trial training here, with why
                self.trainer.training_failed(list(trials.values()), e)  # too little memory: these trials fail,
                for trial in trials.values():  # the study goes on
                    self._tell(trial, TrialState.FAIL, None)
                self.stacks.remove((stack, trials))
                continue
            for t, result in finished:
                self._finish(trials.pop(t), result)
            if not trials:
                self.stacks.remove((stack, trials))

    def _finish(self, trial: optuna.Trial, result) -> None:
        try:
            state, value = TrialState.COMPLETE, self.trainer.finish(trial, result)
        except optuna.TrialPruned:
            state, value = TrialState.PRUNED, None
        except FinishedElsewhere as e:
            e.say()
            state, value = None, None  # not told: it is finished already
        self._tell(trial, state, value)

    def _tell(self, trial: optuna.Trial, state: TrialState | None, value: float | None) -> None:
        pruners.forget(trial)  # every way a trial ends here (finished, failed, out of memory) is told here
        with stop.deferred():
            self._stop_heartbeat(trial)
            if state is not None:
                self.study.tell(trial, value, state=state, skip_if_finished=True)
            frozen = internals.frozen(self.study, trial)
        for callback in self.callbacks:
            callback(self.study, frozen)

    def fail_all(self, error: BaseException) -> None:
        """The study stops with `error`: the trials still training end as failed, with why."""
        live = [trial for _, trials in self.stacks for trial in trials.values()]
        self.trainer.training_failed(live, error)
        with stop.deferred():
            for trial in live:
                self._stop_heartbeat(trial)
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                pruners.forget(trial)
            self.stacks.clear()

    def _stop_heartbeat(self, trial: optuna.Trial) -> None:
        beat = self.heartbeats.pop(trial.number, None)
        if beat is not None:
            beat.__exit__(None, None, None)
