"""The model zoo: spec hashing, caching, distillation, and resuming a killed run."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cae import data, zoo


def synthetic(name="synthetic", n_train=256, n_test=64, classes=4, seed=0, colour=False):
    """A learnable toy dataset. By default the class sets the mean brightness of the
    image; with ``colour=True`` (3 classes) it sets which channel is slightly
    brighter than the others, a task small perturbations can flip."""
    rng = np.random.default_rng(seed)
    if colour:
        classes = 3

    def make(n):
        y = rng.integers(0, classes, n)
        if colour:
            base = np.full((n, 3), 110.0, np.float32)
            base[np.arange(n), y] += 40.0
        else:
            base = (y[:, None] * 255 // (classes - 1)).astype(np.float32) * np.ones((1, 3), np.float32)
        x = base[:, None, None, :] * np.ones((1, 32, 32, 3), np.float32)
        x = np.clip(x + rng.normal(0, 30, x.shape), 0, 255).astype(np.uint8)
        return x, y.astype(np.int64)

    return data.Dataset(name, *make(n_train), *make(n_test), tuple(f"c{i}" for i in range(classes)), "0" * 64)


def tiny_spec(**changes):
    spec = zoo.TrainSpec(architecture="cnn", dataset="synthetic", split=(128, 128, 0), epochs=2,
                         batch_size=32, learning_rate=0.01, augment="crop+flip")
    return spec.replace(**changes)


def test_spec_key_is_canonical_and_sensitive():
    a, b = tiny_spec(), tiny_spec()
    assert a.key == b.key and len(a.key) == 16
    assert tiny_spec(seed=1).key != a.key
    assert tiny_spec(epochs=3).key != a.key
    assert tiny_spec(labels="distill", parent="abc").key != tiny_spec(labels="distill", parent="abd").key


def test_spec_rejects_bad_values():
    with pytest.raises(ValueError, match="'D3'"):
        tiny_spec(data="D3")
    with pytest.raises(ValueError, match="parent"):
        tiny_spec(labels="distill")
    with pytest.raises(ValueError, match="'soft'"):
        tiny_spec(labels="soft")


def test_training_sets_declare_the_options_they_read(monkeypatch):
    """A spec may carry the zoo's own options and those its training set declares; the
    zoo does not know the removal attacks' option names."""
    import cae.removal  # noqa: F401  (registers the removal attacks' training sets, as the runner does)

    assert "jagielski_temperature" not in zoo.TRAIN_OPTIONS
    assert zoo.TRAINING_OPTIONS["jagielski"] == ("jagielski_temperature",)
    tiny_spec(labels="jagielski", parent="abc", options=(("jagielski_temperature", 0.5), ("subset_seed", 1)))
    with pytest.raises(ValueError, match="'jagielski_temperature' is unknown for training set 'distill'"):
        tiny_spec(labels="distill", parent="abc", options=(("jagielski_temperature", 0.5),))
    with pytest.raises(ValueError, match="import cae.removal"):
        tiny_spec(labels="not_registered", parent="abc")
    monkeypatch.setattr(zoo, "TRAINING_SETS", dict(zoo.TRAINING_SETS))
    monkeypatch.setattr(zoo, "TRAINING_OPTIONS", dict(zoo.TRAINING_OPTIONS))
    zoo.training_set("scaled", options=("scale",))(lambda store, spec, dataset, indices, parent: None)
    assert tiny_spec(labels="scaled", parent="abc", options=(("scale", 2),)).option("scale") == 2
    with pytest.raises(ValueError, match="subset_seed, which the zoo itself reads"):
        zoo.training_set("clash", options=("subset_seed",))


def test_splits_are_disjoint_and_deterministic():
    dataset = synthetic()
    d1 = zoo.split_of(dataset, tiny_spec(data="D1"))
    d2 = zoo.split_of(dataset, tiny_spec(data="D2"))
    assert len(d1) == len(d2) == 128 and not set(d1) & set(d2)
    assert np.array_equal(d1, zoo.split_of(dataset, tiny_spec(data="D1", seed=5)))
    assert len(zoo.split_of(dataset, tiny_spec(subset=10))) == 10


def test_subset_seed_draws_a_different_sample_of_the_same_split():
    dataset = synthetic()
    d1 = set(zoo.split_of(dataset, tiny_spec(data="D1")))
    first = zoo.split_of(dataset, tiny_spec(subset=40, options=(("subset_seed", 1),)))
    second = zoo.split_of(dataset, tiny_spec(subset=40, options=(("subset_seed", 2),)))
    assert len(first) == len(second) == 40 and set(first) <= d1 and set(second) <= d1
    assert not np.array_equal(first, second)
    assert np.array_equal(first, zoo.split_of(dataset, tiny_spec(subset=40, options=(("subset_seed", 1),))))
    with pytest.raises(ValueError, match="only 128 examples"):
        zoo.split_of(dataset, tiny_spec(subset=500))
    # Without the option, the sample is the one every model of the split shares.
    assert np.array_equal(zoo.split_of(dataset, tiny_spec(subset=40)), zoo.split_of(dataset, tiny_spec(subset=40)))


