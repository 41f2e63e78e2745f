"""Models the zoo did not train: fingerprinting one (experiments.external_context, `cae extract
--model`) and attacking one (removal.remove_model, `cae remove`)."""

import dataclasses

import numpy as np
import pytest

from cae import cli, data, experiments, fingerprint, models, presets, removal, zoo
from tests.test_removal import CLASSES, PRESET, SOURCE, synthetic

TINY = dataclasses.replace(PRESET, evaluate_on=32)
# For extraction: one model per group, a few short attacks.
OWNER = dataclasses.replace(TINY, name="owner", train_surrogates=("cnn",), train_references=("cnn",),
                            test_surrogates=("cnn",), test_references=("cnn",), attack_inputs=6,
                            attack_iterations=5, epsilon=0.25, tau=0.0)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A source trained elsewhere (another zoo), saved as a .keras file, and the adversary's images."""
    dataset = synthetic()
    elsewhere = zoo.Zoo(tmp_path_factory.mktemp("elsewhere"), evaluate_on=16, datasets={"synthetic": dataset})
    source = elsewhere.get(SOURCE, verbose=False)
    folder = tmp_path_factory.mktemp("files")
    source.save(folder / "source.keras")
    x_adv = dataset.x_train[::2]  # uint8, 96 images
    np.savez(folder / "adversary.npz", x=x_adv)
    np.savez(folder / "test.npz", x=dataset.x_test, y=dataset.y_test)
    return {"source": source, "weights": [w.copy() for w in source.get_weights()], "x": x_adv,
            "dataset": dataset, "folder": folder, "zoo": zoo.Zoo(tmp_path_factory.mktemp("zoo"), evaluate_on=32)}


def _unchanged(world):
    return all(np.array_equal(a, b) for a, b in zip(world["weights"], world["source"].get_weights()))


def test_fine_tuning_an_external_source_is_cached_and_leaves_it_unchanged(world, monkeypatch):
    test = (world["dataset"].x_test, world["dataset"].y_test)
    derived = removal.remove_model("ftll", world["source"], world["x"], preset=TINY, test=test,
                                   store=world["zoo"], verbose=False)
    assert derived is not world["source"] and _unchanged(world)
    changed = [not np.array_equal(a, b) for a, b in zip(world["weights"], derived.get_weights())]
    assert any(changed) and not all(changed)  # FTLL trains the last layer only
    spec = removal.removal_spec("ftll", _external_spec(world, test), TINY)
    metrics = world["zoo"].metrics(spec)
    assert metrics["role"] == "ftll" and metrics["test_examples"] == len(test[1])
    # A rerun with the same source and data loads the cached model: nothing trains.
    monkeypatch.setattr(zoo.Zoo, "train", lambda *a, **k: pytest.fail("retrained a cached model"))
    again = removal.remove_model("ftll", world["source"], world["x"], preset=TINY, test=test,
                                 store=world["zoo"], verbose=False)
    probe = data.to_float(world["dataset"].x_test[:8])
    np.testing.assert_allclose(again.predict(probe, verbose=0), derived.predict(probe, verbose=0), atol=1e-6)


def _external_spec(world, test=None, x=None):
    """The source's spec in the test zoo (the same inputs give the same spec)."""
    x = world["x"] if x is None else x
    return removal.external_source(world["source"], x, world["zoo"], preset=TINY, test=test)


def test_extraction_clones_the_source_architecture_from_scratch(world):
    derived = removal.remove_model("retraining", world["source"], world["x"], preset=TINY, store=world["zoo"],
                                   verbose=False)
    assert _unchanged(world)
    assert [type(layer).__name__ for layer in derived.layers] == [type(layer).__name__ for layer in
                                                                 world["source"].layers]
    assert derived.count_params() == world["source"].count_params()
    spec = removal.removal_spec("retraining", _external_spec(world), TINY)
    assert spec.architecture == zoo.CLONE and spec.labels == "distill"
    metrics = world["zoo"].metrics(spec)
    # Without test data, adversary images labelled by the source stand in: test accuracy
    # is then agreement with the source, on the same images as the fidelity.
    assert metrics["test_accuracy"] == metrics["fidelity_test"] and metrics["architecture"] == zoo.CLONE


def test_the_spec_names_the_source_weights_and_the_data(world):
    spec = _external_spec(world)
    assert spec == _external_spec(world)  # the same inputs give the same spec
    assert spec.option("external_weights") == models.weights_sha256(world["source"])
    assert _external_spec(world, x=world["x"][:64]).key != spec.key
    other = models.build("cnn", CLASSES, seed=1)
    assert removal.external_source(other, world["x"], world["zoo"], preset=TINY).key != spec.key
    assert world["zoo"].metrics(spec)["external"] is True


@pytest.mark.parametrize("change, message", [
    (lambda x: x[..., :1], r"shape .*expected \(N, 32, 32, 3\)"),
    (lambda x: x.astype(np.float32), r"expected \[0, 1\]"),
    (lambda x: x[:0], "holds no images"),
])
def test_bad_adversary_images_are_refused(world, change, message):
    with pytest.raises(ValueError, match=message):
        removal.remove_model("ftll", world["source"], change(world["x"]), preset=TINY, store=world["zoo"])


