"""Tables III–VI logic, verification statistics and the detector game (cae.evaluation)."""

import dataclasses

import numpy as np
import pytest

from cae import evaluation, experiments, fingerprint, presets, reports, scripts, zoo
from test_zoo import synthetic


def _channel_model(noise, seed):
    """A tiny model that classifies by the brighter channel (the synthetic colour task),
    its weights disturbed by ``noise``: no training needed, accuracy varies with noise."""
    import keras

    rng = np.random.default_rng(seed)
    inputs = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([(40 * np.eye(3) + noise * rng.normal(size=(3, 3))).astype(np.float32),
                       (noise * rng.normal(size=3)).astype(np.float32)])
    return model


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """A Context of hand-made models (no training): the source, and per group models
    of different quality; the testing surrogates include the source itself."""
    root = tmp_path_factory.mktemp("cache")
    preset = dataclasses.replace(
        presets.get("quick"), name="toy-eval", dataset="synthetic", defender_size=192, adversary_size=192,
        train_surrogates=("cnn",), train_references=("cnn",), test_surrogates=("cnn", "cnn"),
        test_references=("cnn", "cnn"), attack_inputs=40, evaluate_on=0, training_subset=0, mistakes=0,
    )
    dataset = synthetic(n_train=400, n_test=64, colour=True)
    store = zoo.Zoo(root / "zoo", datasets={"synthetic": dataset})
    specs = experiments.model_specs(preset)
    source = _channel_model(0.0, 0)
    models = {"source": source, "train_surrogates": [_channel_model(2.0, 1)],
              "train_references": [_channel_model(20.0, 2)], "test_surrogates": [source, _channel_model(5.0, 3)],
              "test_references": [_channel_model(20.0, 4), _channel_model(40.0, 5)]}
    inputs = np.sort(zoo.split_of(dataset, specs["source"]))[:40]
    return experiments.Context(preset, dataset, models, specs, store, inputs)


@pytest.fixture(scope="module")
def fp(context):
    x = np.clip(context.x + np.random.default_rng(0).uniform(-0.15, 0.15, (len(context.x), 1, 1, 3)), 0, 1)
    return fingerprint.create(context.models["source"], x.astype(np.float32), attack="toy", epsilon=0.15,
                              tau=1.0, dataset="synthetic")


def _first(k, n):
    return np.arange(n) < k


def _handmade(retentions_pos, retentions_neg, n=40, calibration=((0.9, 1.0, 0.95), (0.1, 0.3, 0.2))):
    """A fingerprint of n keys (all class 0), calibrated on models that match the first
    keys in the given proportions, and callables keeping exactly the given retentions."""
    fp = fingerprint.create(lambda x: np.zeros(len(x), np.int64), np.full((n, 32, 32, 3), 0.5, np.float32),
                            attack="hand", epsilon=0.1, tau=1.0, dataset="synthetic", num_classes=3)
    surrogates, references = ([_first(int(round(r * n)), n) for r in group] for group in calibration)
    fp = fp.with_calibration(fingerprint.Calibration(np.array(surrogates), np.array(references), models="hand"))

    def suspect(retention):
        k = int(round(retention * n))
        return lambda x: np.where(np.arange(len(x)) < k, 0, 1)

    return fp, [suspect(r) for r in retentions_pos], [suspect(r) for r in retentions_neg]


def test_verification_stats_on_a_handmade_case():
    fp, pos, neg = _handmade([0.9, 0.8, 0.5], [0.1, 0.3, 0.6])
    result = reports.verification_stats(None, fp, pos, neg)
    assert result["auc"] == pytest.approx(8 / 9)  # 0.5 loses only to the reference at 0.6
    assert result["tpr_at_1_fpr"] == pytest.approx(2 / 3)
    assert result["threshold"] == pytest.approx(0.325)  # smallest multiple of 1/40 above the calibration's 0.3
    verdicts = {r["retention"]: r["verdict"] for r in result["suspects"]}
    # The reference at 0.6 and the derived models at 0.8 and 0.5 are above θ, but an
    # independent model (the calibration references' rates, and their spread from one
    # model to the next) matches that many keys too often: not enough evidence to accuse.
    assert verdicts == {0.9: "surrogate", 0.8: "inconclusive", 0.5: "inconclusive", 0.1: "inconclusive",
                        0.3: "inconclusive", 0.6: "inconclusive"}
    assert result["derived_flagged"] == 1 and result["references_flagged"] == 0
    assert result["fpr"][0] == 0 and result["tpr"][-1] == 1 and result["fpr"][-1] == 1
    assert set(result["statistics"]) == {"retention", "lr"} and 0 <= result["auc_lr"] <= 1


