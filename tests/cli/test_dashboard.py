"""optuna-dashboard on a real sweeps study, seen by a person in headless Chromium.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package; `.ci/run` installs
both. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.sweep.optimize import run_study

from conftest import default_signals, slowness

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

STUDY_FILE = """
from sklearn.datasets import load_digits
from sweeps import Study, Space
study = Study(name="dash", task="classification", data=lambda: load_digits(return_X_y=True),
              space=Space(depth=1, width=(16, 32), dropout=0.0, weight_decay=1e-4, lr=(1e-6, 1e-2)),
              folds=3, max_epochs=8, patience=3, n_trials=5,
              pruner=__import__("optuna").pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed in CI (.ci/run installs Debian's chromium).")
        pytest.skip("Debian's chromium is not installed")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    """A real sweep (with a pruned trial) and evaluation, served by `python -m sweeps.dashboard`."""
    root = tmp_path_factory.mktemp("dash")
    study_file = root / "dash.py"
    study_file.write_text(STUDY_FILE)
    from sweeps.spec.study import load_study_file

    spec = load_study_file(study_file)
    (root / "storage").mkdir()
    url = f"sqlite:///{root / 'storage' / 'dash.db'}"
    optuna.create_study(study_name="dash", storage=url)
    study = optuna.load_study(study_name="dash", storage=url)
    for lr in (1e-2, 1e-2, 1e-2, 1e-6, 1e-2):  # the 4th cannot learn and is pruned
        study.enqueue_trial({"lr": lr})
    dataset = load_dataset(spec)
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    evaluate_study(spec, dataset, storage=url, model_path=str(root / "m.pt"), err=io.StringIO())

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "sweeps.dashboard", str(study_file), "--port", str(port)],
                               cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_signals)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/studies", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    yield base, process, url
    if process.poll() is None:
        process.kill()


