"""What each racing process runs (test_storage.py): a module of its own, so that a child process
unpickling it imports sweeps' storage and nothing of the test module's imports."""

from __future__ import annotations


def open_new_database(url: str, results, start) -> None:
    from sweeps.store.storage import open_storage

    try:
        start.wait(timeout=60)  # every process opens at the same moment
        open_storage(url, create=True)
        results.put("ok")
    except Exception as e:  # reported to the parent
        results.put(f"{type(e).__name__}: {e}")
