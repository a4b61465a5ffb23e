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

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import torch

from sweeps.data.dataset import Dataset, encode_for_hashing, is_table
from sweeps.errors import SweepsError
from sweeps.data.folds import Folds, fold_layout, make_folds
from sweeps.data.preprocess import Preprocessing
from sweeps.data.shared import FoldRows, SharedRows

FORMAT = 4  # bump when what `make_folds` produces, or how it is stored, changes
DEFAULT_GB = 4.0
_TENSORS = ("X_train", "y_train", "train_weight", "X_val", "y_val", "val_weight", "target_std",
            "val_groups", "train_importance", "target_X")
# the large ones: memory-mapped, not read
_MAPPED = ("X_train", "X_val", "shared_numeric", "shared_codes", "shared_grid_index", "shared_grid_frac")
_SHARED = tuple(f.name for f in dataclasses.fields(SharedRows) if f.name not in ("n_numeric", "width", "whole_rows"))


def cache_dir() -> Path | None:
    """The cache folder, or None when `SWEEPS_CACHE_DIR=off`."""
    configured = os.environ.get("SWEEPS_CACHE_DIR")
    if configured:
        return None if configured.lower() in ("off", "0", "none") else Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sweeps"


def limit_bytes() -> int:
    """`SWEEPS_CACHE_GB` in bytes: a finite number of GiB >= 0 (0: keep only the newest entry)."""
    text = os.environ.get("SWEEPS_CACHE_GB")
    if text is None or not text.strip():
        return int(DEFAULT_GB * 2**30)
    try:
        gb = float(text)
    except ValueError:
        gb = math.nan
    if not (math.isfinite(gb) and 0 <= gb <= 2**30):
        raise SweepsError(f"SWEEPS_CACHE_GB must be a number of GiB, at least 0, got {text!r}; e.g. "
                          f"SWEEPS_CACHE_GB=8 (unset: {DEFAULT_GB:g}).")
    return int(gb * 2**30)