def test_training_subset_applies_to_training_models_only():
    import dataclasses

    from cae import experiments, presets

    preset = dataclasses.replace(presets.get("smoke"), train_surrogates=("cnn",) * 2, training_subset=500)
    specs = experiments.model_specs(preset)
    training = specs["train_surrogates"] + specs["train_references"]
    assert all(s.subset == 500 and s.data == "D1" for s in training)
    assert len({s.option("subset_seed") for s in training}) == len(training)  # each its own sample
    assert all(s.subset == 0 and not s.options for s in specs["test_surrogates"] + specs["test_references"])
    assert specs["source"].subset == 0
    # A preset without the field keeps every model on its whole split (keys unchanged).
    plain = experiments.model_specs(dataclasses.replace(preset, training_subset=0))
    assert all(s.subset == 0 and not s.options for g in experiments.GROUPS for s in plain[g])


def test_augmentation_keeps_shape_and_moves_pixels():
    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 3), dtype=np.float32)
    out = zoo.augment_batch(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not np.array_equal(out, x)
    # A crop of a reflect-padded image keeps values within the original range.
    assert out.min() >= x.min() and out.max() <= x.max()


def test_train_cache_and_distill(tmp_path):
    store = zoo.Zoo(tmp_path, datasets={"synthetic": synthetic(colour=True)})
    source = tiny_spec(epochs=4)
    model = store.get(source, verbose=False)
    metrics = store.metrics(source)
    assert metrics["test_accuracy"] > 0.6  # the toy task is easy; chance is 1/3
    assert set(os.listdir(store.folder(source))) == {"model.keras", "spec.json", "metrics.json"}
    assert json.loads((store.folder(source) / "spec.json").read_text())["seed"] == 0
    mtime = (store.folder(source) / "model.keras").stat().st_mtime_ns
    again = store.get(source, verbose=False)  # cached: nothing retrained
    assert (store.folder(source) / "model.keras").stat().st_mtime_ns == mtime
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)

    surrogate = tiny_spec(labels="distill", parent=source.key, role="surrogate", data="D2", seed=7)
    store.get(surrogate, verbose=False)
    assert store.metrics(surrogate)["fidelity_test"] > 0.6


def test_parent_predictions_are_the_parents_and_each_image_is_predicted_once(tmp_path, monkeypatch):
    store = zoo.Zoo(tmp_path, datasets={"synthetic": synthetic(colour=True)})
    source = tiny_spec()
    parent = store.get(source, verbose=False)
    dataset = store.dataset("synthetic")
    child = tiny_spec(labels="distill", parent=source.key, role="surrogate", data="D2", seed=7)
    calls = []
    real_predict = zoo.predict
    monkeypatch.setattr(zoo, "predict", lambda model, x, **kw: calls.append(len(x)) or real_predict(model, x, **kw))
    first = store.parent_predictions(child, dataset, np.array([5, 3, 9, 3]), parent)
    again = store.parent_predictions(child, dataset, np.array([9, 5, 11]), parent)
    assert calls == [3, 1]  # 3, 5, 9 once (3 asked twice); then only 11 is new
    expected = real_predict(parent, data.to_float(dataset.x_train[[5, 3, 9, 3, 11]]))
    np.testing.assert_allclose(np.concatenate([first, again[2:]]), expected, atol=1e-6)
    np.testing.assert_array_equal(again[:2], first[[2, 0]])
    test = store.parent_predictions(child, dataset, np.array([0, 1]), parent, pool="test")
    np.testing.assert_allclose(test, real_predict(parent, data.to_float(dataset.x_test[:2])), atol=1e-6)


