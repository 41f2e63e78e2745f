"""End to end on a toy dataset: zoo -> attacks -> per-example results -> extract -> verify."""

import dataclasses
import types

import numpy as np
import pytest

from cae import attacks, experiments, fingerprint, models, presets, reports, zoo
from test_zoo import synthetic


def toy_context(tmp_path_factory, **changes):
    """A toy preset's prepared context on synthetic data (one model per group), in a
    fresh cache; a generator for module fixtures. ``changes`` override preset fields."""
    root = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("CAE_CACHE_DIR", str(root))
    mp.setenv("CAE_RESULTS_DIR", str(root / "results"))
    settings = dict(
        name="toy", dataset="synthetic", defender_size=192, adversary_size=192,
        source_epochs=3, surrogate_epochs=2, reference_epochs=2, train_surrogates=("cnn",),
        train_references=("cnn",), test_surrogates=("cnn",), test_references=("cnn",), attack_inputs=12,
        attack_iterations=30, batch_size=32, learning_rate=0.01, evaluate_on=0, training_subset=0,
        valid_surrogates=(), valid_references=(), mistakes=0,
    )
    preset = dataclasses.replace(presets.get("quick"), **{**settings, **changes})
    store = zoo.Zoo(root / "zoo", datasets={"synthetic": synthetic(n_train=400, n_test=64, colour=True)})
    yield experiments.prepare(preset, verbose=False, store=store)
    mp.undo()


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    yield from toy_context(tmp_path_factory)


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


def test_the_cpu_preset_keeps_validation_models_out_of_the_ensemble():
    preset = presets.get("cpu")
    specs = experiments.model_specs(preset)
    source = specs["source"]
    for group, labels, count in (("valid_surrogates", "distill", 6), ("valid_references", "ground_truth", 6)):
        assert len(specs[group]) == count and {s.architecture for s in specs[group]} == {"cnn", "rescnn", "allconv"}
        assert all(s.data == "D1" and s.labels == labels and s.subset == 0 for s in specs[group])
    assert all(s.parent == source.key for s in specs["valid_surrogates"])
    for group in experiments.GROUPS:  # every group holds the three families, as the paper's hold six
        assert {"cnn", "rescnn", "allconv"} <= {s.architecture for s in specs[group]}
    keys = [s.key for s in experiments.all_specs(specs)]
    assert len(set(keys)) == len(keys)


def test_architecture_epochs_reach_every_model_of_that_architecture():
    from cae import removal

    preset = dataclasses.replace(presets.get("cpu"), architecture_epochs=(("allconv", 7),))
    specs = experiments.model_specs(preset)
    models_ = list(experiments.all_specs(specs)) + experiments.extra_reference_specs(specs, 6)
    models_ += [s for group in experiments.robust_member_specs(dataclasses.replace(preset, robust_members=3)).values()
                for s in group]
    assert {s.epochs for s in models_ if s.architecture == "allconv"} == {7}
    assert {s.epochs for s in models_ if s.architecture == "rescnn"} == {preset.surrogate_epochs}
    assert specs["source"].epochs == preset.source_epochs
    into = removal.removal_spec("extract_label", specs["source"], preset, architecture="allconv")
    assert into.epochs == 7 and into.architecture == "allconv"
    assert removal.removal_spec("retraining", specs["source"], preset).epochs == preset.surrogate_epochs
    assert removal.removal_spec("extract_label", specs["source"], preset, architecture="allconv", epochs=3).epochs == 3


@pytest.mark.parametrize("bad", [("allconv", 0), ("allconv", 2.5), ("allconv", True), "allconv", ("allconv",)])
def test_a_preset_refuses_bad_architecture_epochs(bad):
    with pytest.raises(ValueError, match=r"architecture_epochs holds .*\(architecture, epochs\)"):
        dataclasses.replace(presets.get("cpu"), architecture_epochs=(bad,))


def test_xla_only_for_the_architectures_it_speeds_up():
    import keras

    expected = True if keras.backend.backend() == "tensorflow" else "auto"
    assert models.jit_compile("allconv") == expected
    assert models.jit_compile("cnn") == models.jit_compile("rescnn") == "auto"


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

    # The fingerprint carries what `cae verify` judges with: which keys each calibration
    # model reproduces (this preset has no validation models, so its testing models;
    # said in the description), their weights' hashes (to leave a reference out) and θ.
    calibration = loaded.calibration
    assert "testing models" in calibration.models
    for group, matches in (("test_surrogates", calibration.surrogate_matches),
                           ("test_references", calibration.reference_matches)):
        expected = [m.predict(fp.x, verbose=0).argmax(axis=1) == fp.keys for m in context.models[group]]
        assert np.array_equal(matches, np.array(expected))
    refs = calibration.reference_scores()
    if max(refs) < 1:
        assert calibration.threshold() == (np.floor(max(refs) * fp.n + 1e-9) + 1) / fp.n
        assert result.threshold == calibration.threshold() and result.threshold_source == "calibration"
    assert calibration.reference_weights_sha256 == tuple(models.weights_sha256(m)
                                                         for m in context.models["test_references"])
    assert loaded.manifest["created_with"]["transform"] == context.preset.transform