def test_bad_settings_are_refused(world):
    with pytest.raises(ValueError, match="architecture='resnet21'"):
        removal.remove_model("retraining", world["source"], world["x"], preset=TINY, architecture="resnet21")
    with pytest.raises(ValueError, match="labels"):
        removal.remove_model("ftll", world["source"], world["x"], preset=TINY,
                             test=(world["dataset"].x_test, world["dataset"].y_test + CLASSES))
    with pytest.raises(ValueError, match="unknown removal attack|not a removal attack|choose"):
        removal.remove_model("prune", world["source"], world["x"], preset=TINY)


def test_cli_remove_writes_a_safe_model(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(presets.PRESETS, "tiny", TINY)
    folder, out = world["folder"], tmp_path / "derived.keras"
    status = cli.main(["remove", "ftal", "--model", str(folder / "source.keras"), "--data",
                       str(folder / "adversary.npz"), "--test", str(folder / "test.npz"), "--preset", "tiny",
                       "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0 and "agreement with the source" in printed and "test accuracy" in printed
    derived = models.load(out)  # safe_mode=True
    assert derived.count_params() == world["source"].count_params()


def test_cli_remove_refuses_bad_files(world, tmp_path, capsys):
    np.savez(tmp_path / "wrong.npz", images=world["x"])
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    base = ["remove", "ftll", "--model", str(world["folder"] / "source.keras"), "--preset", "quick"]
    assert cli.main(base + ["--data", str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "d.keras")]) == 2
    assert "needs 'x'" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(tmp_path / "broken.npz"), "--out", str(tmp_path / "d.keras")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(base + ["--data", str(world["folder"] / "adversary.npz"), "--out", str(tmp_path / "d.h5")]) == 2
    assert "must end in .keras" in capsys.readouterr().err


# --------------------------------------------------------------------------- fingerprint your own model
def test_extract_fingerprints_an_external_model_with_models_trained_on_its_data(world):
    dataset = world["dataset"]
    context = experiments.external_context(world["source"], dataset.x_train, dataset.y_train, OWNER,
                                           store=world["zoo"], verbose=False)
    assert _unchanged(world)
    specs = context.specs
    half = len(dataset.x_train) // 2
    assert specs["source"].split[:2] == (half, len(dataset.x_train) - half)
    assert specs["source"].option("external_weights") == models.weights_sha256(world["source"])
    for group in experiments.GROUPS:
        if group.startswith("valid"):  # the preset has no validation models
            assert specs[group] == [] and context.models[group] == []
            continue
        (spec,) = specs[group]
        assert spec.architecture == zoo.CLONE and spec.parent == specs["source"].key
        assert spec.data == ("D1" if group.startswith("train") else "D2")
        assert spec.labels == ("distill" if group.endswith("surrogates") else "ground_truth")
        assert context.models[group][0].count_params() == world["source"].count_params()
    # Attack inputs come from D1 and are classified correctly by the source.
    d1 = zoo.split_of(context.dataset, specs["source"])
    assert set(context.inputs) <= set(d1.tolist())
    fp = experiments.extract(context)
    assert fp.manifest["source_model_hash"] == specs["source"].key
    assert fp.manifest["dataset"] == specs["source"].dataset and fp.manifest["dataset"].startswith("external-")
    assert fingerprint.verify(world["source"], fp).retention == 1.0  # the keys are the source's labels


def test_external_data_must_be_labelled_images(world):
    dataset = world["dataset"]
    with pytest.raises(ValueError, match="labels"):
        experiments.external_context(world["source"], dataset.x_train, dataset.y_train[:-1], OWNER,
                                     store=world["zoo"])
    with pytest.raises(ValueError, match=r"shape .*expected \(N, 32, 32, 3\)"):
        experiments.external_context(world["source"], dataset.x_train[:, :16], dataset.y_train, OWNER,
                                     store=world["zoo"])


def test_cli_extract_with_a_model_of_your_own(world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(presets.PRESETS, "owner", OWNER)
    np.savez(tmp_path / "pool.npz", x=world["dataset"].x_train, y=world["dataset"].y_train)
    status = cli.main(["extract", "--model", str(world["folder"] / "source.keras"), "--data",
                       str(tmp_path / "pool.npz"), "--preset", "owner", "--out", str(tmp_path / "fp")])
    assert status == 0 and "fingerprint:" in capsys.readouterr().out
    fp = fingerprint.load(tmp_path / "fp")
    assert fp.manifest["source_model_hash"] and fp.n >= 1
    # --model without --data, or --data alone, is refused before anything trains.
    assert cli.main(["extract", "--model", str(world["folder"] / "source.keras"), "--out", str(tmp_path / "f2")]) == 2
    assert "--model and --data go together" in capsys.readouterr().err
