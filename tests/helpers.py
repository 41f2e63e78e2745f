"""Small models shared by the unit tests (tiny and fast to build; never trained)."""

import keras
import numpy as np
from keras import layers

K = 10  # classes of the tests' models


def tiny_model(num_classes=K, seed=0, input_shape=(32, 32, 3)):
    """A one-convolution softmax classifier (Sequential), weights drawn from ``seed``.
    ``input_shape`` other than (32, 32, 3) makes a model outside cae's interface."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(input_shape),
        layers.Conv2D(4, 4, strides=4),
        layers.Flatten(),
        layers.Dense(num_classes),
        layers.Softmax(),
    ])


def noisy_copy(model, scale, seed):
    """A tiny model (:func:`tiny_model`) with ``model``'s weights plus Gaussian noise of
    standard deviation ``scale``, drawn from ``seed``: a surrogate-like copy."""
    copy = tiny_model(seed=seed)
    rng = np.random.default_rng(seed)
    copy.set_weights([w + rng.normal(0, scale, w.shape).astype(w.dtype) for w in model.get_weights()])
    return copy


def tiny_batchnorm_model(seed, num_classes=K):
    """A cae-interface model (``logits`` and ``probabilities`` layers) with BatchNorm whose
    moving statistics are not the identity, drawn from ``seed``: the ensemble's and the
    attacks' tests check that inference mode uses them."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(4, 3, strides=2)(inputs)
    bn = layers.BatchNormalization()
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(bn(x)))
    logits = layers.Dense(num_classes, name="logits")(x)
    model = keras.Model(inputs, layers.Activation("softmax", name="probabilities")(logits))
    rng = np.random.default_rng(seed)
    bn.moving_mean.assign(rng.normal(size=4).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.2, 2.0, size=4).astype("float32"))
    return model
