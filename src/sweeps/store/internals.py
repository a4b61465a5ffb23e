"""The one place that reaches into Optuna's and optuna-dashboard's private attributes, each with
the reason. A new release that moves one of them breaks here, and only here
(`tests/store` runs each of these on a real storage).

- Optuna's `Study` has no public way to its storage or id, nor a `Trial` to its id; the
  storage's own calls (read one trial, send heartbeats, write a note's keys) take them.
- Sweeps runs its own ask / heartbeat / tell step (a trial finished from the dashboard must
  not crash the sweep), and Optuna keeps the heartbeat thread of `study.optimize` private.
- Optuna's pruners keep their settings private; reading them says at which epochs a built-in
  pruner can act, so that a trial skips `should_prune` (a storage read) at the others.
- Optuna counts a study's trials by reading every trial (`get_n_trials` is `len(get_all_trials())`),
  and its cache reads each running trial back whole every time (intermediate values and
  attributes): with 8 trials in flight, counting took 5 % of a sweep of small nets. On a
  database one COUNT query, grouped by state, is enough (`count_trials`).
- Optuna's `Trial.report` and `Trial.set_user_attr` write each value in a transaction of its
  own (about 1.2 ms on SQLite): one per epoch, and 25 more for a trial's record, were 15 % of
  a small table's sweep. `write_trial_values` writes a trial's pending epochs and attributes in
  one transaction (Optuna's tables and row encodings, written by multi-row upserts), and keeps
  the trial's in-process copy (what its pruner reads) as `Trial.report` does.
- optuna-dashboard's `save_note` reads every note of the study twice to version the one it
  writes: megabytes per trial in a 5,000-trial study. A trial's note is written once, so its
  keys (private to optuna-dashboard) are written directly.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager

import optuna
from optuna.storages._heartbeat import get_heartbeat_thread


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    return trial._trial_id


def frozen(study: optuna.Study, trial: optuna.Trial | int) -> optuna.trial.FrozenTrial:
    """The trial as stored now (a `Trial` object keeps no state of its own)."""
    return study._storage.get_trial(trial if isinstance(trial, int) else trial._trial_id)


def heartbeat(study: optuna.Study, trial: optuna.Trial | int) -> AbstractContextManager:
    """A running trial's heartbeat thread, as `study.optimize` starts one (a no-op without heartbeats)."""
    return get_heartbeat_thread(trial if isinstance(trial, int) else trial._trial_id, study._storage)


def has_heartbeat(study: optuna.Study) -> bool:
    get = getattr(study._storage, "get_heartbeat_interval", None)
    return bool(get and get())


