"""Removal attacks beside the paper's (issue 19): fine-pruning, transfer learning,
extraction into other architectures, adversarial extraction. Tiny models, synthetic data."""

import numpy as np
import pytest

from cae import data, experiments, fingerprint, models, presets, removal, zoo
from test_removal import CLASSES, PRESET, SOURCE, record_perturbations, synthetic, world  # noqa: F401 (world: fixture)

NEW_ATTACKS = ("prune20", "prune50", "prune80", "transfer", "extract_prob", "extract_label", "adv_extract")
# Keys of the paper's attacks on the toy source before these attacks were added: existing
# caches must stay valid.
PAPER_KEYS = {
    "retraining": "7bcc83b83a6fee6a", "jagielski": "61865259428981e9", "papernot": "810868327632b7aa",
    "knockoff": "f301a96589abf03c", "ftll": "6da2a924d501cdf5", "ftal": "a3d21ad1fab1b1c5",
    "rtll": "ad94178bb74244b2", "rtal": "9f98271269c89897", "adv_fgm": "ab44ff2127183994",
    "adv_pgd": "79694323c5497282", "adv_igm": "68ca00d04154ad6d",
    "ensemble": ["6a2bd4876d1afa78", "e4530ba598864bf9", "89f821244c0e6eb3"],
}
TASK = (0, 1, 1, 2)  # the toy dataset's 4 classes into 3




def _assert_source_unchanged(world):
    for before, now, loaded in zip(world["weights"], world["source"].get_weights(),
                                   world["store"].load(SOURCE).get_weights()):
        assert np.array_equal(before, now) and np.array_equal(before, loaded)


def _probe(n=6, seed=1):
    return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


# --------------------------------------------------------------------------- specs
def test_registered_with_their_families_and_paper_keys_unchanged():
    assert set(NEW_ATTACKS) <= set(removal.REMOVAL_ATTACKS)
    assert not set(NEW_ATTACKS) & set(removal.PAPER_ATTACKS) and tuple(PAPER_KEYS) == removal.PAPER_ATTACKS
    families = {name: removal.REMOVAL_ATTACKS[name].family for name in NEW_ATTACKS}
    assert families["prune50"] == "pruning" and families["transfer"] == "transfer learning"
    assert zoo.SPEC_VERSION == 2
    for name, key in PAPER_KEYS.items():
        spec = removal.removal_spec(name, SOURCE, PRESET)
        assert ([s.key for s in spec] if isinstance(spec, list) else spec.key) == key, name
    rows = {row["Attack"]: row for row in removal.rows()}
    assert rows["Fine-pruning 80%"]["Settings"] == "prune_fraction=0.8"


def test_new_specs_are_distinct_and_name_their_parent():
    specs = {name: removal.removal_spec(name, SOURCE, PRESET) for name in NEW_ATTACKS}
    keys = [s.key for s in specs.values()] + [k for v in PAPER_KEYS.values() for k in np.atleast_1d(v)]
    assert len(set(keys)) == len(keys)
    for name, spec in specs.items():
        assert spec.parent == SOURCE.key and spec.data == "D2" and spec.seed >= removal.REMOVAL_SEED, name
    assert [specs[f"prune{p}"].option("prune_fraction") for p in (20, 50, 80)] == [0.2, 0.5, 0.8]
    for name in ("prune20", "transfer"):
        assert specs[name].init == "parent" and specs[name].subset == PRESET.finetune_examples
    assert specs["transfer"].option("transfer_mapping") == removal.TRANSFER_MAPPING
    assert specs["adv_extract"].init == "scratch" and specs["adv_extract"].architecture == SOURCE.architecture
    assert specs["adv_extract"].option("adversarial_fraction") == 0.5
    # The toy preset lists no other architecture: the first other cae architecture.
    assert specs["extract_prob"].architecture == specs["extract_label"].architecture == "rescnn"
    assert specs["extract_prob"].labels == "distill" and specs["extract_label"].labels == "source_labels"


def test_extraction_architectures_are_the_presets_others():
    cpu = presets.get("cpu")
    source = experiments.source_spec(cpu)
    assert removal.extraction_architectures(source, cpu) == ("rescnn", "allconv")
    assert removal.extraction_architectures(source, presets.get("quick")) == ()
    assert removal.removal_spec("extract_label", source, cpu).architecture == "rescnn"
    assert removal.removal_spec("extract_prob", source, cpu, architecture="allconv").architecture == "allconv"
    assert removal.removal_spec("adv_extract", source, cpu, architecture="allconv").architecture == "allconv"