def test_natural_mistakes_come_from_outside_d1_and_d2_and_are_misclassified(context):
    import dataclasses

    untrained = models.build("cnn", context.dataset.num_classes, seed=99)  # misclassifies most images
    weak = dataclasses.replace(context, models={**context.models, "source": untrained})
    x_m, indices = experiments.natural_mistakes(weak, 3)
    spec = context.specs["source"]
    d1, d2 = (zoo.split_of(context.dataset, spec.replace(data=d)) for d in ("D1", "D2"))
    assert len(indices) == 3 and not set(indices) & (set(d1) | set(d2))  # no zoo model trained on them
    assert np.all(untrained.predict(x_m, verbose=0).argmax(axis=1) != context.dataset.y_train[indices])
    with pytest.raises(ValueError, match="mistakes=-1 is not allowed"):
        experiments.natural_mistakes(context, -1)
    with pytest.raises(ValueError, match="ask for at most"):
        experiments.natural_mistakes(context, 10_000)
    # Stable behind mirroring: the source makes the same mistake on the mirrored image. A
    # random linear source, whose labels mirroring changes on some images and not others.
    import keras

    source = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                               keras.layers.Dense(context.dataset.num_classes,
                                                  kernel_initializer=keras.initializers.RandomNormal(seed=4))])
    linear = dataclasses.replace(context, models={**context.models, "source": source})
    everything = experiments.natural_mistakes(linear, 10_000, stable=(), at_most=True)[1]
    x_s, stable = experiments.natural_mistakes(linear, 10_000, stable=(("flip", 1.0),), at_most=True)
    labels = source.predict(x_s, verbose=0).argmax(axis=1)
    assert 0 < len(stable) < len(everything) and set(stable) <= set(everything)
    np.testing.assert_array_equal(source.predict(x_s[:, :, ::-1], verbose=0).argmax(axis=1), labels)
    assert np.all(labels != context.dataset.y_train[stable])
    with pytest.raises(ValueError, match=r"\(the same mistake behind flip 1\); ask for at most"):
        experiments.natural_mistakes(linear, len(stable) + 1, stable=(("flip", 1.0),))


def test_extract_with_natural_mistakes_keys_them_by_the_sources_label(context, monkeypatch):
    plain = experiments.extract(context, eps=0.25, tau=0.0)
    x_m = context.dataset.x_test[:3].astype(np.float32) / 255.0
    asked = []

    def natural_mistakes(c, n, stable=None):
        asked.append(stable)
        return x_m[:n], np.arange(n)

    monkeypatch.setattr(experiments, "natural_mistakes", natural_mistakes)
    fp = experiments.extract(context, eps=0.25, tau=0.0, mistakes=3, mistakes_stable=(("flip", 1.0),))
    assert fp.n == plain.n + 3 and fp.manifest["created_with"]["mistakes"] == 3
    assert asked == [(("flip", 1.0),)] and fp.manifest["created_with"]["mistakes_stable"] == [["flip", 1.0]]
    np.testing.assert_allclose(fp.x[-3:], x_m)
    np.testing.assert_array_equal(fp.keys[-3:], context.models["source"].predict(x_m, verbose=0).argmax(axis=1))
    np.testing.assert_array_equal(fp.keys[:-3], plain.keys)
    # The order of evidence: the mistakes first (ranked by the training models), then the C-IGM keys.
    order = fp.manifest["key_order"]
    assert sorted(order[:3]) == [plain.n, plain.n + 1, plain.n + 2] and order[3:] == list(range(plain.n))
    assert fp.calibration.surrogate_matches.shape[1] == fp.n  # the mistakes are calibrated like the rest
    assert fingerprint.verify(context.models["source"], fp).retention == 1.0
    # Without the argument, the preset's count: cae extract's default; 0 is the paper's fingerprint.
    with_preset = dataclasses.replace(context, preset=dataclasses.replace(context.preset, mistakes=2,
                                                                           mistakes_stable=(("blur", 0.5),)))
    assert experiments.extract(with_preset, eps=0.25, tau=0.0).n == plain.n + 2
    assert asked[-1] == (("blur", 0.5),)  # the preset's stability rule
    assert experiments.extract(with_preset, eps=0.25, tau=0.0, mistakes=0).n == plain.n