def folds_key(dataset: Dataset, folds: int, seed: int, scaling: str) -> str:
    """Everything the prepared folds depend on, hashed."""
    digest = hashlib.sha256()
    parts = {"format": FORMAT, "data": dataset.data_hash, "columns": dataset.columns_hash,
             "test": dataset.test_hash, "folds": folds,
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
    limit = limit_bytes()  # a bad setting is refused before the minute of preparing
    key = folds_key(dataset, folds, seed, scaling)
    entry = root / key
    if _ours(entry):
        try:
            loaded = _load(entry, device, key, dataset.columns_hash, dataset.X)
            os.utime(entry / "meta.json")  # recently used: evicted last
            return loaded
        except Exception:  # damaged, altered, or of an older layout: prepare it again
            shutil.rmtree(entry, ignore_errors=True)
    prepared = make_folds(dataset, folds, seed, device, scaling=scaling)
    if entry.exists() or entry.is_symlink():
        return prepared  # something that is not ours has our entry's name: left alone, not cached
    try:
        _store(prepared, entry, key, dataset.columns_hash)
        _evict(root, keep=entry, limit=limit)
    except OSError:  # a full or read-only disk: the cache is an optimisation, the sweep goes on
        pass
    return prepared


# An entry is a folder named by its key, holding a meta.json that says it is this cache's:
# only such folders are ever read, evicted or cleared. A cache folder shared with other
# things (SWEEPS_CACHE_DIR=~/.cache, say) keeps everything else as it is.
OWNER = "sweeps fold cache"
_KEY = re.compile(r"[0-9a-f]{32}\Z")
_PARTIAL = re.compile(r"\.([0-9a-f]{32})\.(\d+)\.partial\Z")


def _ours(entry: Path) -> bool:
    """A real folder (not a link) named like a key, whose meta.json says it is this cache's."""
    if not _KEY.match(entry.name) or entry.is_symlink() or not entry.is_dir():
        return False
    meta = entry / "meta.json"
    try:
        return not meta.is_symlink() and json.loads(meta.read_text()).get("owner") == OWNER
    except (OSError, ValueError, AttributeError):
        return False


def _checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _store(folds: Folds, entry: Path, key: str, columns_hash: str) -> None:
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
                if name == "numeric" and folds.X_train.source.whole_rows:
                    continue  # the dataset's own matrix: every process that loads the entry has it
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
        files = {f.name: _checksum(f) for f in sorted(partial.iterdir())}  # an altered file is refused
        meta = {"owner": OWNER, "key": key, "columns_sha256": columns_hash, "files": files,
                "format": FORMAT, "k": folds.k, "n_outputs": folds.n_outputs, "fold_ids": folds.fold_ids,
                "n_numeric": folds.n_numeric, "group_names": list(folds.group_names), "preprocessings": preps,
                "shared_width": folds.X_train.source.width if folds.shared else None,
                "shared_numeric_columns": folds.X_train.source.n_numeric if folds.shared else None,
                "shared_whole_rows": bool(folds.shared and folds.X_train.source.whole_rows)}
        (partial / "meta.json").write_text(json.dumps(meta))  # written last: an entry with it is whole
        try:
            os.rename(partial, entry)
        except OSError:
            if not (entry / "meta.json").exists():  # not "another worker was first"
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _load(entry: Path, device: torch.device | str, key: str, columns_hash: str, X: object = None) -> Folds:
    """The entry's folds; `X`: the dataset's matrix, which an all-numeric entry's shared rows are."""
    meta = json.loads((entry / "meta.json").read_text())
    if meta.get("format") != FORMAT or meta.get("key") != key or meta.get("columns_sha256") != columns_hash:
        raise ValueError("another format, or another dataset's entry")
    present = {f.name for f in entry.iterdir()} - {"meta.json"}
    if present != set(meta["files"]) or any(_checksum(entry / name) != digest
                                            for name, digest in meta["files"].items()):
        raise ValueError("a file was changed, added or removed since the entry was written")

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
        whole_rows = bool(meta.get("shared_whole_rows"))
        if whole_rows and not (isinstance(X, np.ndarray) and X.dtype == np.float32):
            raise ValueError("the entry's rows are a float32 matrix the dataset does not have")
        source = SharedRows(width=int(meta["shared_width"]), n_numeric=int(meta["shared_numeric_columns"]),
                            whole_rows=whole_rows, **{
            name: torch.as_tensor(X if whole_rows and name == "numeric" else
                                  array(f"shared_{name}", mapped=f"shared_{name}" in _MAPPED), device=device)
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


def folder_size(folder: Path) -> int:
    """Bytes of the plain files in `folder` (links, dangling or not, are not followed)."""
    total = 0
    for f in folder.iterdir():
        try:
            info = f.lstat()
        except OSError:
            continue
        total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def entries(root: Path) -> list[tuple[Path, int, float]]:
    """(folder, bytes, last used) of each whole entry of this cache, least recently used first."""
    found = []
    for entry in root.iterdir() if root.is_dir() else []:
        if _ours(entry):
            found.append((entry, folder_size(entry), (entry / "meta.json").stat().st_mtime))
    return sorted(found, key=lambda e: e[2])


def partials(root: Path) -> list[tuple[Path, bool]]:
    """Folders of entries being written, or left by a killed process: (folder, whether its writer
    is gone). A writer is gone when its process no longer runs, or an hour has passed."""
    found = []
    for folder in root.iterdir() if root.is_dir() else []:
        match = _PARTIAL.match(folder.name)
        if not match or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            os.kill(int(match.group(2)), 0)
            alive = time.time() - folder.stat().st_mtime < 3600
        except ProcessLookupError:
            alive = False
        except (PermissionError, OverflowError):
            alive = time.time() - folder.stat().st_mtime < 3600
        found.append((folder, not alive))
    return found


def _evict(root: Path, keep: Path, limit: int) -> None:
    found = entries(root)
    total = sum(size for _, size, _ in found)
    for entry, size, _ in found:
        if total <= limit:
            break
        if entry != keep:
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