def backend(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The storage behind Optuna's cache layer (where sweeps' own storage class keeps its state)."""
    return getattr(storage, "_backend", storage)


def write_trial_note_keys(trial: optuna.Trial, body: str) -> bool:
    """Write a trial's note as optuna-dashboard stores it (version 1, in chunks); False when this
    optuna-dashboard keeps its notes otherwise (then its public, slower `save_note` is for you)."""
    try:
        from optuna_dashboard._note import note_ver_key, split_body
    except ImportError:
        return False
    storage, study = trial.storage, trial.study._study_id
    for key, value in split_body(body, trial._trial_id).items():
        storage.set_study_system_attr(study, key, value)
    storage.set_study_system_attr(study, note_ver_key(trial._trial_id), 1)
    return True


def halving_rungs(pruner: optuna.pruners.SuccessiveHalvingPruner) -> tuple[int, int] | None:
    """(the first rung's epoch, the reduction factor) of a successive halving pruner; None while
    its minimum resource is "auto" (estimated from the trials)."""
    if not isinstance(pruner._min_resource, int):
        return None
    return pruner._min_resource * pruner._reduction_factor ** pruner._min_early_stopping_rate, pruner._reduction_factor


def percentile_steps(pruner: optuna.pruners.PercentilePruner) -> tuple[int, int]:
    """(warm-up steps, interval) of a median or percentile pruner."""
    return pruner._n_warmup_steps, pruner._interval_steps


def count_trials(study: optuna.Study, states: tuple[optuna.trial.TrialState, ...] | None = None,
                 below: int | None = None) -> dict[optuna.trial.TrialState, int] | None:
    """The study's trials per state, counted by the database (`states`: only these; `below`:
    only trials numbered lower); None for a storage that is not a database (then read the trials)."""
    rdb = backend(study._storage)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        return None
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    trial = models.TrialModel
    query = [trial.study_id == study._study_id]
    if states is not None:
        query.append(trial.state.in_(states))
    if below is not None:
        query.append(trial.number < below)
    with _create_scoped_session(rdb.scoped_session) as session:
        rows = session.query(trial.state, sqlalchemy.func.count(trial.trial_id)).filter(*query) \
            .group_by(trial.state).all()
    return {state: n for state, n in rows}


def note_intermediate(trial: optuna.Trial, step: int, value: float) -> bool:
    """`Trial.report`'s in-process half: the value goes into the trial's own copy, which its pruner
    reads (`Trial.should_prune`); False where that step was reported already (then nothing changes)."""
    values = trial._cached_frozen_trial.intermediate_values
    if step in values:
        return False
    values[step] = value
    return True


def write_trial_values(trial: optuna.Trial, intermediate: dict[int, float], user_attrs: dict) -> None:
    """Write a running trial's intermediate values and user attributes: one transaction on a
    database (all or nothing), one call each on other storages. Raises Optuna's
    `UpdateFinishedTrialError` when the trial is finished, as its own calls do.

    On SQLite and PostgreSQL, two multi-row upserts after one check of the trial's state (the
    statements Optuna's per-row calls send, less the per-row reads: 0.5-0.7 ms a row in one
    transaction); other databases, Optuna's per-row helpers in the same transaction.
    """
    storage, number = trial.storage, trial._trial_id
    rdb = backend(storage)
    if not isinstance(rdb, optuna.storages.RDBStorage):
        for step, value in intermediate.items():
            storage.set_trial_intermediate_value(number, step, value)
        for key, value in user_attrs.items():
            storage.set_trial_user_attr(number, key, value)
    elif intermediate or user_attrs:
        _write_rows(rdb, number, intermediate, user_attrs)
    trial._cached_frozen_trial.user_attrs.update(user_attrs)


def _write_rows(rdb: optuna.storages.RDBStorage, number: int, intermediate: dict[int, float],
                user_attrs: dict) -> None:
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    values, attrs = models.TrialIntermediateValueModel, models.TrialUserAttributeModel
    # SQLite has upserts from 3.24 (Optuna checks the same); other databases, Optuna's row by row
    upsert = rdb.engine.name == "postgresql" or (rdb.engine.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 24))
    with _create_scoped_session(rdb.scoped_session) as session:
        if not upsert:
            for step, value in intermediate.items():
                rdb._set_trial_intermediate_value_without_commit(session, number, step, value)
            for key, value in user_attrs.items():
                rdb._set_trial_attr_without_commit(session, attrs, number, key, value)
            return
        if rdb.engine.name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        rdb.check_trial_is_updatable(number, models.TrialModel.find_or_raise_by_id(number, session).state)
        if intermediate:
            rows = []
            for step, value in intermediate.items():
                stored, kind = values.intermediate_value_to_stored_repr(value)
                rows.append({"trial_id": number, "step": step, "intermediate_value": stored,
                             "intermediate_value_type": kind})
            statement = insert(values)
            session.execute(statement.on_conflict_do_update(
                index_elements=[values.trial_id, values.step],
                set_={"intermediate_value": statement.excluded.intermediate_value,
                      "intermediate_value_type": statement.excluded.intermediate_value_type}), rows)
        if user_attrs:
            rows = [{"trial_id": number, "key": key, "value_json": json.dumps(value)}
                    for key, value in user_attrs.items()]
            statement = insert(attrs)
            session.execute(statement.on_conflict_do_update(
                index_elements=[attrs.trial_id, attrs.key], set_={"value_json": statement.excluded.value_json}), rows)