def test_mistakes_are_ranked_by_how_few_training_references_and_how_many_surrogates_repeat_them(monkeypatch):
    keys = np.array([0, 1, 2, 3, 4])
    answers = {"s1": [0, 1, 9, 3, 9], "s2": [0, 9, 2, 3, 9], "r1": [0, 1, 9, 9, 9], "r2": [9, 1, 9, 9, 4]}
    monkeypatch.setattr(experiments.zoo, "predict", lambda model, x: np.eye(10)[answers[model]])
    context = experiments.Context(None, None, {"train_surrogates": ["s1", "s2"], "train_references": ["r1", "r2"]},
                                  {}, None, None)
    # references repeating: 1, 2, 0, 0, 1; surrogates: 2, 1, 1, 2, 0
    assert experiments.mistake_order(context, np.zeros((5, 1)), keys).tolist() == [3, 2, 0, 4, 1]


def test_quick_calibrates_on_validation_models_it_keeps_out_of_the_ensemble():
    specs = experiments.model_specs(presets.get("quick"))
    assert len(specs["valid_surrogates"]) == len(specs["valid_references"]) == 2
    assert all(s.data == "D1" for s in specs["valid_surrogates"] + specs["valid_references"])
    keys = [s.key for s in experiments.all_specs(specs)]
    assert len(set(keys)) == len(keys)


def test_presets_that_key_natural_mistakes_have_images_for_them():
    """cpu and quick key the source's natural mistakes (chosen on cpu's validation
    models, README "Natural mistakes"); their pool outside D1 and D2 must hold that many
    images to draw them from (a quarter of it at most, as the sources err on about that)."""
    for name in ("cpu", "quick"):
        preset = presets.get(name)
        pool = 50_000 - preset.defender_size - preset.adversary_size
        assert 0 < preset.mistakes <= pool // 4
    assert presets.get("smoke").mistakes == 0 and presets.get("paper").mistakes == 0


def test_extract_calibrates_on_the_validation_models_when_the_preset_has_them(context):
    import dataclasses

    validation = {"valid_surrogates": context.models["test_surrogates"][:1],
                  "valid_references": context.models["test_references"][:1]}
    with_validation = dataclasses.replace(context, models={**context.models, **validation})
    surrogates, references, described = experiments.calibration_models(with_validation)
    assert surrogates == validation["valid_surrogates"] and references == validation["valid_references"]
    assert described.startswith("1 surrogates and 1 references: validation models")
    assert experiments.calibration_models(context)[2].endswith("scores on them are in-sample)")


def test_affordable_transformations_are_measured_once_per_source_and_weights(context, monkeypatch):
    """extract's calibration and the benchmarks each ask for the affordable
    transformations: the second ask of the same source is answered without predicting;
    other weights in the same model object are measured again."""
    import keras

    source = keras.models.clone_model(context.models["source"])
    source.set_weights(context.models["source"].get_weights())
    own = dataclasses.replace(context, models={**context.models, "source": source})
    first = experiments.affordable_transformations(own)
    assert first and all(kind in experiments.preprocessing.SWEEPS for kind, _ in first)
    calls = []
    predict = zoo.predict
    monkeypatch.setattr(zoo, "predict", lambda *a, **k: calls.append(1) or predict(*a, **k))
    assert experiments.affordable_transformations(own) == first and not calls
    assert experiments.affordable_transformations(own, max_drop=0.2) and calls  # another setting: measured
    calls.clear()
    source.set_weights([w * 0 for w in source.get_weights()])  # a constant model: other weights
    experiments.affordable_transformations(own)
    assert calls


def test_table2_reads_the_attack_registry_and_leaves_missing_paper_numbers_blank(context, monkeypatch):
    """An attack the paper did not run gets its Table II row, named from the registry,
    with blank paper cells (not a KeyError)."""
    ours = dataclasses.replace(attacks.REGISTRY["igm"], name="IGM (ours)", paper=())
    monkeypatch.setattr(attacks, "REGISTRY", {"cigm": attacks.REGISTRY["cigm"], "ours": ours})
    rows = reports.table2_rows(context, eps=0.1)
    assert [row["method"] for row in rows] == ["C-IGM", "IGM (ours)"]
    assert (rows[0]["paper transferable"], rows[0]["paper conferrable"]) == (0.492, 0.469)
    assert (rows[1]["paper transferable"], rows[1]["paper conferrable"]) == (None, None)
    assert rows[1]["successful"].endswith("/12")
    assert len(list(context.folder().glob("ours-*.npz"))) == 1  # the runner ran it under its own name


