"""Where a study lives: its name and storage URL, opening the storage, and its failures.

The default is an SQLite file, `storage/<name>.db` relative to the current directory; any
Optuna storage URL works (PostgreSQL for many machines). This module is the one place that
turns a study name into a file name (`database_path`, `output_path`), and the one place
that turns a storage failure (a damaged, full, read-only or locked database) into one line
naming the cause and the fix (`explain`).
"""

from __future__ import annotations

import sqlite3
import time
import warnings
from pathlib import Path

import optuna
# At import, not inside `attach`: optuna.artifacts keeps the ImportErrors of its optional cloud
# back-ends with their tracebacks, and a traceback holds every frame above the import alive.
# Imported from inside a function, that kept the caller's study, and so its SQLite connection,
# to the end: the database's WAL file was left beside it after diagnose and evaluate.
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState

from sweeps.errors import SweepsError, option
from sweeps.spec.study import check_name
from sweeps.store import internals, record

DEFAULT_DIR = Path("storage")
SCHEMA_RACE_RETRIES = 8
MAX_RETRIES = 3  # a trial whose worker died is queued again at most this often

_opened: list[str] = []  # URLs opened by this process, newest last: named in failure messages


def database_path(study_name: str) -> Path:
    """`storage/<name>.db`: the default SQLite file of a study (its name is checked to be safe)."""
    check_name(study_name)
    return DEFAULT_DIR / f"{study_name}.db"


def resolve_url(study_name: str, url: str | None) -> str:
    """The storage URL to use: `url`, or `sqlite:///storage/<study_name>.db`."""
    return url if url else f"sqlite:///{database_path(study_name)}"


def sqlite_file(url: str) -> Path | None:
    """The file of an `sqlite:///` URL, None for other storages and in-memory SQLite."""
    if not url.startswith("sqlite:///") or url == "sqlite:///:memory:":
        return None
    return Path(url[len("sqlite:///"):].split("?", 1)[0])


def results_folder(url: str) -> Path:
    """Where exports, reports and models go: next to an SQLite database, else storage/."""
    path = sqlite_file(url)
    return path.parent if path is not None else DEFAULT_DIR


def output_path(url: str, study_name: str, suffix: str) -> Path:
    """A result file of the study, e.g. `storage/<name>-best.json`."""
    check_name(study_name)
    return results_folder(url) / f"{study_name}{suffix}"


def artifact_folder(url: str, study_name: str) -> Path:
    """Where the study's artifacts (models, exports, reports) are kept: `storage/<name>-artifacts/`."""
    return output_path(url, study_name, "-artifacts")