@pytest.mark.parametrize("name, settings, message", [
    ("extract_prob", {"architecture": "cnn"}, "architecture='cnn' is the source's own"),
    ("extract_label", {"architecture": "clone"}, "architecture='clone'"),
    ("extract_label", {"architecture": "nope"}, "architecture='nope'"),
    ("adv_extract", {"architecture": "nope"}, "architecture='nope'"),
    ("ftal", {"architecture": "rescnn"}, "'architecture'"),
    ("prune50", {"prune_fraction": 1.0}, r"prune_fraction=1.0 .*\(0, 1\)"),
    ("adv_extract", {"adversarial_fraction": 0}, "adversarial_fraction=0"),
    ("transfer", {"transfer_mapping": (0, 2, 2, 2)}, "does not use every task class"),
    ("transfer", {"transfer_mapping": "abc"}, "transfer_mapping='abc'"),
])
def test_bad_settings_are_refused_with_the_fix(name, settings, message):
    with pytest.raises(ValueError, match=message):
        removal.removal_spec(name, SOURCE, PRESET, **settings)


# --------------------------------------------------------------------------- pruning
def test_prune_masks_zero_the_smallest_kernel_weights_globally(world):
    source = world["source"]
    masks = removal.prune_masks(source, 0.5)
    kernels = [np.asarray(layer.kernel) for layer in removal._kernel_layers(source)]
    assert [m.shape for m in masks] == [k.shape for k in kernels] and len(kernels) == 5  # 4 conv + logits
    pruned = np.concatenate([np.abs(k[m == 0]) for k, m in zip(kernels, masks)])
    kept = np.concatenate([np.abs(k[m == 1]) for k, m in zip(kernels, masks)])
    total = sum(k.size for k in kernels)
    assert len(pruned) == int(np.ceil(0.5 * total)) and pruned.max() <= kept.min()
    assert len({float((m == 0).mean()) for m in masks}) > 1  # global, not per layer
    _assert_source_unchanged(world)


@pytest.mark.parametrize("name, fraction", [("prune20", 0.2), ("prune80", 0.8)])
def test_pruned_model_keeps_its_mask_through_fine_tuning(world, name, fraction):
    store, source = world["store"], world["source"]
    model = removal.remove(name, SOURCE, PRESET, store, verbose=False)
    assert removal.pruned_fraction(model) >= fraction and removal.pruned_fraction(source) < 0.01
    masks = removal.prune_masks(source, fraction)
    tuned = [np.asarray(layer.kernel) for layer in removal._kernel_layers(model)]
    original = [np.asarray(layer.kernel) for layer in removal._kernel_layers(source)]
    assert all(np.all(k[m == 0] == 0) for k, m in zip(tuned, masks))  # the source's mask, kept
    assert any(not np.allclose(k[m == 1], o[m == 1]) for k, o, m in zip(tuned, original, masks))  # fine-tuned
    assert store.complete(removal.removal_spec(name, SOURCE, PRESET))
    _assert_source_unchanged(world)


def test_pruning_is_deterministic_given_the_seed(world, tmp_path):
    import shutil

    weights = []
    for run in ("a", "b"):
        store = zoo.Zoo(tmp_path / run, evaluate_on=16, datasets={"synthetic": world["dataset"]})
        shutil.copytree(world["store"].folder(SOURCE), store.folder(SOURCE))
        weights.append(removal.remove("prune50", SOURCE, PRESET, store, verbose=False).get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights))


# --------------------------------------------------------------------------- transfer
def test_map_fingerprint_maps_every_key_and_drops_the_calibration():
    manifest = dict(num_classes=CLASSES, dataset="synthetic", epsilon=0.1, tau=1.0, source_model_hash=None,
                    attack="test", cae_version="0", created_with={})
    fp = fingerprint.Fingerprint(x=_probe(4), keys=np.array([3, 0, 1, 2]), targets=np.array([0, 1, 2, 3]),
                                 manifest=manifest)
    mapped = removal.map_fingerprint(fp, TASK)
    np.testing.assert_array_equal(mapped.keys, [2, 0, 1, 1])
    np.testing.assert_array_equal(mapped.targets, [0, 1, 1, 2])
    np.testing.assert_array_equal(mapped.x, fp.x)
    assert mapped.num_classes == 3 and mapped.calibration is None and mapped.manifest["mapped_from"] == fp.sha256
    with pytest.raises(ValueError, match="transfer_mapping has 10 entries but the source has 4"):
        removal.map_fingerprint(fp, removal.TRANSFER_MAPPING)
    assert removal.task_mapping("transfer").tolist() == list(removal.TRANSFER_MAPPING)
    assert removal.task_mapping("ftal") is None