def test_extract_and_table2_take_the_presets_c_igm_variant(context):
    """A preset's transform and gradient blur reach Alg. 2's attack, the fingerprint's
    record of how it was made and Table II, where the paper's C-IGM, the transform and
    the transform with the blur each get a row (paper numbers only on the paper's)."""
    preset = dataclasses.replace(context.preset, transform="shift", smooth=1.0)
    blurred = dataclasses.replace(context, preset=preset)
    fp = experiments.extract(blurred, eps=0.25, tau=0.0)
    assert (fp.manifest["created_with"]["transform"], fp.manifest["created_with"]["smooth"]) == ("shift", 1.0)
    assert reports.cigm_variant(fp) == "C-IGM (transform shift, gradient blur 1 px)"
    run = experiments.run_attack(blurred, "cigm", 0.25, transform="shift", smooth=1.0)  # cached by extract
    plain = experiments.run_attack(blurred, "cigm", 0.25, transform="shift")
    assert np.array_equal(fp.x, run["x_adv"][run["success"]])
    assert not np.array_equal(run["x_adv"], plain["x_adv"])
    older = types.SimpleNamespace(manifest={"created_with": {"transform": "none"}})  # before the blur existed
    assert reports.cigm_variant(older) == "C-IGM (the paper's)"

    rows = reports.table2_rows(blurred, eps=0.25, baselines=False)
    assert [r["method"] for r in rows] == ["C-IGM", "C-IGM (transform: shift)",
                                           "C-IGM (transform: shift, gradient blur: 1 px)"]
    assert rows[0]["paper conferrable"] == 0.469 and rows[2]["paper conferrable"] is None
    assert all(r["successful"].endswith("/12") for r in rows)


def test_table2_notes_say_when_the_ordering_is_within_noise():
    preset = presets.get("quick")
    context = types.SimpleNamespace(preset=preset, inputs=np.arange(100))

    def row(method, mean, low, high):
        return {"method": method, "conferrable": mean, "conferrable 95% low": low, "conferrable 95% high": high}

    clear = reports.table2_notes(context, [row("C-IGM", 0.5, 0.45, 0.55), row("IGM", 0.1, 0.05, 0.15)])
    assert "above every baseline" in clear and "Not clearly" not in clear
    noisy = reports.table2_notes(context, [row("C-IGM", 0.18, 0.14, 0.22), row("IGM", 0.1, 0.07, 0.13),
                                               row("CW-L2", 0.15, 0.05, 0.3)])
    assert "above every baseline" in noisy and "Not clearly, though, against CW-L2:" in noisy
    below = reports.table2_notes(context, [row("C-IGM", 0.1, 0.05, 0.15), row("CW-L2", 0.15, 0.05, 0.3)])
    assert "NOT above: CW-L2" in below and "Not clearly" not in below
    alone = reports.table2_notes(context, [row("C-IGM", 0.5, 0.45, 0.55)])  # under JAX: no ART baselines
    assert "baselines were not run" in alone and "above every baseline" not in alone


def test_summarise_reports_a_bootstrap_interval_around_the_mean(context):
    result = experiments.run_attack(context, "igm", context.preset.epsilon)
    row = experiments.summarise(result)
    low, high = row["conferrable_ci"]
    assert low <= row["conferrable"] <= high


def test_training_epochs_change_only_the_ensembles_models():
    preset = dataclasses.replace(presets.get("cpu"), architecture_epochs=())  # every group its own epochs
    before = experiments.model_specs(preset)
    after = experiments.model_specs(dataclasses.replace(preset, training_epochs=5))
    for group in experiments.GROUPS:
        for a, b in zip(before[group], after[group]):
            changed = group.startswith("train_")
            assert (b.epochs == 5) == changed and (a.key != b.key) == changed
    # A preset's architecture_epochs overrides every group's epochs, training_epochs included.
    longer = experiments.model_specs(dataclasses.replace(preset, training_epochs=5,
                                                         architecture_epochs=(("allconv", 20),)))
    assert {s.architecture: s.epochs for s in longer["train_surrogates"]} == {"cnn": 5, "rescnn": 5, "allconv": 20}
    assert after["source"] == before["source"]