def test_p_values_fall_as_retention_rises():
    retentions = [0.2, 0.4, 0.5, 0.7, 0.9, 1.0]
    fp, pos, neg = _handmade(retentions, [0.1, 0.2, 0.3, 0.4])
    derived = [r for r in reports.verification_stats(None, fp, pos, neg)["suspects"] if r["kind"] == "derived"]
    assert [r["retention"] for r in derived] == retentions
    for key, falls in (("p-value", True), ("p-value (LR)", True), ("p-value (derived)", False)):
        values = [r[key] for r in derived]
        assert all((a >= b) if falls else (a <= b) for a, b in zip(values, values[1:])), (key, values)
        assert values[0] != values[-1]
    assert derived[-1]["p-value"] < 1e-3  # every key, each one that the references rarely match


def test_usable_auc_counts_only_derived_models_that_kept_their_accuracy():
    fp, pos, neg = _handmade([0.9, 0.8, 0.2], [0.1, 0.3, 0.6])
    names = {"ftll": pos[0], "retraining": pos[1], "rtal": pos[2]}
    drop = {"ftll": 0.0, "retraining": 0.10, "rtal": 0.28}
    result = reports.verification_stats(None, fp, names, neg, accuracy_drop=drop)
    assert result["auc"] == pytest.approx(7 / 9)  # rtal's 0.2 beats only the reference at 0.1
    assert result["auc_usable"] == 1.0 and result["positives_usable"] == 2  # 0.10 is within 10 points
    assert result["tpr_at_1_fpr_usable"] == 1.0 and result["tpr_at_1_fpr"] == pytest.approx(2 / 3)
    assert result["derived_flagged_usable"] == 1  # 0.8 is above θ, but not far enough above the references
    assert {r["model"]: r["accuracy drop"] for r in result["suspects"] if r["kind"] == "derived"} == drop
    assert "auc_usable" not in reports.verification_stats(None, fp, names, neg)
    with pytest.raises(ValueError, match="lacks derived models.*rtal"):
        reports.verification_stats(None, fp, names, neg, accuracy_drop={"ftll": 0.0, "retraining": 0.0})


def test_verification_stats_needs_both_kinds():
    fp, pos, _ = _handmade([0.9], [0.1])
    with pytest.raises(ValueError, match="derived and reference"):
        reports.verification_stats(None, fp, pos, [])


def test_group_rows_shape_and_brackets(context, fp):
    rows = reports.group_rows(context, fp)
    assert [(r["split"], r["role"]) for r in rows] == [
        ("source", "source"), ("training", "surrogate"), ("training", "reference"),
        ("testing", "surrogate"), ("testing", "reference")]
    assert rows[0]["retention"] == "1.000" and rows[0]["fidelity"] == "1.000"
    testing_surrogates = rows[3]
    assert testing_surrogates["models"] == 2
    assert testing_surrogates["retention_max"] == 1.0 and testing_surrogates["fidelity_max"] == 1.0  # the source
    assert testing_surrogates["retention"].endswith("1.000")
    for row in rows:
        for key in ("test_accuracy", "fidelity", "retention"):
            assert 0 <= row[f"{key}_min"] <= row[f"{key}_max"] <= 1
    # the table's retention matches fingerprint.verify on each model
    retentions = [fingerprint.verify(m, fp).retention for m in context.models["test_surrogates"]]
    assert testing_surrogates["retention_min"] == min(retentions)
    assert testing_surrogates["retention_max"] == max(retentions)


def test_fidelity_of_the_source_is_one(context):
    assert evaluation.fidelity_on_d1(context.models["test_references"][1], context.models["source"],
                                     context.dataset, context.specs["source"], 100) < 1.0
    source, spec = context.models["source"], context.specs["source"]
    assert evaluation.fidelity_on_d1(source, source, context.dataset, spec, 50) == 1.0
    x, labels = evaluation.d1_sample(source, context.dataset, spec, 50)
    assert len(x) == 50
    assert np.array_equal(labels, source.predict(x, verbose=0).argmax(axis=1))
    accuracy = evaluation.test_accuracy(source, context.dataset)
    assert 0 <= accuracy <= 1


def test_removal_rows_put_paper_numbers_beside_ours(context, fp):
    derived = _channel_model(10.0, 7)
    rows = reports.removal_rows(context, fp, attacks=("ftll",), models={"ftll": derived})
    assert [r["attack"] for r in rows] == ["Source (no attack)", "FTLL"]
    ftll = rows[1]
    assert (ftll["paper accuracy"], ftll["paper fidelity"], ftll["paper retention"]) == (0.775, 0.935, 1.00)
    verdict = fingerprint.verify(derived, fp)
    assert ftll["verified"] == ("yes" if verdict.is_surrogate else "NO (broken)" if verdict.retention < verdict.threshold
                                else "NO (inconclusive)" if verdict.p_value is None
                                else f"NO (inconclusive, p-value {verdict.p_value:.3g})")
    assert ftll["retention"] == fingerprint.verify(derived, fp).retention
    assert rows[0]["retention"] == 1.0 and rows[0]["fidelity"] == 1.0
    assert ftll["Δ accuracy"] == pytest.approx(ftll["test_accuracy"] - rows[0]["test_accuracy"])