def page_text(browser, url: str, shot: str, wait_for: str) -> str:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_text(wait_for, exact=False).first.wait_for(timeout=20000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    text = page.inner_text("body")
    page.close()
    return text


def test_a_person_sees_the_study_its_trials_attrs_and_note(browser, dashboard):
    base, _, _ = dashboard
    home = page_text(browser, f"{base}/dashboard", "dashboard-home.png", "dash")
    assert "dash" in home

    study = page_text(browser, f"{base}/dashboard/studies/1", "dashboard-study.png", "fingerprint")
    assert "dash (id=1)" in study
    assert "cv_loss" in study  # the objective is named
    assert "fingerprint" in study and "settings" in study  # study user attrs
    # where the study opens: the held-out result and the diagnosis's state in words
    assert "Held-out test (evaluation #1" in study and "Not diagnosed yet" in study

    trials = page_text(browser, f"{base}/dashboard/studies/1/trials", "dashboard-trials.png", "fold_val_losses")
    assert "5 Trials" in trials
    assert "Pruned" in trials and "Complete" in trials
    for attr in ("fold_val_losses", "fold_train_losses", "cv_loss_std", "metric", "n_params", "seconds",
                 "best_epochs"):
        assert attr in trials
    assert "Intermediate Values" in trials  # the per-epoch learning curve

    note = page_text(browser, f"{base}/dashboard/studies/1/note", "dashboard-note.png", "sweeps study")
    assert "sweeps study 'dash'" in note
    assert "Held-out test result" in note and "test_rows_sha256" in note and "folds" in note


def test_pruned_trial_shows_its_reason(browser, dashboard):
    base, _, _ = dashboard
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{base}/dashboard/studies/1/trials")
    page.get_by_text("Trial 3", exact=True).first.click()
    reason = page.get_by_text("pruned by MedianPruner at epoch").first
    reason.wait_for(timeout=20000)
    assert reason.is_visible()  # in the trial's note, at the top: no scrolling needed
    text = page.inner_text("body")
    page.screenshot(path=str(ARTIFACTS / "dashboard-pruned-trial.png"), full_page=True)
    page.close()
    assert "pruned by MedianPruner at epoch" in text and "validation loss" in text  # the per-fold table


def request(url: str, method: str, body: bytes = b"{}", host: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({"Host": host} if host else {})}
    req = urllib.request.Request(url, data=body if method != "GET" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_dashboard_is_read_only_without_allow_writes(dashboard):
    base, _, url = dashboard
    study = optuna.load_study(study_name="dash", storage=url)
    running = study.ask()  # a trial a sweep is running right now
    trial_id = running._trial_id
    before = [(t.state, t.value) for t in study.trials]
    note = study.user_attrs
    codes = [
        request(f"{base}/api/trials/{trial_id}/tell", "POST", b'{"state": "Complete", "values": [-1.0]}'),
        request(f"{base}/api/studies/{study._study_id}", "DELETE"),
        request(f"{base}/api/studies/{study._study_id}/note", "PUT", b'{"version": 1, "body": "gone"}'),
        request(f"{base}/api/trials/{trial_id}/user-attrs", "POST", b'{"user_attrs": {"x": 1}}'),
    ]
    assert codes == [403, 403, 403, 403]
    after = optuna.load_study(study_name="dash", storage=url)  # the study is still there...
    assert [(t.state, t.value) for t in after.trials] == before  # ...unchanged, the trial still running
    assert after.user_attrs == note and "x" not in after.trials[-1].user_attrs
    assert request(f"{base}/api/studies/{study._study_id}", "GET") == 200  # reading still works
    study.tell(running, state=optuna.trial.TrialState.FAIL)


def test_requests_for_another_host_name_are_refused(dashboard):
    """DNS rebinding: a page of evil.example, its name pointed at 127.0.0.1, reaches the dashboard
    with `Host: evil.example`; only the names of the dashboard itself are answered."""
    base, _, _ = dashboard
    port = base.rsplit(":", 1)[1]
    assert request(f"{base}/api/studies", "GET", host=f"evil.example:{port}") == 403
    assert request(f"{base}/api/studies", "GET", host="evil.example") == 403
    for name in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        assert request(f"{base}/api/studies", "GET", host=name) == 200


def test_allowed_host_names_are_answered():
    from sweeps.dashboard import host_checked, host_names

    app = host_checked(lambda environ, start: (start("200 OK", []), [b"ok"])[1],
                       host_names("127.0.0.1", ["tunnel.example"]))
    status = []
    for host in ("tunnel.example:8080", "TUNNEL.example", "other.example", ""):
        app({"HTTP_HOST": host}, lambda code, headers: status.append(code.split()[0]))
    assert status == ["200", "200", "403", "403"]


def test_a_trial_finished_from_the_dashboard_is_left_finished_and_the_sweep_goes_on(tmp_path):
    """--allow-writes lets a person mark a running trial finished; the sweep that trains it
    says so in one line, writes nothing more to it, and runs its other trials."""
    (tmp_path / "dash.py").write_text(STUDY_FILE.replace("max_epochs=8", "max_epochs=400").replace(
        "patience=3", "patience=400").replace("MedianPruner(n_startup_trials=2, n_warmup_steps=2)", "NopPruner()")
        .replace("n_trials=5", "n_trials=2"))  # the finished trial and one other: the sweep goes on
    sweep = subprocess.Popen([sys.executable, "-m", "sweeps.run", str(tmp_path / "dash.py"), "--no-progress"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=default_signals)
    url = f"sqlite:///{tmp_path / 'storage' / 'dash.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    board = None
    try:
        deadline = time.time() + 120

        def running_trial():
            while time.time() < deadline:
                time.sleep(0.2)
                try:
                    trials = optuna.load_study(study_name="dash", storage=url).trials
                except Exception:  # not made yet
                    continue
                found = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.intermediate_values]
                if found:
                    return found[0]
            raise AssertionError("no running trial seen")

        running_trial()  # the study exists: the dashboard can open it
        board = subprocess.Popen([sys.executable, "-m", "sweeps.dashboard", str(tmp_path / "dash.py"), "--port",
                                  str(port), "--allow-writes"], cwd=tmp_path, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
        while time.time() < deadline:
            try:
                request(f"{base}/api/studies", "GET")
                break
            except OSError:
                time.sleep(0.3)
        running = running_trial()
        assert request(f"{base}/api/trials/{running._trial_id}/tell", "POST",
                       b'{"state": "Complete", "values": [0.123]}') == 204
        out, err = sweep.communicate(timeout=300)
    finally:
        if board is not None:
            board.kill()
        sweep.kill()
    assert sweep.returncode == 0, err
    assert f"trial #{running.number} was finished outside this sweep while it trained (it is COMPLETE now" in err
    assert "Traceback" not in err and err.count("\n") == 1
    trials = optuna.load_study(study_name="dash", storage=url).trials
    assert trials[running.number].value == 0.123 and "fold_val_losses" not in trials[running.number].user_attrs
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2  # the target, all the same


def test_the_saved_model_is_an_artifact_of_the_study(dashboard):
    import json

    base, _, _ = dashboard
    with urllib.request.urlopen(f"{base}/api/studies/1", timeout=10) as response:
        artifacts = json.load(response)["artifacts"]
    [model] = [a for a in artifacts if a["filename"] == "m.pt"]  # what evaluate saved, listed on the study
    with urllib.request.urlopen(f"{base}/artifacts/1/{model['artifact_id']}", timeout=10) as response:
        assert response.read()[8:9] == b"{"  # a safetensors file: 8 bytes of header length, then its JSON


def test_ctrl_c_stops_the_dashboard_cleanly(dashboard):
    _, process, _ = dashboard
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "/dashboard/studies/1" in out and "Dashboard stopped" in err and "Traceback" not in err


def test_missing_study_is_exit_2(tmp_path, monkeypatch, capsys):
    from sweeps.dashboard import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dash.py").write_text(STUDY_FILE)
    assert main([str(tmp_path / "dash.py")]) == 2
    assert "no such study database" in capsys.readouterr().err


def test_a_study_of_5000_trials_opens_with_its_history_plot(browser, tmp_path):
    """Realistic rows (a real sweep's trials, copied with varied values) at the scale users report
    as slow; the bound is about 3x what this machine measures (docs/benchmarks.md), on a day as
    fast as the one it was measured on (`conftest.slowness`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_dashboard", Path(__file__).parents[2] / "benchmarks"
                                                  / "bench_dashboard.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    study_file = bench.make_big_study(tmp_path, trials=5000, source_trials=4)
    db = tmp_path / "storage" / "big.db"
    assert db.stat().st_size / 5000 < 12 * 1024  # compact rows: ~6.5 KiB per trial
    bound = 120 * slowness()
    timings = bench.open_page(study_file, timeout=bound + 30, browser=browser, api=False)  # the page alone
    assert timings["history_plot_s"] < bound, timings
