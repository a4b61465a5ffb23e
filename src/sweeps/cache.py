"""Preprocess once: the prepared folds cached on disk, shared by workers, reruns, evaluate and diagnose.

`make_folds` fits one preprocessing per fold and lays out `[k, rows, features]` tensors;
on a large table that takes a minute (`benchmarks/bench_table.py`), and every worker
process, every rerun, `evaluate` and `diagnose` used to pay it again. `cached_folds` keys
the prepared folds by everything they depend on: the data's and the held-out rows'
fingerprints (SHA-256 of the rows and targets, as the study records them), the folds, seed
and preprocessing settings, the groups and target rows, and this module's format version.
A changed file, split or setting is another key: a miss, never stale data.

An entry is a folder of `.npy` arrays and one JSON file: loaded with `allow_pickle=False`
(nothing read here runs code), and the large arrays memory-mapped copy-on-write, so
processes on one machine share one copy of the pages through the OS's page cache. An entry
is written to a temporary folder and renamed into place: a crash leaves no half entry, and
of two workers preparing the same entry at once one keeps it. A corrupt entry is dropped
and prepared again.

Where: `$SWEEPS_CACHE_DIR`, else `$XDG_CACHE_HOME/sweeps`, else `~/.cache/sweeps`;
`SWEEPS_CACHE_DIR=off` turns it off. Size: at most `$SWEEPS_CACHE_GB` GiB (default 4); the
least recently used entries go first. `python -m sweeps.cache` shows it, `--clear` empties it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sweeps.data import Dataset, encode_for_hashing, is_table
from sweeps.folds import Folds, fold_layout, make_folds
from sweeps.preprocess import Preprocessing
from sweeps.shared import FoldRows, SharedRows

FORMAT = 3  # bump when what `make_folds` produces, or how it is stored, changes
DEFAULT_GB = 4.0
_TENSORS = ("X_train", "y_train", "train_weight", "X_val", "y_val", "val_weight", "target_std",
            "val_groups", "train_importance", "target_X")
# the large ones: memory-mapped, not read
_MAPPED = ("X_train", "X_val", "shared_numeric", "shared_codes", "shared_grid_index", "shared_grid_frac")
_SHARED = tuple(f.name for f in dataclasses.fields(SharedRows) if f.name not in ("n_numeric", "width"))


def cache_dir() -> Path | None:
    """The cache folder, or None when `SWEEPS_CACHE_DIR=off`."""
    configured = os.environ.get("SWEEPS_CACHE_DIR")
    if configured:
        return None if configured.lower() in ("off", "0", "none") else Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sweeps"


def limit_bytes() -> int:
    try:
        gb = float(os.environ.get("SWEEPS_CACHE_GB", DEFAULT_GB))
    except ValueError:
        gb = DEFAULT_GB
    return int(max(gb, 0.0) * 2**30)


def folds_key(dataset: Dataset, folds: int, seed: int, scaling: str) -> str:
    """Everything the prepared folds depend on, hashed."""
    digest = hashlib.sha256()
    parts = {"format": FORMAT, "data": dataset.data_hash, "test": dataset.test_hash, "folds": folds,
             "seed": seed, "scaling": scaling, "groups": dataset.group_names, "layout": fold_layout()}
    digest.update(json.dumps(parts, sort_keys=True).encode())
    if dataset.groups is not None:
        digest.update(np.ascontiguousarray(dataset.groups).tobytes())
    if dataset.target is not None:  # importance weights are fitted against these rows
        rows = encode_for_hashing(dataset.target) if is_table(dataset.target) else np.asarray(dataset.target)
        digest.update(str(rows.shape).encode() + np.ascontiguousarray(rows).tobytes())
    return digest.hexdigest()[:32]


def cached_folds(dataset: Dataset, folds: int, seed: int, device: torch.device | str = "cpu",
                 scaling: str = "standard") -> Folds:
    """`make_folds(dataset, folds, seed, device, scaling=scaling)`, prepared once per machine."""
    root = cache_dir()
    if root is None:
        return make_folds(dataset, folds, seed, device, scaling=scaling)
    entry = root / folds_key(dataset, folds, seed, scaling)
    if (entry / "meta.json").exists():
        try:
            loaded = _load(entry, device)
            os.utime(entry / "meta.json")  # recently used: evicted last
            return loaded
        except Exception:  # corrupt or from an older layout: prepare it again
            shutil.rmtree(entry, ignore_errors=True)
    prepared = make_folds(dataset, folds, seed, device, scaling=scaling)
    try:
        _store(prepared, entry)
        _evict(root, keep=entry)
    except OSError:  # a full or read-only disk: the cache is an optimisation, the sweep goes on
        pass
    return prepared


def _store(folds: Folds, entry: Path) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    partial = entry.parent / f".{entry.name}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for name in _TENSORS:
            tensor = getattr(folds, name)
            if isinstance(tensor, FoldRows):  # one shared copy: the rows once, each fold's row numbers
                tensor = tensor.rows
            if tensor is not None:
                np.save(partial / f"{name}.npy", tensor.cpu().numpy(), allow_pickle=False)
        if folds.shared:
            for name in _SHARED:
                np.save(partial / f"shared_{name}.npy", getattr(folds.X_train.source, name).cpu().numpy(),
                        allow_pickle=False)
        for f in range(folds.k):
            np.save(partial / f"train_rows_{f}.npy", np.asarray(folds.train_rows[f]), allow_pickle=False)
            np.save(partial / f"val_rows_{f}.npy", np.asarray(folds.val_rows[f]), allow_pickle=False)
        if folds.split_class_counts is not None:
            np.save(partial / "split_class_counts.npy", folds.split_class_counts, allow_pickle=False)
        preps = []
        for f, prep in enumerate(folds.preprocessings):
            meta, arrays = prep.state()
            preps.append({"meta": meta, "arrays": sorted(arrays)})
            for name, array in arrays.items():
                np.save(partial / f"prep_{f}_{name}.npy", np.asarray(array), allow_pickle=False)
        meta = {"format": FORMAT, "k": folds.k, "n_outputs": folds.n_outputs, "fold_ids": folds.fold_ids,
                "n_numeric": folds.n_numeric, "group_names": list(folds.group_names), "preprocessings": preps,
                "shared_width": folds.X_train.source.width if folds.shared else None,
                "shared_numeric_columns": folds.X_train.source.n_numeric if folds.shared else None}
        (partial / "meta.json").write_text(json.dumps(meta))  # written last: an entry with it is whole
        try:
            os.rename(partial, entry)
        except OSError:
            if not (entry / "meta.json").exists():  # not "another worker was first"
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _load(entry: Path, device: torch.device | str) -> Folds:
    meta = json.loads((entry / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError("another format")

    def array(name: str, mapped: bool = False):
        path = entry / f"{name}.npy"
        if not path.exists():
            return None
        # "c": copy-on-write pages, shared with every process that maps the same file
        return np.load(path, mmap_mode="c" if mapped else None, allow_pickle=False)

    tensors = {}
    for name in _TENSORS:
        value = array(name, mapped=name in _MAPPED)
        tensors[name] = None if value is None else torch.as_tensor(value, device=device)
    if meta.get("shared_width") is not None:
        source = SharedRows(width=int(meta["shared_width"]), n_numeric=int(meta["shared_numeric_columns"]), **{
            name: torch.as_tensor(array(f"shared_{name}", mapped=f"shared_{name}" in _MAPPED), device=device)
            for name in _SHARED})
        tensors["X_train"] = FoldRows(source, tensors["X_train"])
        tensors["X_val"] = FoldRows(source, tensors["X_val"])
    k = int(meta["k"])
    preps = [Preprocessing.from_state(p["meta"], {n: array(f"prep_{f}_{n}") for n in p["arrays"]})
             for f, p in enumerate(meta["preprocessings"])]
    return Folds(tensors["X_train"], tensors["y_train"], tensors["train_weight"], tensors["X_val"],
                 tensors["y_val"], tensors["val_weight"], tensors["target_std"], int(meta["n_outputs"]),
                 [array(f"train_rows_{f}") for f in range(k)], [array(f"val_rows_{f}") for f in range(k)],
                 [int(f) for f in meta["fold_ids"]], int(meta["n_numeric"]), preps,
                 array("split_class_counts"), tensors["val_groups"], tuple(meta["group_names"]),
                 tensors["train_importance"], tensors["target_X"])


def entries(root: Path) -> list[tuple[Path, int, float]]:
    """(folder, bytes, last used) of each whole entry, least recently used first."""
    found = []
    for entry in root.iterdir() if root.is_dir() else []:
        if entry.name.startswith(".") or not (entry / "meta.json").exists():
            continue
        size = sum(f.stat().st_size for f in entry.iterdir())
        found.append((entry, size, (entry / "meta.json").stat().st_mtime))
    return sorted(found, key=lambda e: e[2])


def _evict(root: Path, keep: Path) -> None:
    found = entries(root)
    total, limit = sum(size for _, size, _ in found), limit_bytes()
    for entry, size, _ in found:
        if total <= limit:
            break
        if entry != keep:
            shutil.rmtree(entry, ignore_errors=True)
            total -= size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.cache",
                                description="Show, or clear, the cache of prepared folds (README: 'Big tables').")
    p.add_argument("--clear", action="store_true", help="delete every cached entry")
    args = p.parse_args(argv)
    root = cache_dir()
    if root is None:
        print("The cache is off (SWEEPS_CACHE_DIR=off).")
        return 0
    found = entries(root)
    total = sum(size for _, size, _ in found)
    if args.clear:
        for entry, _, _ in found:
            shutil.rmtree(entry, ignore_errors=True)
        for partial in root.glob(".*.partial") if root.is_dir() else []:
            if time.time() - partial.stat().st_mtime > 3600:  # left by a crash, not being written now
                shutil.rmtree(partial, ignore_errors=True)
        print(f"Cleared {len(found)} entries ({total / 2**20:.1f} MiB) from {root}.")
        return 0
    print(f"Cache: {root}: {len(found)} entries, {total / 2**20:.1f} MiB "
          f"(limit {limit_bytes() / 2**30:.1f} GiB, SWEEPS_CACHE_GB; least recently used go first).")
    for entry, size, used in reversed(found):
        print(f"  {entry.name}  {size / 2**20:9.1f} MiB  last used {time.strftime('%Y-%m-%d %H:%M', time.localtime(used))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
