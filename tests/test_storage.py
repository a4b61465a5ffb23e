"""Storage: many processes opening one new database at once (workers, machines, a dashboard)."""

from __future__ import annotations

import multiprocessing


def _open(url: str, results) -> None:
    from sweeps.storage import open_storage

    try:
        open_storage(url, create=True)
        results.put("ok")
    except Exception as e:  # reported to the parent
        results.put(f"{type(e).__name__}: {e}")


def test_processes_racing_to_create_a_new_database_all_succeed(tmp_path):
    # Without the retry in open_storage, 14 of 36 such opens failed here on
    # "UNIQUE constraint failed: alembic_version.version_num".
    context = multiprocessing.get_context("spawn")
    failures = []
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        results = context.Queue()
        processes = [context.Process(target=_open, args=(url, results)) for _ in range(6)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(timeout=120)
        failures += [r for r in (results.get(timeout=10) for _ in processes) if r != "ok"]
    assert not failures, failures[0]