def test_transfer_model_answers_in_the_tasks_label_space(world):
    store, source = world["store"], world["source"]
    model = removal.remove("transfer", SOURCE, PRESET, store, verbose=False, transfer_mapping=TASK)
    spec = removal.removal_spec("transfer", SOURCE, PRESET, transfer_mapping=TASK)
    models.check_interface(model, num_classes=3)
    assert store.metrics(spec)["task_classes"] == 3 and removal.task_mapping(spec).tolist() == list(TASK)
    feature_layers = {layer.name for layer in source.layers} - {"logits", "probabilities"}
    assert feature_layers < {layer.name for layer in model.layers}
    x = _probe(8)
    fp = fingerprint.create(source, x, attack="test", epsilon=0.1, tau=1.0, dataset="synthetic")
    with pytest.raises(ValueError, match="not a model of the same task"):
        fingerprint.verify(model, fp)
    result = removal.verify_transfer(model, fp, TASK)
    expected = np.sum(model.predict(x, verbose=0).argmax(axis=1) == np.asarray(TASK)[fp.keys])
    assert result.matches == expected and result.retention == expected / len(x)
    _assert_source_unchanged(world)


def test_transfer_needs_a_mapping_of_the_sources_classes(world):
    with pytest.raises(ValueError, match="transfer_mapping has 10 entries"):
        removal.remove("transfer", SOURCE, PRESET, world["store"], verbose=False)  # CIFAR-10's, 4 classes