def attach(study: optuna.Study, path: Path, url: str) -> None:
    """Store a result file with Optuna's artifact API, so optuna-dashboard lists it on the study.

    The file-system store sits next to the database (`artifact_folder`); `sweeps.dashboard`
    serves it. A copy is kept per call: each evaluation's model stays, as in `test_history`.
    """
    folder = artifact_folder(url, study.study_name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mimetype = {".json": "application/json", ".yaml": "application/yaml", ".yml": "application/yaml",
                    ".md": "text/markdown"}.get(path.suffix, "application/octet-stream")
        upload_artifact(artifact_store=FileSystemArtifactStore(folder), file_path=str(path), study_or_trial=study,
                        mimetype=mimetype)
    except OSError as e:
        raise SweepsError(f"{folder}: cannot store {path.name} as an artifact ({e.strerror}); free space or "
                          "check the folder's permissions.") from None


def check_writable(path: Path, what: str) -> None:
    """Fail now, with the fix, if `path` cannot be written (before hours of work, not after)."""
    if path.is_dir():
        raise SweepsError(f"{path}: is a folder; give the {what} a file name ({option('output')}).")
    probe = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SweepsError(f"{path}: cannot write the {what} there ({e.strerror}); pass another "
                          f"{option('output')}.") from None


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a whole file or nothing: a crash or a full disk leaves no half-written file."""
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise SweepsError(f"{path}: cannot be written ({e.strerror}); free space or pass another "
                          f"{option('output')}.") from None
    return path


def describe(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


# --- failures, each in one line ----------------------------------------------------------------
_CAUSES = (  # (words in the driver's message, what it means, the fix)
    (("malformed", "not a database", "file is encrypted", "database corrupt"),
     "the database file is damaged", "move it aside and restore a backup, or pass another --storage "
     "(sqlite3 FILE '.recover' salvages what is readable)"),
    (("disk is full", "database or disk is full", "no space left"),
     "the disk is full", "free some space or pass --storage on another disk; finished trials are kept"),
    (("readonly", "read-only", "permission denied"),
     "the database cannot be written", "check the permissions of the file and its folder (SQLite "
     "writes -wal and -shm files beside it), or pass another --storage"),
    (("database is locked", "database table is locked"),
     "the database stayed locked by another process for 60 s", "stop other programs writing it; "
     "for many workers use PostgreSQL (--storage postgresql://...)"),
    (("disk i/o error",),
     "the database could not be written to disk", "check the disk's free space and health, or pass "
     "--storage on another disk; finished trials are kept"),
    (("unable to open database file",),
     "the database file cannot be opened", "check that its folder exists and may be written, or pass "
     "another --storage"),
)


def _driver_error(error: BaseException) -> BaseException | None:
    """The database driver's error behind `error` (Optuna wraps some in StorageInternalError)."""
    from sqlalchemy.exc import SQLAlchemyError

    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, (SQLAlchemyError, sqlite3.Error)):
            return error
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def explain(error: BaseException, url: str | None = None, known_only: bool = False) -> str | None:
    """One line for a storage failure (None when `error` is not one, or with `known_only`,
    when its cause is none of the known ones)."""
    driver = _driver_error(error)
    if driver is None:
        return None
    url = url or (_opened[-1] if _opened else None)
    where = f"storage {describe(url)}" if url else "the study's storage"
    reason = str(getattr(driver, "orig", None) or driver).strip().splitlines()[0]
    lowered = reason.lower()
    for words, cause, fix in _CAUSES:
        if any(w in lowered for w in words):
            return f"{where}: {cause} ({reason}); {fix}."
    if known_only:
        return None
    return f"{where}: {reason}; check the URL, that the server is running and that you may write to it."


# --- opening ---------------------------------------------------------------------------------------
class SweepsStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, with the two heartbeat duties sweeps needs.

    - A heartbeat that cannot be written (a damaged or full database) is kept in
      `heartbeat_error` for the trial's own thread to raise at its next epoch; in Optuna's
      heartbeat thread it would only print a traceback while the sweep went on.
    - A trial whose worker stopped sending heartbeats is given its `fail_reason` before it
      is failed, whichever process fails it (Optuna calls `_get_stale_trial_ids` first).
    """

    heartbeat_error: BaseException | None = None

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as e:  # raised in the trial's thread by objective.py
            self.heartbeat_error = e

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        for trial_id in stale:
            try:
                record.write_stale_reason(self, trial_id, self.grace_period)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker failed it first
        return stale


def heartbeat_failure(storage: optuna.storages.BaseStorage) -> BaseException | None:
    """The error of a heartbeat that could not be written, if any (through Optuna's cache layer)."""
    return getattr(internals.backend(storage), "heartbeat_error", None)


class RequeueStaleTrial:
    """Queue a dead worker's trial again (same configuration), at most `max_retry` times.

    Like Optuna's `RetryHeartbeatStaleTrialCallback` (same `failed_trial` / `retry_history`
    system attrs), but the new trial starts with clean user attrs: the failed trial's
    `fail_reason` and `worker` belong to it alone. `retry_of` names the trial it repeats.
    """

    def __init__(self, max_retry: int = MAX_RETRIES) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            return
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            user_attrs={"retry_of": trial.number},
            system_attrs={"failed_trial": history[0], "retry_history": history}))


def _schema_race(error: Exception) -> bool:
    text = str(getattr(error, "orig", None) or error).lower()
    return any(s in text for s in ("unique constraint", "already exists", "duplicate key", "database is locked"))


