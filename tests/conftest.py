"""Shared fixtures: small real data (scikit-learn's digits), real SQLite files."""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from sweeps import Space, Study
from sweeps._cli import quiet_optuna
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import make_folds

# The shipped tables (studies/data), and the adult table's columns (its CSV has no header).
DATA = Path(__file__).parent.parent / "studies" / "data"
ADULT = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
         "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
         "income"]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test prepares its folds in a cache of its own (subprocesses inherit it)."""
    monkeypatch.setenv("SWEEPS_CACHE_DIR", str(tmp_path / "sweeps-cache"))


# The suite runs in parallel (pytest-xdist, pyproject's addopts): each test process trains on
# its share of the cores, so that two of them do not fight over the same ones.
THREADS = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


# fp32 matmul of the whole machine (2 threads) on the days this suite's time bounds were set:
# 146-168 GFLOP/s on this project's 2-core machine (docs/benchmarks.md, "Engine").
REFERENCE_FLOPS = 146e9


@functools.cache
def slowness() -> float:
    """How many times slower this machine runs now than when the time bounds were set (>= 1).

    A bound on wall time guards against code that got slower, not against a machine that did:
    the same machine was seen at 40 GFLOP/s on a loaded day, 3.6x slower, when the 5,000-trial
    dashboard page took more than 150 s against 47 s. Bounds measured on the reference day are
    multiplied by this factor (measured once per test process, on both cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        fastest = float("inf")
        for _ in range(4):
            started = time.perf_counter()
            a @ b
            fastest = min(fastest, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return max(1.0, REFERENCE_FLOPS / (2 * 2048**3 / fastest))


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    quiet_optuna()


def digits_study(**changes) -> Study:
    """A quick digits study: a small space and few epochs, so a trial takes ~0.2 s."""
    fields = dict(
        name="digits-test", task="classification", data=lambda: load_digits(return_X_y=True),
        space=Space(depth=(1, 2), width=(16, 64), dropout=(0.0, 0.3),
                    weight_decay=(1e-6, 1e-2), lr=(1e-3, 3e-2)),
        folds=3, max_epochs=8, patience=3, test_size=0.2, n_trials=3, seed=0,
    )
    fields.update(changes)
    return Study(**fields)


@pytest.fixture(scope="session")
def digits_dataset():
    return load_dataset(digits_study())


@pytest.fixture(scope="session")
def digits_folds(digits_dataset):
    return make_folds(digits_dataset, folds=3, seed=0)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


POSTGRES_URL = os.environ.get("SWEEPS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="module")
def postgres():
    """The PostgreSQL server's URL; a test fails without it in CI and skips elsewhere."""
    import optuna

    try:
        optuna.storages.RDBStorage(POSTGRES_URL)
    except Exception as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable in CI: {e}")
        pytest.skip(f"PostgreSQL not reachable: {e}")
    return POSTGRES_URL


def default_signals() -> None:
    """preexec_fn for test subprocesses: SIGINT handled as Ctrl+C even when pytest itself was
    started in the background (a shell starts background jobs with SIGINT ignored, and the
    child would inherit that, so Python would install no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def edited(model, tmp_path, change) -> str:
    """The model saved, then its JSON header edited by `change` (a hand edit), written back."""
    from safetensors import safe_open

    path = model.save(tmp_path / "m.pt")
    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    header = json.loads(metadata["model"])
    change(header, tensors)
    save_file(tensors, str(path), metadata={**metadata, "model": json.dumps(header)})
    return path
