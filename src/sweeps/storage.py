"""Where a study lives: storage URL resolution, and creating or resuming the Optuna study.

The default is an SQLite file, `storage/<name>.db` relative to the current directory; any
Optuna storage URL works (PostgreSQL for many machines).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna

from sweeps.errors import SweepsError

DEFAULT_DIR = Path("storage")
SCHEMA_RACE_RETRIES = 8


def _schema_race(error: Exception) -> bool:
    text = str(getattr(error, "orig", None) or error).lower()
    return any(s in text for s in ("unique constraint", "already exists", "duplicate key", "database is locked"))


def resolve_url(study_name: str, url: str | None) -> str:
    """The storage URL to use: `url`, or `sqlite:///storage/<study_name>.db`."""
    return url if url else f"sqlite:///{DEFAULT_DIR / study_name}.db"


def results_folder(url: str) -> Path:
    """Where exports, reports and models go: next to an SQLite database, else storage/."""
    return Path(url[len("sqlite:///"):]).parent if url.startswith("sqlite:///") else DEFAULT_DIR


def describe(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str, *, create: bool, heartbeat_interval: int | None = None,
                 grace_period: int | None = None) -> optuna.storages.RDBStorage:
    """Connect to `url`, turning every connection problem into one clear `SweepsError`.

    With `create=False` an SQLite file that does not exist is an error (nothing is made).
    With `heartbeat_interval`, running trials send heartbeats; a trial silent for
    `grace_period` seconds (its worker died) is marked failed and queued again.
    """
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not create and not path.exists():
            raise SweepsError(f"{path}: no such study database; run the sweep first "
                              "(python -m sweeps.run STUDY_FILE) or pass --storage.")
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise SweepsError(f"cannot create {path.parent} for the study database ({e.strerror}); "
                                  "pass --storage with a writable location.") from None
    if "://" not in url:
        raise SweepsError(f"--storage {url!r} is not a storage URL; use e.g. sqlite:///path/to.db "
                          "or postgresql://user@host/db.")
    heartbeat = {}
    if heartbeat_interval:
        heartbeat = dict(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                         heartbeat_stale_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=3))
    try:
        for attempt in range(SCHEMA_RACE_RETRIES):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url), **heartbeat)
                break
            except Exception as e:
                # Several processes opening a new database at once (workers, machines, a dashboard)
                # race to create Optuna's tables; the losers find them made a moment later.
                if attempt + 1 == SCHEMA_RACE_RETRIES or not _schema_race(e):
                    raise
                time.sleep(0.2 * (attempt + 1))
        if url.startswith("sqlite"):
            _use_wal(storage)
        return storage
    except ImportError as e:
        raise SweepsError(f"storage {describe(url)}: its database driver is missing ({e}); "
                          "install it, e.g. pip install 'psycopg[binary]' for PostgreSQL.") from None
    except Exception as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise SweepsError(f"cannot open storage {describe(url)}: {reason}; check the URL, "
                          "that the server is running and that you may connect.") from None


def _use_wal(storage: optuna.storages.RDBStorage) -> None:
    """SQLite's write-ahead log: readers (the dashboard, other workers) never block the writer.

    The mode is stored in the database file, so this runs once per file in effect.
    """
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


def load_existing_study(study_name: str, url: str | None) -> tuple[optuna.Study, str]:
    """The stored study `study_name` (and its URL); a clear error when there is none. Writes nothing."""
    url = resolve_url(study_name, url)
    rdb = open_storage(url, create=False)
    if not study_exists(rdb, study_name):
        names = optuna.get_all_study_names(rdb)
        known = f"it holds {', '.join(repr(n) for n in names)}" if names else "it holds no study"
        raise SweepsError(f"no study named '{study_name}' in {describe(url)} ({known}); run the sweep "
                          "first, or pass the --storage it was run with.")
    return optuna.load_study(study_name=study_name, storage=rdb), url