def open_storage(url: str, *, create: bool, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> SweepsStorage:
    """Connect to `url`, turning every connection problem into one clear `SweepsError`.

    With `create=False` an SQLite file that does not exist is an error (nothing is made).
    With `heartbeat_interval`, running trials send heartbeats; a trial silent for
    `grace_period` seconds (its worker died) is marked failed and queued again.
    """
    if "://" not in url:
        raise SweepsError(f"--storage {url!r} is not a storage URL; use e.g. sqlite:///path/to.db "
                          "or postgresql://user@host/db.")
    path = sqlite_file(url)
    if path is not None:
        if not create and not path.exists():
            found_from = (" (the default storage/ is found from the current folder: run from the folder the sweep "
                          "ran in, or pass --storage)") if not path.is_absolute() else ""
            raise SweepsError(f"{path.absolute()}: no such study database{found_from}; run the sweep first "
                              "(python -m sweeps.run STUDY_FILE) or pass --storage.")
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SweepsError(f"cannot create {path.parent} for the study database ({e.strerror}); "
                                  "pass --storage with a writable location.") from None
        if path.exists():
            _check_sqlite_file(path, url)
    heartbeat = {}
    if heartbeat_interval:
        heartbeat = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                         heartbeat_stale_trial_callback=RequeueStaleTrial())
    _opened.append(url)
    try:
        for attempt in range(SCHEMA_RACE_RETRIES):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = SweepsStorage(url, engine_kwargs=_engine_kwargs(url), **heartbeat)
                break
            except Exception as e:
                # Several processes opening a new database at once (workers, machines, a dashboard)
                # race to create Optuna's tables; the losers find them made a moment later.
                if attempt + 1 == SCHEMA_RACE_RETRIES or not _schema_race(e):
                    raise
                time.sleep(0.2 * (attempt + 1))
        return storage
    except ImportError as e:
        raise SweepsError(f"storage {describe(url)}: its database driver is missing ({e}); "
                          "install it, e.g. pip install 'psycopg[binary]' for PostgreSQL.") from None
    except Exception as e:
        message = explain(e, url, known_only=True)
        if message is None:
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            message = (f"cannot open storage {describe(url)}: {reason}; check the URL, that the server "
                       "is running and that you may connect.")
        raise SweepsError(message) from None


def _check_sqlite_file(path: Path, url: str) -> None:
    """Refuse a damaged SQLite file before anything is written to it.

    `PRAGMA quick_check` reads every page once (a 5,000-trial database: well under a second);
    without it, a file damaged in the middle fails only when a later write touches the bad
    page, half-way through a sweep.
    """
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as connection:
            rows = connection.execute("PRAGMA quick_check").fetchall()
        connection.close()
    except sqlite3.Error as e:
        raise SweepsError(explain(e, url)) from None
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        raise SweepsError(explain(sqlite3.DatabaseError(f"database disk image is malformed: {problems[0]}"), url))


def use_wal(storage: optuna.storages.RDBStorage) -> None:
    """SQLite's write-ahead log: readers (the dashboard, other workers) never block the writer.

    The mode is stored in the database file, so this runs once per file in effect; `run`
    switches it on after checking that the study is sweeps' own (it is a write).
    """
    if storage.engine.name == "sqlite":
        with storage.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        # Wait for a lock instead of failing at once when another worker writes.
        return {"connect_args": {"timeout": 60}}
    # Detect connections dropped by the server between trials.
    return {"pool_pre_ping": True}


def study_exists(storage: optuna.storages.BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False


def sweeps_study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """The studies in a storage, without sweeps' companion studies (their names hold ':')."""
    return [n for n in optuna.get_all_study_names(storage) if ":" not in n]


def load_existing_study(study_name: str, url: str | None) -> tuple[optuna.Study, str]:
    """The stored sweeps study `study_name` (and its URL); a clear error when there is none.

    Writes nothing. A study of that name that sweeps did not write is refused (`record`).
    """
    url = resolve_url(study_name, url)
    rdb = open_storage(url, create=False)
    if not study_exists(rdb, study_name):
        names = sweeps_study_names(rdb)
        known = f"it holds {', '.join(repr(n) for n in names)}" if names else "it holds no study"
        raise SweepsError(f"no study named '{study_name}' in {describe(url)} ({known}); run the sweep "
                          "first, or pass the --storage it was run with.")
    study = optuna.load_study(study_name=study_name, storage=rdb)
    record.check_sweeps_study(study, describe(url))
    return study, url
