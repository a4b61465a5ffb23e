"""A study of thousands of trials in optuna-dashboard: database size, and how long the page takes.

    python benchmarks/bench_dashboard.py [--trials 5000] [--source-trials 12]

A real digits sweep (`--source-trials` trials, with every user attr sweeps writes) is the
template; its trials' rows are copied, with values varied, until the study has `--trials`
trials: realistic rows (params, per-fold lists, per-epoch curves, `fold_curves`, notes for the
first `notes.MAX_TRIAL_NOTES` trials, as sweeps writes them),
written in one transaction instead of thousands. Then `python -m sweeps.dashboard` serves
it and headless Chromium opens the study page: the seconds until the history plot shows
its points, the seconds the trials API call takes, and the database's bytes per trial.
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """
from sklearn.datasets import load_digits
from sweeps import Space, Study
study = Study(name="big", task="classification", data=lambda: load_digits(return_X_y=True),
              space=Space(depth=(1, 3), width=(16, 128), lr=(1e-3, 1e-2)), folds=5, max_epochs=30, patience=5,
              n_trials={n})
"""


def make_big_study(folder: Path, trials: int, source_trials: int = 12) -> Path:
    """`folder/big.py` and its database `folder/storage/big.db` with `trials` trials."""
    import sqlalchemy

    from optuna.storages._rdb import models

    from sweeps.data.dataset import load_dataset
    from sweeps.store.notes import MAX_TRIAL_NOTES
    from sweeps.sweep.optimize import run_study
    from sweeps.spec.study import load_study_file

    study_file = folder / "big.py"
    study_file.write_text(STUDY.format(n=source_trials))
    spec = load_study_file(study_file)
    url = f"sqlite:///{folder / 'storage' / 'big.db'}"
    run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    engine = sqlalchemy.create_engine(url)
    tables = {m: m.__table__ for m in (models.TrialModel, models.TrialValueModel, models.TrialParamModel,
                                       models.TrialUserAttributeModel, models.TrialIntermediateValueModel,
                                       models.TrialSystemAttributeModel)}
    study_attrs = models.StudySystemAttributeModel.__table__
    rng = random.Random(0)
    with engine.begin() as connection:
        rows = {m: [dict(r._mapping) for r in connection.execute(t.select())] for m, t in tables.items()}
        sources = rows[models.TrialModel]
        next_ids = {m: max((r[list(r)[0]] for r in rows[m]), default=0) + 1 for m in tables}
        new = {m: [] for m in tables}
        for number in range(len(sources), trials):
            source = sources[number % len(sources)]
            trial_id = next_ids[models.TrialModel]
            next_ids[models.TrialModel] += 1
            new[models.TrialModel].append({**source, "trial_id": trial_id, "number": number})
            jitter = 1 + rng.uniform(-0.2, 0.2)
            for model in tables:
                if model is models.TrialModel:
                    continue
                key = list(tables[model].columns.keys())[0]
                for r in rows[model]:
                    if r["trial_id"] != source["trial_id"]:
                        continue
                    copy = {**r, key: next_ids[model], "trial_id": trial_id}
                    next_ids[model] += 1
                    if model is models.TrialValueModel:
                        copy["value"] = r["value"] * jitter
                    if model is models.TrialIntermediateValueModel and r["intermediate_value"] is not None:
                        copy["intermediate_value"] = r["intermediate_value"] * jitter
                    new[model].append(copy)
        for model, table in tables.items():
            if new[model]:
                connection.execute(table.insert(), new[model])
        # Each trial's note (optuna-dashboard keeps trial notes among the study's system attrs).
        notes = [dict(r._mapping) for r in connection.execute(study_attrs.select())]
        next_id = max(r["study_system_attribute_id"] for r in notes) + 1
        copies = []
        for trial in new[models.TrialModel]:
            if trial["number"] >= MAX_TRIAL_NOTES:
                continue  # as sweeps writes them: a note for the first MAX_TRIAL_NOTES trials only
            source = sources[trial["number"] % len(sources)]["trial_id"]
            for r in notes:
                if r["key"].startswith(f"dashboard:{source}:"):
                    copies.append({**r, "study_system_attribute_id": next_id,
                                   "key": r["key"].replace(f"dashboard:{source}:", f"dashboard:{trial['trial_id']}:")})
                    next_id += 1
        if copies:
            connection.execute(study_attrs.insert(), copies)
    engine.dispose()
    return study_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_page(study_file: Path, timeout: float = 120.0, browser=None, api: bool = True) -> dict[str, float]:
    """Serve the study with sweeps.dashboard; seconds until the history plot shows, and (with `api`)
    the seconds of the trials API call alone, before the page makes it."""
    import urllib.request

    from playwright.sync_api import sync_playwright

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "sweeps.dashboard", str(study_file), "--port", str(port)],
                              cwd=study_file.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{base}/api/meta", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        timings = {}
        if api:
            started = time.perf_counter()
            with urllib.request.urlopen(f"{base}/api/studies/1?after=0", timeout=timeout) as response:
                timings["api_bytes"] = len(response.read())
            timings["api_s"] = time.perf_counter() - started
        def measure(chromium) -> float:
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            started = time.perf_counter()
            page.goto(f"{base}/dashboard/studies/1")
            # the history plot draws one marker per trial: wait until plotly has drawn them
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .scatterlayer .point').length > 100",
                                   timeout=timeout * 1000)
            shown = time.perf_counter() - started
            page.close()
            return shown

        if browser is not None:
            shown = measure(browser)
        else:
            with sync_playwright() as p:
                chromium = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
                shown = measure(chromium)
                chromium.close()
        return {"history_plot_s": shown, **timings}
    finally:
        server.terminate()
        server.communicate(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5000)
    p.add_argument("--source-trials", type=int, default=12)
    args = p.parse_args()
    from sweeps._cli import quiet_optuna

    quiet_optuna()
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        study_file = make_big_study(Path(folder), args.trials, args.source_trials)
        made = time.perf_counter() - started
        db = Path(folder) / "storage" / "big.db"
        timings = open_page(study_file)
        print(f"{args.trials} trials: database {db.stat().st_size / 2**20:.1f} MiB "
              f"({db.stat().st_size / args.trials / 1024:.1f} KiB per trial, made in {made:.0f} s); "
              f"study API call {timings['api_s']:.1f} s ({timings['api_bytes'] / 2**20:.1f} MiB); "
              f"history plot shown {timings['history_plot_s']:.1f} s after opening the page")


if __name__ == "__main__":
    main()
