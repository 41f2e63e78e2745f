"""Adv, Transfer and Confer (eqs. 12-14) and predict_labels."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from keras import layers

from cae import scores


def test_adv_is_hit_matrix():
    preds = np.array([[1, 2, 3], [1, 0, 3]])
    t = np.array([1, 2, 0])
    expected = np.array([[True, True, False], [True, False, False]])
    np.testing.assert_array_equal(scores.adv(preds, t), expected)
    assert scores.adv(preds, t).dtype == bool


def test_transfer_is_mean_over_models():
    preds = np.array([[1, 2, 3, 4], [1, 0, 3, 5], [1, 2, 0, 6]])
    t = np.array([1, 2, 3, 4])
    np.testing.assert_allclose(scores.transfer(preds, t), [1.0, 2 / 3, 2 / 3, 1 / 3])


def test_confer_hand_computed():
    t = np.array([1, 2, 3])
    surrogate = np.array([[1, 2, 3], [1, 0, 3]])  # Transfer(S) = 1, 0.5, 1
    reference = np.array([[0, 2, 3], [0, 2, 0], [0, 1, 0], [0, 2, 0]])  # Transfer(R) = 0, 0.75, 0.25
    np.testing.assert_allclose(scores.confer(surrogate, reference, t), [1.0, 0.5 * 0.25, 0.75])


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5), st.integers(1, 5), st.integers(1, 8), st.integers(2, 4), st.randoms()
)
def test_confer_bounds_and_extremes(n_s, n_r, n, k, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**31))
    t = rng.integers(0, k, n)
    surrogate = rng.integers(0, k, (n_s, n))
    reference = rng.integers(0, k, (n_r, n))
    value = scores.confer(surrogate, reference, t)
    assert value.shape == (n,)
    assert np.all((value >= 0) & (value <= 1))
    perfect = (surrogate == t).all(axis=0) & (reference != t).all(axis=0)
    np.testing.assert_array_equal(value == 1.0, perfect)
    np.testing.assert_array_equal(value == 0.0, ~(surrogate == t).any(axis=0) | (reference == t).all(axis=0))


@given(hnp.arrays(np.int64, st.tuples(st.integers(1, 4), st.integers(0, 6)), elements=st.integers(0, 3)))
def test_transfer_matches_loop(preds):
    t = preds[0].copy()
    expected = [np.mean([preds[m, i] == t[i] for m in range(len(preds))]) for i in range(preds.shape[1])]
    np.testing.assert_allclose(scores.transfer(preds, t), np.array(expected, dtype=float).reshape(-1))


@pytest.mark.parametrize(
    "preds, t, match",
    [
        (np.array([[0.1, 0.9]]), np.array([0, 1]), "dtype"),
        (np.array([1, 2]), np.array([1, 2]), r"\(n_models, n_examples\)"),
        (np.array([[1, 2, 3]]), np.array([1, 2]), "3 examples per model but t has 2"),
        (np.zeros((0, 2), dtype=int), np.array([1, 2]), "no models"),
        (np.array([[1, 2]]), np.array([[1, 2]]), r"\(n_examples,\)"),
        (np.array([[True, False]]), np.array([1, 0]), "dtype"),
    ],
)
def test_validation_errors(preds, t, match):
    with pytest.raises(ValueError, match=match):
        scores.adv(preds, t)


def test_confer_names_bad_argument():
    with pytest.raises(ValueError, match="reference_preds"):
        scores.confer(np.array([[1, 2]]), np.array([[1, 2, 3]]), np.array([1, 2]))


def _tiny(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(6, 3, strides=2)(inputs))
    return keras.Model(inputs, layers.Softmax()(layers.Dense(5, name="logits")(x)))


def test_predict_labels_matches_argmax_and_ignores_batch_size():
    models = [_tiny(0), _tiny(1)]
    x = np.random.default_rng(0).random((7, 32, 32, 3), dtype=np.float32)
    labels = scores.predict_labels(models, x, batch_size=3)
    assert labels.shape == (2, 7) and labels.dtype == np.int64
    for row, model in zip(labels, models):
        np.testing.assert_array_equal(row, np.argmax(model.predict(x, verbose=0), axis=1))
    np.testing.assert_array_equal(scores.predict_labels(models, x, batch_size=256), labels)
    # the output feeds the score functions directly
    assert scores.transfer(labels, labels[0])[0] >= 0.5


def test_predict_labels_errors():
    with pytest.raises(ValueError, match="models is empty"):
        scores.predict_labels([], np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="batch_size"):
        scores.predict_labels([_tiny(0)], np.zeros((1, 32, 32, 3), np.float32), batch_size=0)
