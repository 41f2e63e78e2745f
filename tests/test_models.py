"""Architectures: parameter counts, the cae model interface, a few training steps, I/O."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from cae import models  # noqa: E402

# (architecture, literature's parameter count for 10 classes, relative tolerance)
LITERATURE = [
    ("resnet20", 0.27e6, 0.05),
    ("resnet56", 0.85e6, 0.05),
    ("densenet", 0.80e6, 0.05),
    ("vgg16", 15.0e6, 0.05),
    ("vgg19", 20.0e6, 0.05),
    ("mobilenetv2", 2.2e6, 0.05),
]


@pytest.mark.parametrize("architecture,expected,tolerance", LITERATURE)
def test_parameter_counts_match_literature(architecture, expected, tolerance):
    model = models.build(architecture, 10)
    assert abs(model.count_params() - expected) / expected < tolerance


@pytest.mark.parametrize("architecture", list(models.ARCHITECTURES))
def test_trains_a_few_steps_and_keeps_interface(architecture):
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3), dtype=np.float32)
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 8)]
    model = models.build(architecture, 5, seed=1)
    # Eager: two steps do not repay tracing a graph of DenseNet-100.
    model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy", run_eagerly=True)
    before = [w.copy() for w in model.get_weights()]
    losses = [model.train_on_batch(x, y) for _ in range(2)]
    assert np.all(np.isfinite(losses))
    assert any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    probs = model.predict(x, verbose=0)
    assert probs.shape == (8, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    logits = models.logits_model(model).predict(x, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), probs, atol=1e-5)


def test_normalisation_inside_model_uses_given_statistics():
    model = models.build("cnn", 3, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    layer = model.get_layer("normalize")
    x = np.full((1, 32, 32, 3), 0.6, dtype=np.float32)
    out = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 0.8, 0.6], atol=1e-4)


def test_same_seed_same_weights_and_different_seed_differs():
    a = models.build("cnn", 10, seed=3).get_weights()
    b = models.build("cnn", 10, seed=3).get_weights()
    c = models.build("cnn", 10, seed=4).get_weights()
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert any(not np.array_equal(u, v) for u, v in zip(a, c))


def test_save_and_load_in_safe_mode(tmp_path):
    model = models.build("resnet20", 10, seed=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = models.load(path)
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown architecture 'resnet19'"):
        models.build("resnet19", 10)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("cnn", 1)


def test_interface_check_rejects_wrong_shapes():
    inputs = keras.Input((28, 28, 1))
    wrong_input = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match=r"\(None, 32, 32, 3\)"):
        models.check_interface(wrong_input)
    with pytest.raises(ValueError, match="predicts 10 classes but the fingerprint has 100"):
        models.check_interface(models.build("cnn", 10), num_classes=100)
