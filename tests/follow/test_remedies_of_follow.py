"""--follow's choices, without training: which verdict is acted on, what changes, when it stops,
and when a round is kept."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution

from sweeps import Space, Study
from sweeps.follow.loop import compare
from sweeps.follow.remedies import Remedy, Stop, diverged, next_remedy, param_source
from sweeps.follow.studyfile import render
from sweeps.results.diagnose import Diagnosis, Thresholds, Verdict
from sweeps.spec.params import Float, Int


def study(space=None) -> Study:
    return Study(name="s", task="classification", data=lambda: None,
                 space=space or Space(depth=(1, 2), width=(16, 64), dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-2),
                                      lr=(1e-3, 1e-1)))


def diagnosis(**statuses) -> Diagnosis:
    verdicts = [Verdict(problem, statuses.get(key, "no"), f"{problem} summary (0.5 vs 0.1).",
                        ["learning curve: still falling: more data would help"] if key == "overfitting" else [])
                for problem, key in (("model bias", "bias"), ("optimization", "optimization"),
                                     ("overfitting", "overfitting"), ("mismatch", "mismatch"))]
    return Diagnosis("s", verdicts, {}, [], {}, 1.0, Thresholds())


def trial(number: int, value: float, depth: int, lr: float, train_loss: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"depth": depth, "lr": lr}, value=value,
        distributions={"depth": IntDistribution(1, 4), "lr": FloatDistribution(1e-5, 100.0, log=True)},
        user_attrs={"train_loss": train_loss})


TRIALS = [trial(0, 0.3, 1, 0.01, 0.2), trial(1, 0.4, 2, 0.003, 0.25), trial(2, 0.5, 2, 0.05, 0.6)]


def test_nothing_to_act_on_stops_and_says_so():
    stop = next_remedy(study(), diagnosis(), TRIALS, {})
    assert isinstance(stop, Stop) and stop.reason.startswith("nothing limits it")


def test_mismatch_is_never_acted_on_by_a_round():
    """It needs the held-out rows and data only the user has: the end proposes it, no round runs it."""
    assert isinstance(next_remedy(study(), diagnosis(mismatch="yes"), TRIALS, {}), Stop)


def test_bias_widens_depth_and_width():
    remedy = next_remedy(study(), diagnosis(bias="yes"), TRIALS, {})
    assert isinstance(remedy, Remedy) and remedy.problem == "model bias"
    assert remedy.space == {"depth": Int(1, 4), "width": Int(16, 256, log=True)}
    assert remedy.change == "depth (1, 2) -> (1, 4); width (16, 64) -> (16, 256)"


def test_a_tiny_width_range_is_widened_to_a_useful_one_and_a_second_step_widens_further():
    tiny = study(Space(depth=1, width=(2, 4)))
    first = next_remedy(tiny, diagnosis(bias="yes"), TRIALS, {})
    assert first.space == {"depth": Int(1, 3), "width": Int(2, 64, log=True)}
    second = next_remedy(tiny, diagnosis(bias="yes"), TRIALS, {"model bias": 1})
    assert second.space["width"].high > 64


def test_a_second_bias_step_also_turns_on_what_the_study_turned_off():
    off = study(Space(depth=(1, 2), width=(16, 64), embedding="none"))
    assert next_remedy(off, diagnosis(bias="yes"), TRIALS, {"model bias": 1}).space["embedding"].choices == (
        "none", "periodic")
    assert next_remedy(study(), diagnosis(bias="yes"), TRIALS, {"model bias": 1}).space["ensemble"] == 4


def test_nets_that_add_nothing_over_a_baseline_stop_with_add_features_said_plainly():
    said = diagnosis()
    said.verdicts[0].remedies = ["the simpler model", "add features, or more informative ones: the nets find nothing"]
    stop = next_remedy(study(), said, TRIALS, {})
    assert isinstance(stop, Stop) and "add features" in stop.reason


def test_optimization_comes_before_bias_and_moves_the_learning_rate_down():
    """A deeper net that trains worse than a shallower one says the nets' high training loss is
    not about capacity: widening them first would add more badly trained nets."""
    remedy = next_remedy(study(), diagnosis(bias="yes", optimization="yes"), TRIALS, {})
    assert remedy.problem == "optimization"
    lr = remedy.space["lr"]
    assert lr.low == pytest.approx(1e-4) and lr.log
    assert lr.high == pytest.approx(0.009)  # 3x the lr of the deeper net that trained best (0.003)


def test_best_trials_at_the_lowest_learning_rate_are_an_optimization_problem_even_without_depth_evidence():
    hot = study(Space(depth=1, width=(16, 64), lr=(0.1, 1.0)))
    crowded = [trial(i, 1.0 + i, 1, 0.1 + 0.01 * i, 0.9) for i in range(3)]
    remedy = next_remedy(hot, diagnosis(bias="yes"), crowded, {})
    assert remedy.problem == "optimization" and "bottom of its range" in remedy.why
    assert (remedy.space["lr"].low, remedy.space["lr"].high) == pytest.approx((0.001, 0.3))  # below the old range


def test_nets_no_better_than_chance_are_an_optimization_problem():
    """Any net can at least learn the class frequencies: one that does not is not trained."""
    boiling = study(Space(depth=(1, 3), width=(32, 128), lr=(3.0, 30.0)))
    spread = [trial(0, 2.5, 1, 20.0, 2.4), trial(1, 4.0, 2, 5.0, 3.9), trial(2, 9.0, 3, 12.0, 8.0)]
    said = diagnosis(bias="yes")  # chance level 1.0 here: every net's training loss is above it
    remedy = next_remedy(boiling, said, spread, {})
    assert remedy.problem == "optimization" and "no better than chance" in remedy.why
    assert remedy.space["lr"].high <= 9.0 and remedy.space["lr"].low == pytest.approx(0.03)
    healthy = [trial(0, 0.3, 1, 20.0, 0.2)]
    assert next_remedy(boiling, said, healthy, {}).problem == "model bias"


def test_a_second_optimization_step_adds_warm_up_decay_and_clipping():
    remedy = next_remedy(study(), diagnosis(optimization="yes"), TRIALS, {"optimization": 1})
    assert remedy.space["schedule"] == "cosine" and remedy.space["grad_clip"] == 1.0


def test_overfitting_strengthens_regularization_then_ensembles_and_says_more_data_helps():
    remedy = next_remedy(study(), diagnosis(overfitting="yes"), TRIALS, {})
    assert remedy.space == {"weight_decay": Float(1e-6, 0.1, log=True), "dropout": Float(0.0, 0.5),
                            "noise": Float(0.0, 0.3)}
    assert remedy.notes and "more data" in remedy.notes[0]
    again = next_remedy(study(), diagnosis(overfitting="yes"), TRIALS, {"overfitting": 1})
    assert again.space == {"ensemble": 4}
    smaller = next_remedy(study(), diagnosis(overfitting="yes"), TRIALS, {"overfitting": 2})
    assert smaller.space == {"depth": Int(1, 1), "width": Int(16, 16, log=True)}  # a smaller model
    assert isinstance(next_remedy(study(Space(depth=1, width=16)), diagnosis(overfitting="yes"), TRIALS,
                                  {"overfitting": 2}), Stop)  # nothing smaller to go to


def test_a_define_by_run_space_is_not_changed():
    spec = study().replace(space=lambda trial: {"depth": 1, "width": 8, "dropout": 0.0, "weight_decay": 1e-4,
                                                "lr": 1e-3})
    stop = next_remedy(spec, diagnosis(bias="yes"), TRIALS, {})
    assert isinstance(stop, Stop) and "function" in stop.reason


@pytest.mark.parametrize("ours, theirs, kept", [
    ([0.50, 0.40, 0.60], [0.60, 0.50, 0.70], True),  # better on every fold by 0.1: no spread
    ([0.50, 0.40, 0.60], [0.50, 0.40, 0.60], False),  # the same
    ([0.40, 0.50, 0.60], [0.45, 0.45, 0.65], False),  # better on average by 0.017, spread 0.033: noise
    ([0.60, 0.50, 0.70], [0.50, 0.40, 0.60], False),  # worse
])
def test_a_round_is_kept_only_when_better_by_more_than_one_standard_error_fold_by_fold(ours, theirs, kept):
    diff, se, decision = compare(ours, theirs)
    assert decision is kept
    assert diff == pytest.approx(sum(ours) / 3 - sum(theirs) / 3)


def test_the_pairs_cancel_how_hard_each_fold_is():
    """Folds differ far more than configurations: 0.1 better on each fold is clear, paired; as
    two independent means with that spread between folds it would be noise."""
    theirs = [0.2, 0.6, 1.0]
    ours = [v - 0.1 for v in theirs]
    assert compare(ours, theirs)[2]
    assert not compare(ours, theirs[:2])[2]  # not the same folds: the means and their errors


def test_the_round_file_names_the_verdict_and_only_what_changed(tmp_path):
    remedy = Remedy("model bias", "too weak (0.66 vs 0.03).", "depth 1 -> (1, 3)", space={"depth": Int(1, 3),
                                                                                          "width": Int(2, 64, log=True)})
    text = render(parent_file=tmp_path / "tiny.py", file=tmp_path / "tiny_round2.py", name="tiny-round2", number=2,
                  parent_name="tiny", remedy=remedy, evidence="honest CV loss 0.7758 ± 0.0331.",
                  storage="sqlite:///storage/tiny.db")
    assert "parent = load_study('tiny.py')" in text
    assert "space=parent.space.replace(depth=(1, 3), width=(2, 64))," in text
    assert "model bias: too weak (0.66 vs 0.03)." in text
    assert "python -m sweeps.run tiny_round2.py --storage sqlite:///storage/tiny.db" in text
    compile(text, "tiny_round2.py", "exec")
    assert param_source("width", Int(2, 64, log=False)) == "Int(2, 64, log=False)"  # not width's own scale


def test_a_study_whose_every_trial_diverged_moves_the_learning_rate_below_its_range():
    pruned = [optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={}, distributions={},
                                        user_attrs={"prune_reason": "diverged: the loss of fold 0 became non-finite"})
              for _ in range(3)]
    remedy = diverged(study(Space(depth=1, width=16, lr=(1.0, 10.0))), pruned, {})
    assert remedy.problem == "optimization" and "no trial finished: all 3" in remedy.why and "diverged" in remedy.why
    assert (remedy.space["lr"].low, remedy.space["lr"].high) == pytest.approx((0.01, 3.0))
    assert isinstance(diverged(study().replace(space=lambda t: {}), pruned, {}), Stop)