def _fake_cigm(x, eps, seed, success, conferrable):
    """A stand-in for the cached C-IGM run: +-eps noise; the training surrogates take
    the target label t = 0 everywhere, the training references only where the example
    is not ``conferrable`` (so Alg. 2 with τ = 1 keeps exactly ``success & conferrable``)."""
    noise = np.random.default_rng(seed).choice([-eps, eps], size=x.shape).astype(np.float32)
    n = len(x)
    return {"x_adv": np.clip(x + noise, 0, 1), "success": success, "t": np.zeros(n, np.int64),
            "train_surrogates": np.zeros((2, n), np.int64),
            "train_references": np.where(conferrable, 1, 0)[None, :].repeat(2, axis=0)}


def test_detector_game_accuracies_are_rates(context, monkeypatch):
    def fake_attack(ctx, method, eps):
        assert method == "cigm"
        i = np.arange(len(ctx.x))
        return _fake_cigm(ctx.x, eps, 1, success=i % 4 != 0, conferrable=i % 5 != 0)

    monkeypatch.setattr(evaluation.experiments, "run_attack", fake_attack)
    rows = evaluation.detector_game(context, eps_values=(0.25,), steps=1)
    assert len(rows) == 1 and rows[0]["eps"] == 0.25
    row = rows[0]
    # Fingerprints are what Extract keeps (successful and conferrable), not every success.
    i = np.arange(len(context.x))
    assert row["fingerprints"] == int(np.sum((i % 4 != 0) & (i % 5 != 0))) < int(np.sum(i % 4 != 0))
    assert 0 <= row["held-out accuracy"] <= 1 and 0 <= row["train accuracy"] <= 1
    assert row["train"] + row["held out"] == 2 * row["fingerprints"]
    with pytest.raises(ValueError, match="train_fraction"):
        evaluation.detector_game(context, eps_values=(0.25,), train_fraction=1.5)


def test_detector_learns_an_obvious_perturbation(context, monkeypatch):
    """Fingerprints that are the inputs plus +-0.3 noise are easy to spot: a detector that
    stays at chance here is undertrained, and its 0.5 would be read as 'undetectable'."""
    def fake_attack(ctx, method, eps):
        everything = np.ones(len(ctx.x), bool)
        return _fake_cigm(ctx.x, eps, 2, success=everything, conferrable=everything)

    monkeypatch.setattr(evaluation.experiments, "run_attack", fake_attack)
    row = evaluation.detector_game(context, eps_values=(0.3,))[0]
    assert row["train accuracy"] >= 0.9, row
    assert row["held-out accuracy"] >= 0.8, row


# --------------------------------------------------------------------------- extra references
@pytest.mark.parametrize("n", [0, 1, 5])
def test_extra_references_are_new_independent_models(n):
    from cae import experiments, presets

    specs = experiments.model_specs(presets.get("quick"))
    extra = experiments.extra_reference_specs(specs, n)
    assert len(extra) == n
    existing = {s.key for s in experiments.all_specs(specs)}
    assert not existing & {s.key for s in extra} and len({s.key for s in extra}) == n
    base = specs["test_references"]
    recipes = len(experiments.EXTRA_RECIPES)
    for i, spec in enumerate(extra):  # like the testing references: D2, ground truth, their architectures
        assert (spec.data, spec.labels, spec.role, spec.parent) == ("D2", "ground_truth", "reference", "")
        assert spec.architecture == base[(i + i // recipes) % len(base)].architecture and spec.epochs == base[0].epochs
        assert spec.seed not in {s.seed for s in experiments.all_specs(specs)}
        recipe = experiments.EXTRA_RECIPES[i % recipes]  # the recipes in turn
        assert all(getattr(spec, name) == value for name, value in recipe.items())
    if n >= recipes:  # some are trained differently from the source
        assert {(s.optimizer, s.augment, s.options) for s in extra[:recipes]} != {(base[0].optimizer,
                                                                                   base[0].augment, ())}


def test_extra_references_refuses_a_negative_count():
    from cae import experiments, presets

    with pytest.raises(ValueError, match="extra references: -1"):
        experiments.extra_reference_specs(experiments.model_specs(presets.get("quick")), -1)


@pytest.mark.parametrize("text, expected", [("0", 0), ("4", 4), ("-1", None), ("two", None), ("1.5", None)])
def test_count_argument(text, expected):
    import argparse

    if expected is None:
        with pytest.raises(argparse.ArgumentTypeError, match="not a count"):
            scripts.count(text)
    else:
        assert scripts.count(text) == expected
