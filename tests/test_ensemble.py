"""The C-IGM ensemble M_E (eqs. 16-18), its always-on dropout and the loss L_E (eq. 19)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from cae import ensemble as E
from cae import models
from helpers import tiny_batchnorm_model

K = 10


@pytest.fixture(scope="module")
def members():
    return [tiny_batchnorm_model(seed) for seed in range(5)]  # source, 2 surrogates, 2 references


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((6, 32, 32, 3), dtype=np.float32)


def expected_scores(members, x, num_surrogates):
    probs = np.stack([keras.ops.convert_to_numpy(m(x, training=False)) for m in members]).astype(np.float64)
    surrogate = probs[:num_surrogates].mean(axis=0)
    if len(members) == num_surrogates:
        return surrogate
    return (1.0 - probs[num_surrogates:].mean(axis=0)) * surrogate


def compose(members, dropout=0.0, seed=0):
    return E.compose(members[0], members[1:3], members[3:], dropout=dropout, seed=seed)


def test_output_equals_numpy_formula_without_dropout(members, x):
    ensemble = compose(members)
    expected = expected_scores(members, x, 3)
    np.testing.assert_allclose(ensemble(x, training=False), expected, atol=1e-6)
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), expected, atol=1e-6)
    # Members stay in inference mode (BatchNorm moving statistics) even if training=True.
    np.testing.assert_allclose(ensemble(x, training=True), expected, atol=1e-6)
    assert ensemble.output_shape == (None, K)
    assert E.roles(ensemble) == {"source": 1, "surrogate": 2, "reference": 2}


@pytest.mark.parametrize("n_surrogates, n_references", [(0, 1), (2, 0), (0, 0)])
def test_group_sizes(members, x, n_surrogates, n_references):
    chosen = members[: 1 + n_surrogates + n_references]
    ensemble = E.compose(chosen[0], chosen[1:1 + n_surrogates], chosen[1 + n_surrogates:], dropout=0)
    np.testing.assert_allclose(ensemble(x), expected_scores(chosen, x, 1 + n_surrogates), atol=1e-6)


def test_scores_rank_conferrable_class_first():
    # Hand-made case: class 0 is what source and surrogate predict and the reference avoids.
    probs = {"s": [0.6, 0.3, 0.1], "r": [0.0, 0.9, 0.1]}

    def constant(p, seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((32, 32, 3))
        x = layers.GlobalAveragePooling2D()(inputs)
        logits = layers.Dense(3, name="logits", kernel_initializer="zeros",
                              bias_initializer=keras.initializers.Constant(np.log(np.array(p) + 1e-9)))(x)
        return keras.Model(inputs, layers.Softmax()(logits))

    ensemble = E.compose(constant(probs["s"], 0), [constant(probs["s"], 1)], [constant(probs["r"], 2)], dropout=0)
    out = ensemble(np.zeros((1, 32, 32, 3), np.float32)).numpy()[0]
    np.testing.assert_allclose(out, [0.6 * 1.0, 0.3 * 0.1, 0.1 * 0.9], atol=1e-6)


def test_members_are_shared_and_unchanged(members, x):
    before = [m.predict(x, verbose=0) for m in members]
    weights = [[w.copy() for w in m.get_weights()] for m in members]
    ensemble = compose(members, dropout=0.5)
    ensemble(x, training=True)
    for m, b, w in zip(members, before, weights):
        np.testing.assert_array_equal(m.predict(x, verbose=0), b)
        for a, c in zip(m.get_weights(), w):
            np.testing.assert_array_equal(a, c)
        assert m.trainable
    # Shared, not copied: changing a member's logits layer changes the ensemble.
    other = [tiny_batchnorm_model(seed) for seed in range(5)]
    shared = compose(other)
    first = shared(x).numpy()
    dense = other[0].get_layer("logits")
    dense.bias.assign(dense.bias.numpy() + 5.0 * np.eye(K, dtype="float32")[0])
    assert not np.allclose(shared(x).numpy(), first)


def test_dropout_is_active_with_training_false(members, x):
    ensemble = compose(members, dropout=0.5)
    first, second = ensemble(x, training=False).numpy(), ensemble(x, training=False).numpy()
    assert np.abs(first - second).max() > 1e-4
    assert E.dropout_rate(ensemble) == 0.5 and len(E.dropout_layers(ensemble)) == 5


def _gradient(model, x, t):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = E.LinearLoss()(keras.ops.one_hot(t, K), model(x, training=False))
    return tape.gradient(loss, x).numpy()


def test_gradients_differ_with_dropout_and_repeat_without(members, x):
    t = np.arange(len(x)) % K
    on = compose(members, dropout=0.5)
    assert np.abs(_gradient(on, x, t) - _gradient(on, x, t)).max() > 1e-6
    off = compose(members, dropout=0.0)
    np.testing.assert_array_equal(_gradient(off, x, t), _gradient(off, x, t))
    assert E.dropout_layers(off) == [] and E.dropout_rate(off) == 0.0


def test_reseed_repeats_masks(members, x):
    ensemble = compose(members, dropout=0.5, seed=3)
    E.reseed(ensemble, 11)
    a = [ensemble(x).numpy() for _ in range(2)]
    E.reseed(ensemble, 11)
    b = [ensemble(x).numpy() for _ in range(2)]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.abs(a[0] - a[1]).max() > 1e-4


@pytest.mark.parametrize("training", [False, True, None])
def test_always_dropout_layer(training):
    layer = E.AlwaysDropout(0.5, seed=1)
    out = keras.ops.convert_to_numpy(layer(np.ones((100, 100), np.float32), training=training))
    assert set(np.unique(out)) == {0.0, 2.0}  # inverted dropout: survivors scaled by 1 / (1 - rate)
    assert 0.45 < (out == 0).mean() < 0.55
    np.testing.assert_array_equal(E.AlwaysDropout(0.0)(np.ones((3, 4), np.float32)), np.ones((3, 4)))


def test_with_dropout_and_source_model(members, x):
    on = compose(members, dropout=0.5)
    off = E.with_dropout(on, 0.0)
    np.testing.assert_allclose(off(x), expected_scores(members, x, 3), atol=1e-6)
    np.testing.assert_allclose(E.source_model(on)(x), members[0].predict(x, verbose=0), atol=1e-6)
    assert E.dropout_rate(E.with_dropout(off, 0.25)) == 0.25


def test_save_load_keras_safe_mode(members, x, tmp_path):
    ensemble = compose(members, dropout=0.5, seed=7)
    path = tmp_path / "ensemble.keras"
    ensemble.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    E.reseed(ensemble, 5)
    E.reseed(loaded, 5)
    np.testing.assert_allclose(loaded(x), ensemble(x), atol=1e-6)
    np.testing.assert_allclose(E.with_dropout(loaded, 0)(x), expected_scores(members, x, 3), atol=1e-6)
    assert E.roles(loaded) == E.roles(ensemble) and E.dropout_rate(loaded) == 0.5


def test_cae_architectures_compose_and_save(x, tmp_path):
    # Real cae models: all are named "cnn" and share layer names ("logits", "normalize").
    members = [models.build("cnn", K, seed=s) for s in range(3)]
    ensemble = E.compose(members[0], members[1:2], members[2:], dropout=0.5)
    off = E.with_dropout(ensemble, 0.0)
    expected = expected_scores(members, x[:2], 2)
    np.testing.assert_allclose(off(x[:2]), expected, atol=1e-5)
    ensemble.save(tmp_path / "cnn.keras")
    loaded = keras.saving.load_model(tmp_path / "cnn.keras", safe_mode=True)
    np.testing.assert_allclose(E.with_dropout(loaded, 0.0)(x[:2]), expected, atol=1e-5)


def test_linear_loss():
    scores = np.array([[0.1, 0.5, 0.2], [0.3, 0.3, 0.0]], np.float32)
    onehot = np.array([[0, 1, 0], [1, 0, 0]], np.float32)
    np.testing.assert_allclose(E.linear_loss(onehot, scores), [-0.5, -0.3], atol=1e-7)
    np.testing.assert_allclose(E.LinearLoss()(onehot, scores), -0.8, atol=1e-7)


@pytest.mark.parametrize("dropout", [1.0, -0.1, "half", None])
def test_bad_dropout_raises(members, dropout):
    with pytest.raises(ValueError, match="dropout"):
        compose(members, dropout=dropout)


def test_bad_members_raise(members):
    inputs = keras.Input((32, 32, 3))
    no_logits = keras.Model(inputs, layers.Dense(K)(layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="no layer named 'logits'"):
        E.compose(members[0], [no_logits], [])
    with pytest.raises(ValueError, match="numbers of classes"):
        E.compose(members[0], [], [tiny_batchnorm_model(9, num_classes=3)])
    with pytest.raises(TypeError, match="keras.Model"):
        E.compose(members[0], ["model.keras"], [])
    with pytest.raises(ValueError, match="not an ensemble"):
        E.roles(members[0])


@pytest.mark.parametrize("aggregate", ["geometric", "worst"])
def test_aggregates_equal_numpy_formula_and_survive_saving(members, x, aggregate, tmp_path):
    probs = np.stack([keras.ops.convert_to_numpy(m(x, training=False)) for m in members]).astype(np.float64)
    agree, disagree = probs[:3], 1.0 - probs[3:]
    if aggregate == "geometric":
        expected = np.exp(np.log(agree).mean(axis=0)) * np.exp(np.log(disagree).mean(axis=0))
    else:
        expected = agree.min(axis=0) * disagree.min(axis=0)
    ensemble = E.compose(members[0], members[1:3], members[3:], dropout=0.5, aggregate=aggregate)
    off = E.with_dropout(ensemble, 0.0)
    np.testing.assert_allclose(off(x), expected, rtol=1e-5, atol=1e-6)
    assert E.aggregate_of(off) == aggregate
    # Every aggregate rewards surrogates' agreement and references' disagreement no more than the mean.
    assert np.all(keras.ops.convert_to_numpy(off(x)) <= expected_scores(members, x, 3) + 1e-6)
    path = tmp_path / "ensemble.keras"
    ensemble.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(E.with_dropout(loaded, 0.0)(x), expected, rtol=1e-5, atol=1e-6)


def test_bad_aggregate_raises(members):
    with pytest.raises(ValueError, match="aggregate='median'.*mean, geometric, worst"):
        E.compose(members[0], members[1:3], members[3:], aggregate="median")