def _dense_model(classes, seed):
    """An untrained GAP + Dense model (no training needed to be measured)."""
    import keras

    inputs = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(classes, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    rng = np.random.default_rng(seed)
    dense.set_weights([rng.normal(0, 5, (3, classes)).astype(np.float32), rng.normal(0, 1, classes).astype(np.float32)])
    return model


def test_removal_rows_measure_a_transfer_model_through_the_mapping(tmp_path):
    import dataclasses

    from cae import reports

    dataset = synthetic(n_train=64, n_test=32)
    dataset = dataclasses.replace(dataset, y_train=dataset.y_train * 3 % 10, y_test=dataset.y_test * 3 % 10,
                                  class_names=tuple(f"c{i}" for i in range(10)))
    preset = dataclasses.replace(PRESET, defender_size=32, adversary_size=32, evaluate_on=0, finetune_examples=16)
    specs = experiments.model_specs(preset)
    source, transferred = _dense_model(10, 0), _dense_model(5, 1)
    context = experiments.Context(preset, dataset, {"source": source}, specs, zoo.Zoo(tmp_path), np.arange(8))
    fp = fingerprint.create(source, _probe(12), attack="test", epsilon=0.1, tau=1.0, dataset="synthetic")
    rows = reports.removal_rows(context, fp, attacks=("transfer",), models={"transfer": transferred})
    row, mapping = rows[1], np.asarray(removal.TRANSFER_MAPPING)
    assert row["attack"] == "Transfer learning" and row["verified"].startswith("–")
    assert row["retention"] == removal.verify_transfer(transferred, fp).retention
    x_test = data.to_float(dataset.x_test)
    assert row["test_accuracy"] == pytest.approx(np.mean(transferred.predict(x_test, verbose=0).argmax(1)
                                                         == mapping[dataset.y_test]))


# --------------------------------------------------------------------------- extraction
def test_extraction_trains_another_architecture(world):
    store = world["store"]
    model = removal.remove("extract_label", SOURCE, PRESET, store, verbose=False, architecture="allconv")
    spec = removal.removal_spec("extract_label", SOURCE, PRESET, architecture="allconv")
    assert model.name == "allconv" and store.metrics(spec)["architecture"] == "allconv"
    assert {"logits", "probabilities"} <= {layer.name for layer in model.layers}
    assert len(model.get_weights()) != len(world["source"].get_weights())
    _assert_source_unchanged(world)


def test_remove_model_passes_the_architecture_to_extraction(world, tmp_path):
    store = zoo.Zoo(tmp_path, evaluate_on=16)
    x = world["dataset"].x_train[:64]
    model = removal.remove_model("extract_prob", world["source"], x, preset=PRESET, architecture="allconv",
                                 store=store, verbose=False)
    assert model.name == "allconv"
    _assert_source_unchanged(world)


# --------------------------------------------------------------------------- adversarial extraction
@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_adversarial_extraction_trains_on_adversarial_halves_and_is_cached(world, monkeypatch, method):
    store, source = world["store"], world["source"]
    calls = record_perturbations(monkeypatch)
    settings = {"adversarial_attack": method} if method != "pgd" else {}  # PGD is the default
    model = removal.remove("adv_extract", SOURCE, PRESET, store, verbose=False, **settings)
    spec = removal.removal_spec("adv_extract", SOURCE, PRESET, **settings)
    batches = int(np.ceil(PRESET.adversary_size / PRESET.batch_size)) * spec.epochs
    assert len(calls) == batches
    for clean, labels, adversarial in calls:
        assert len(clean) == PRESET.batch_size // 2  # half of each batch
        distance = np.abs(adversarial - clean).reshape(len(clean), -1).max(axis=1)
        assert np.all(distance <= 0.03 + 1e-6) and np.all(distance > 0)
        np.testing.assert_array_equal(labels, zoo.predict(source, clean).argmax(axis=1))  # the source's labels
    assert store.complete(spec) and model.name == SOURCE.architecture
    calls.clear()
    again = removal.remove("adv_extract", SOURCE, PRESET, store, verbose=False, **settings)
    assert not calls  # loaded, not trained
    np.testing.assert_array_equal(again.predict(_probe(), verbose=0), model.predict(_probe(), verbose=0))
    _assert_source_unchanged(world)


def test_cli_remove_transfer_reports_in_the_tasks_labels(tmp_path, monkeypatch, capsys):
    from cae import cli

    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(presets.PRESETS, "tiny", PRESET)
    source = models.build("cnn", 10, seed=3)  # a 10-class source in CIFAR-10's class order (untrained)
    source.save(tmp_path / "source.keras")
    np.savez(tmp_path / "adversary.npz", x=synthetic().x_train[:64])
    out = tmp_path / "transfer.keras"
    status = cli.main(["remove", "transfer", "--model", str(tmp_path / "source.keras"), "--data",
                       str(tmp_path / "adversary.npz"), "--preset", "tiny", "--out", str(out)])
    assert status == 0 and "labels mapped to the task's 5 classes" in capsys.readouterr().out
    models.check_interface(models.load(out), num_classes=len(removal.TRANSFER_CLASSES))
    # An owner's own coarser labelling: animals against vehicles.
    vehicles = (0, 1, 8, 9)
    mapping = ",".join("0" if c in vehicles else "1" for c in range(10))
    status = cli.main(["remove", "transfer", "--model", str(tmp_path / "source.keras"), "--data",
                       str(tmp_path / "adversary.npz"), "--preset", "tiny", "--mapping", mapping,
                       "--out", str(tmp_path / "two.keras")])
    assert status == 0 and "labels mapped to the task's 2 classes" in capsys.readouterr().out
    models.check_interface(models.load(tmp_path / "two.keras"), num_classes=2)
    for bad, message in (("0,1,x", "one whole number per source class"), ("0,1,0", "has 3 entries"),
                         ("0,0,0,0,0,0,0,0,0,0", "does not use every task class")):
        assert cli.main(["remove", "transfer", "--model", str(tmp_path / "source.keras"), "--data",
                         str(tmp_path / "adversary.npz"), "--preset", "tiny", "--mapping", bad,
                         "--out", str(tmp_path / "bad.keras")]) == 2
        assert message in capsys.readouterr().err
    assert cli.main(["remove", "ftll", "--model", str(tmp_path / "source.keras"), "--data",
                     str(tmp_path / "adversary.npz"), "--preset", "tiny", "--mapping", mapping,
                     "--out", str(tmp_path / "bad.keras")]) == 2
    assert "--mapping is for the transfer attack" in capsys.readouterr().err
    assert not (tmp_path / "bad.keras").exists()