def test_channel_stats_are_accurate_on_many_pixels():
    x = np.random.default_rng(0).random((3000, 32, 32, 3), dtype=np.float32) * np.float32([1.0, 0.5, 0.25])
    mean, std = zoo.channel_stats(x)
    exact = x.astype(np.float64).reshape(-1, 3)
    np.testing.assert_allclose(mean, exact.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(std, exact.std(axis=0), rtol=1e-6)


def test_fine_tuning_starts_from_parent_and_leaves_it_unchanged(tmp_path):
    store = zoo.Zoo(tmp_path, datasets={"synthetic": synthetic(colour=True)})
    source = tiny_spec()
    parent = store.get(source, verbose=False)
    before = [w.copy() for w in parent.get_weights()]
    child_spec = tiny_spec(init="parent", parent=source.key, labels="distill", role="ftal", epochs=1,
                           learning_rate=1e-4, data="D2")
    child = store.get(child_spec, verbose=False)
    after = store.load(source).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # Small learning rate, one epoch: the child moved, but still agrees with its parent.
    assert any(not np.array_equal(a, b) for a, b in zip(child.get_weights(), before))
    assert store.metrics(child_spec)["fidelity_test"] > 0.9


_KILLABLE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_zoo import synthetic, tiny_spec
    from cae import zoo, paths

    slow = {slow}
    if slow:
        # Slow down the epoch-end writes so the parent can kill the run mid-training.
        original = paths.atomic_write_json
        def delayed(path, obj):
            original(path, obj)
            time.sleep(1.5)
        zoo.paths.atomic_write_json = delayed
    store = zoo.Zoo({root!r}, datasets={{"synthetic": synthetic(colour=True)}})
    store.get(tiny_spec(epochs=4), verbose=False)
    """
)


def _run_script(tmp_path, root, slow):
    script = tmp_path / f"train_{slow}.py"
    script.write_text(_KILLABLE.format(tests=os.path.dirname(__file__), root=str(root), slow=slow))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_killed_run_resumes_from_last_epoch_with_identical_result(tmp_path):
    spec = tiny_spec(epochs=4)
    killed_root, clean_root = tmp_path / "killed", tmp_path / "clean"
    process = _run_script(tmp_path, killed_root, slow=True)
    progress = killed_root / spec.key / "progress.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (progress.exists() and json.loads(progress.read_text())["epoch"] >= 2):
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_root / spec.key / "metrics.json").exists()

    store = zoo.Zoo(killed_root, datasets={"synthetic": synthetic(colour=True)})
    resumed = store.get(spec, verbose=False)
    assert store.metrics(spec)["resumed_from_epoch"] >= 2
    assert not list((killed_root / spec.key).glob("checkpoint-*.keras"))

    clean = zoo.Zoo(clean_root, datasets={"synthetic": synthetic(colour=True)}).get(spec, verbose=False)
    for a, b in zip(resumed.get_weights(), clean.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("labels, options", [("distill", ()), ("source_labels", ()), ("knockoff", ()),
                                             ("jagielski", (("jagielski_temperature", 0.2),)),
                                             ("distill", (("mixup", 1.0),))])
def test_a_child_learns_the_parents_answers_to_the_augmented_images_it_sees(tmp_path, monkeypatch, labels, options):
    """Retraining and the other extraction attacks query the source on the images the
    copy trains on: with augmentation, the labels fed to each epoch are the parent's
    answers to the augmented batch, not to the clean images."""
    import keras

    import cae.removal  # noqa: F401  (registers the removal attacks' training sets)

    store = zoo.Zoo(tmp_path, datasets={"synthetic": synthetic(colour=True)})
    source = tiny_spec()
    parent = store.get(source, verbose=False)
    child = tiny_spec(labels=labels, parent=source.key, role="surrogate", data="D2", seed=7, options=options)
    seen = []
    real_fit = keras.Model.fit

    def fit(self, x, y, **kwargs):
        seen.append((np.array(x), np.array(y)))
        return real_fit(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)
    store.get(child, verbose=False)
    assert len(seen) == child.epochs
    for x, y in seen:
        expected = zoo.RELABEL[labels](zoo.predict(parent, x), child)
        np.testing.assert_allclose(y, expected, atol=1e-5)


def test_mixup_blends_pairs_of_the_batch():
    rng = np.random.default_rng(0)
    x = rng.random((64, 32, 32, 3)).astype(np.float32)
    mixed = zoo.mixup_images(x, np.random.default_rng(1), 1.0)
    assert mixed.shape == x.shape and mixed.dtype == np.float32
    assert mixed.min() >= 0 and mixed.max() <= 1
    assert not np.allclose(mixed, x)
    # Every blend lies between two images of the batch: its distance to the line through them is 0.
    rng2 = np.random.default_rng(1)
    lam = rng2.beta(1.0, 1.0, size=(64, 1, 1, 1)).astype(np.float32)
    partner = x[rng2.permutation(64)]
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * partner, atol=1e-6)
    with pytest.raises(ValueError, match="mixup alpha"):
        zoo.mixup_images(x, rng, 0.0)


def test_one_cycle_schedule_warms_up_then_decays_and_ema_replaces_the_weights(tmp_path):
    import keras

    onecycle = zoo._optimizer(tiny_spec(epochs=5, options=(("schedule", "onecycle"),)), 10, keras)
    schedule = onecycle._learning_rate
    rates = [float(schedule(step)) for step in (0, 5, 10, 25, 49)]
    assert rates[0] < rates[1] < rates[2] and abs(rates[2] - 0.01) < 1e-6 and rates[3] > rates[4] >= 0
    cosine = zoo._optimizer(tiny_spec(epochs=5), 10, keras)._learning_rate
    assert abs(float(cosine(0)) - 0.01) < 1e-6 and float(cosine(25)) < 0.01
    with pytest.raises(ValueError, match="schedule='steps'"):
        zoo._optimizer(tiny_spec(options=(("schedule", "steps"),)), 10, keras)
    assert zoo._optimizer(tiny_spec(options=(("ema", 0.9),)), 10, keras).use_ema

    store = zoo.Zoo(tmp_path, datasets={"synthetic": synthetic()})
    plain = store.get(tiny_spec(), verbose=False)
    averaged = store.get(tiny_spec(options=(("ema", 0.9), ("schedule", "onecycle"))), verbose=False)
    assert any(not np.allclose(a, b) for a, b in zip(plain.get_weights(), averaged.get_weights()))
