"""End to end on a toy dataset: zoo -> attacks -> per-example results -> extract -> verify."""

import dataclasses

import numpy as np
import pytest

from cae import experiments, fingerprint, models, presets, zoo
from test_zoo import synthetic


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("CAE_CACHE_DIR", str(root))
    mp.setenv("CAE_RESULTS_DIR", str(root / "results"))
    preset = dataclasses.replace(
        presets.get("quick"), name="toy", dataset="synthetic", defender_size=192, adversary_size=192,
        source_epochs=3, surrogate_epochs=2, reference_epochs=2, train_surrogates=("cnn",),
        train_references=("cnn",), test_surrogates=("cnn",), test_references=("cnn",), attack_inputs=12,
        attack_iterations=30, batch_size=32, learning_rate=0.01, evaluate_on=0, training_subset=0,
    )
    store = zoo.Zoo(root / "zoo", datasets={"synthetic": synthetic(n_train=400, n_test=64, colour=True)})
    yield experiments.prepare(preset, verbose=False, store=store)
    mp.undo()


def test_specs_roles_and_parents(context):
    specs = context.specs
    source = specs["source"]
    assert source.data == "D1" and source.labels == "ground_truth"
    for spec in specs["train_surrogates"] + specs["test_surrogates"]:
        assert spec.labels == "distill" and spec.parent == source.key
    assert all(s.data == "D1" for s in specs["train_surrogates"] + specs["train_references"])
    assert all(s.data == "D2" for s in specs["test_surrogates"] + specs["test_references"])
    keys = [s.key for s in experiments.all_specs(specs)]
    assert len(set(keys)) == len(keys)


def test_attack_inputs_are_correct_d1_examples(context):
    source = context.models["source"]
    pred = source.predict(context.x, verbose=0).argmax(axis=1)
    assert len(context.inputs) == 12
    assert np.array_equal(pred, context.y)
    d1 = zoo.split_of(context.dataset, context.specs["source"])
    assert set(context.inputs) <= set(d1)


def test_run_attack_is_cached_and_within_budget(context):
    first = experiments.run_attack(context, "cigm", 0.1)
    assert first["x_adv"].shape == context.x.shape
    assert np.abs(first["x_adv"] - context.x).max() <= 0.1 + 1e-6
    assert first["train_surrogates"].shape == (1, 12)
    again = experiments.run_attack(context, "cigm", 0.1)
    assert np.array_equal(first["x_adv"], again["x_adv"])
    files = list(context.folder().glob("cigm-*.npz"))
    assert len(files) == 1
    row = experiments.summarise(first)
    assert 0 <= row["successful"] <= 12


def test_extract_then_verify(context, tmp_path):
    fp = experiments.extract(context, eps=0.25, tau=0.0)
    assert np.array_equal(fp.keys, context.models["source"].predict(fp.x, verbose=0).argmax(axis=1))
    fingerprint.save(fp, tmp_path / "fp")
    loaded = fingerprint.load(tmp_path / "fp")
    result = fingerprint.verify(context.models["source"], loaded)
    assert result.retention == 1.0 and result.is_surrogate and result.queries == fp.n

    # The manifest carries what `cae verify` judges with: θ chosen on the testing
    # references (just above the highest of them: alpha 0.01 allows none above it), their
    # retentions as the null, and their weights' hashes (to leave a reference out).
    calibration = loaded.manifest["created_with"]
    refs = calibration["reference_retentions"]
    assert refs == [fingerprint.verify(m, fp).retention for m in context.models["test_references"]]
    if max(refs) < 1:
        assert calibration["threshold"] == (np.floor(max(refs) * fp.n + 1e-9) + 1) / fp.n
        assert calibration["threshold_references"] == len(refs) and calibration["threshold_alpha"] == 0.01
    else:  # no θ keeps a reference that retains everything out: `cae verify` falls back
        assert "threshold" not in calibration
    assert calibration["reference_weights_sha256"] == [models.weights_sha256(m) for m in context.models["test_references"]]


def test_table2_notes_say_when_the_ordering_is_within_noise():
    import types

    preset = presets.get("quick")
    context = types.SimpleNamespace(preset=preset, inputs=np.arange(100))

    def row(method, mean, low, high):
        return {"method": method, "conferrable": mean, "conferrable 95% low": low, "conferrable 95% high": high}

    clear = experiments.table2_notes(context, [row("C-IGM", 0.5, 0.45, 0.55), row("IGM", 0.1, 0.05, 0.15)])
    assert "above every baseline" in clear and "Not clearly" not in clear
    noisy = experiments.table2_notes(context, [row("C-IGM", 0.18, 0.14, 0.22), row("IGM", 0.1, 0.07, 0.13),
                                               row("CW-L2", 0.15, 0.05, 0.3)])
    assert "above every baseline" in noisy and "Not clearly, though, against CW-L2:" in noisy
    below = experiments.table2_notes(context, [row("C-IGM", 0.1, 0.05, 0.15), row("CW-L2", 0.15, 0.05, 0.3)])
    assert "NOT above: CW-L2" in below and "Not clearly" not in below
    alone = experiments.table2_notes(context, [row("C-IGM", 0.5, 0.45, 0.55)])  # under JAX: no ART baselines
    assert "baselines were not run" in alone and "above every baseline" not in alone


def test_summarise_reports_a_bootstrap_interval_around_the_mean(context):
    result = experiments.run_attack(context, "igm", context.preset.epsilon)
    row = experiments.summarise(result)
    low, high = row["conferrable_ci"]
    assert low <= row["conferrable"] <= high
