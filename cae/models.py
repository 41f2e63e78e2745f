"""Architectures for 32x32x3 inputs and K classes, written with Keras 3 layers only.

Every model takes float32 images in [0, 1] of shape (N, 32, 32, 3), normalises them
per channel inside (a ``Normalization`` layer whose statistics are saved with the
model), and ends in a ``Dense`` layer named ``"logits"`` followed by a softmax named
``"probabilities"``. :func:`logits_model` exposes the logits (DeepFool and CW-L2 need
them). Only built-in layers are used, so ``.keras`` files load with ``safe_mode=True``
under any Keras backend.

Architectures (parameter counts for 10 classes, next to the literature's):

===========  ========  =================================================
name         ours      literature
===========  ========  =================================================
resnet20     0.27 M    0.27 M (He et al. 2016, CIFAR ResNet-20)
resnet56     0.86 M    0.85 M (He et al. 2016, CIFAR ResNet-56)
densenet     0.79 M    0.8 M  (Huang et al. 2017, DenseNet-BC L=100 k=12)
vgg16        15.0 M    15.0 M (Simonyan & Zisserman 2015, CIFAR variant with BN)
vgg19        20.3 M    20.0 M (same, 19 layers)
mobilenetv2  2.27 M    2.2 M  (Sandler et al. 2018, CIFAR strides)
cnn          0.10 M    --     small fast network for the ``quick`` preset
rescnn       0.20 M    --     small residual network (``cpu`` preset)
allconv      0.15 M    --     small strided, pooling-free network (``cpu`` preset)
===========  ========  =================================================

(``tests/test_models.py`` measures these counts.)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence

import keras
import numpy as np
from keras import layers

from cae import preprocessing  # noqa: F401  (registers the layers that saved models may hold)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
_WEIGHT_DECAY = 1e-4


def _reg():
    return keras.regularizers.L2(_WEIGHT_DECAY)


def _conv(x, filters, kernel=3, strides=1, name=None):
    return layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", kernel_regularizer=_reg(), name=name,
    )(x)


def _bn_relu(x):
    return layers.ReLU()(layers.BatchNormalization()(x))


# --------------------------------------------------------------------------- bodies
def _cnn(x):
    # Four 3x3 convolutions, each but the last followed by 2x2 max pooling: about 5 M
    # multiply-adds per image (ResNet20: 41 M), sized for the quick preset. The first
    # convolution keeps stride 1: a strided one made C-IGM's examples less conferrable.
    for filters in (16, 32, 64, 128):
        x = _bn_relu(_conv(x, filters))
        if filters < 128:
            x = layers.MaxPooling2D()(x)
    return layers.GlobalAveragePooling2D()(x)


def _rescnn(x):
    # A residual network of the quick scale (about 8 M multiply-adds per image), in the
    # family of Page's ResNet-9: plain convolutions and pooling, one residual block at 8x8.
    x = layers.MaxPooling2D()(_bn_relu(_conv(x, 16)))
    x = layers.MaxPooling2D()(_bn_relu(_conv(x, 32)))
    x = _bn_relu(_conv(x, 64))
    y = _bn_relu(_conv(x, 64))
    y = _bn_relu(_conv(y, 64))
    x = layers.Add()([x, y])
    x = layers.MaxPooling2D()(x)
    x = _bn_relu(_conv(x, 128))
    return layers.GlobalAveragePooling2D()(x)


def _allconv(x):
    # Another family at the quick scale (about 5 M multiply-adds): strided 5x5 and 3x3
    # convolutions instead of pooling (Springenberg et al. 2015), ELU, no BatchNorm.
    for filters, kernel in ((32, 5), (64, 5), (128, 3)):
        x = layers.Conv2D(filters, kernel, strides=2, padding="same", activation="elu",
                          kernel_initializer="he_normal", kernel_regularizer=_reg())(x)
    x = layers.Conv2D(128, 1, activation="elu", kernel_initializer="he_normal", kernel_regularizer=_reg())(x)
    return layers.GlobalAveragePooling2D()(x)


def _resnet(depth):
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}.")
    blocks = (depth - 2) // 6

    def body(x):
        x = _bn_relu(_conv(x, 16))
        for stage, filters in enumerate((16, 32, 64)):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                y = _bn_relu(_conv(x, filters, strides=strides))
                y = layers.BatchNormalization()(_conv(y, filters))
                if strides != 1 or x.shape[-1] != filters:
                    x = layers.BatchNormalization()(_conv(x, filters, kernel=1, strides=strides))
                x = layers.ReLU()(layers.Add()([x, y]))
        return layers.GlobalAveragePooling2D()(x)

    return body


def _densenet(x, depth=100, growth=12, compression=0.5):
    blocks = (depth - 4) // 6  # bottleneck layers per dense block (DenseNet-BC)
    filters = 2 * growth
    x = _conv(x, filters)
    for stage in range(3):
        for _ in range(blocks):
            y = _conv(_bn_relu(x), 4 * growth, kernel=1)
            y = _conv(_bn_relu(y), growth)
            x = layers.Concatenate()([x, y])
            filters += growth
        if stage < 2:
            filters = int(filters * compression)
            x = _conv(_bn_relu(x), filters, kernel=1)
            x = layers.AveragePooling2D(2)(x)
    return layers.GlobalAveragePooling2D()(_bn_relu(x))


_VGG = {
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
         512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def _vgg(depth):
    def body(x):
        for item in _VGG[depth]:
            if item == "M":
                x = layers.MaxPooling2D()(x)
            else:
                x = _bn_relu(_conv(x, item))
        x = layers.Flatten()(x)
        x = layers.Dense(512, kernel_regularizer=_reg())(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        return layers.Dropout(0.5)(x)

    return body


def _mobilenetv2(x):
    # (expansion, filters, repeats, stride); CIFAR variant: stride 1 in the stem and the
    # second stage, so a 32x32 input ends at 4x4.
    settings = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    x = layers.ReLU(6.0)(layers.BatchNormalization()(_conv(x, 32)))
    for expansion, filters, repeats, stride in settings:
        for i in range(repeats):
            strides = stride if i == 0 else 1
            y = x
            if expansion != 1:
                y = layers.ReLU(6.0)(layers.BatchNormalization()(
                    _conv(y, expansion * x.shape[-1], kernel=1)))
            y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(y)
            y = layers.ReLU(6.0)(layers.BatchNormalization()(y))
            y = layers.BatchNormalization()(_conv(y, filters, kernel=1))
            if strides == 1 and x.shape[-1] == filters:
                y = layers.Add()([x, y])
            x = y
    x = layers.ReLU(6.0)(layers.BatchNormalization()(_conv(x, 1280, kernel=1)))
    return layers.GlobalAveragePooling2D()(x)


ARCHITECTURES = {
    "cnn": _cnn,
    "rescnn": _rescnn,
    "allconv": _allconv,
    "resnet20": _resnet(20),
    "resnet56": _resnet(56),
    "densenet": _densenet,
    "vgg16": _vgg(16),
    "vgg19": _vgg(19),
    "mobilenetv2": _mobilenetv2,
}


# Architectures that TensorFlow trains faster under XLA on a CPU than without it; Keras's
# jit_compile="auto" leaves XLA off on every CPU-only machine. Measured on this project's
# 2-core CPU (TF 2.21, Keras 3.15, batch 128, random images; benchmarks/xla.py measures it again):
# allconv 1,171 -> 2,291 images/s; cnn 1,165 -> 804 and rescnn 853 -> 591 (slower, not listed).
XLA_ON_CPU = frozenset({"allconv"})


def jit_compile(architecture: str) -> bool | str:
    """``Model.compile``'s ``jit_compile`` for a model of ``architecture``: XLA for the
    architectures of :data:`XLA_ON_CPU` under TensorFlow, Keras's ``"auto"`` otherwise."""
    return True if architecture in XLA_ON_CPU and keras.backend.backend() == "tensorflow" else "auto"


def build(architecture: str, num_classes: int, mean: Sequence[float] = CIFAR_MEAN,
          std: Sequence[float] = CIFAR_STD, seed: int = 0) -> keras.Model:
    """A fresh model of ``architecture`` for ``num_classes`` classes.

    ``mean`` and ``std`` are the per-channel statistics of the training images in
    [0, 1]; they are stored in the model. ``seed`` fixes the initial weights.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}."
        )
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Normalization(
        mean=list(mean), variance=[s * s for s in std], name="normalize"
    )(inputs)
    x = ARCHITECTURES[architecture](x)
    logits = layers.Dense(int(num_classes), kernel_regularizer=_reg(), name="logits")(x)
    probabilities = layers.Activation("softmax", name="probabilities")(logits)
    return keras.Model(inputs, probabilities, name=architecture)


def logits_model(model: keras.Model) -> keras.Model:
    """The same network with the softmax removed (shares weights with ``model``)."""
    return keras.Model(model.inputs, model.get_layer("logits").output, name=f"{model.name}_logits")


def last_layer(model: keras.Model) -> keras.layers.Layer:
    """The classification layer that FTLL / RTLL retrain."""
    return model.get_layer("logits")


def arrays_sha256(arrays: Iterable[np.ndarray]) -> str:
    """SHA-256 of a sequence of arrays: each one's dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def weights_sha256(model: keras.Model) -> str:
    """SHA-256 of a model's weights (:func:`arrays_sha256`): the same for the same model
    however often it is saved, unlike the file's bytes."""
    return arrays_sha256(model.get_weights())


def load(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` model with ``safe_mode=True``, checking the cae interface."""
    model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    check_interface(model, where=str(path))
    return model


def check_interface(model: keras.Model, where: str = "model", num_classes: int | None = None) -> keras.Model:
    """Raise a clear error unless ``model`` maps (N, 32, 32, 3) to K class scores."""
    shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    if shape is None or tuple(shape[1:]) != (32, 32, 3):
        raise ValueError(
            f"{where} takes inputs of shape {model.input_shape}; cae models take "
            "(None, 32, 32, 3) images in [0, 1]."
        )
    out = model.output_shape
    if isinstance(out, list) or len(out) != 2:
        raise ValueError(f"{where} outputs {out}; expected one (None, num_classes) vector.")
    if num_classes is not None and out[-1] != num_classes:
        raise ValueError(
            f"{where} predicts {out[-1]} classes but the fingerprint has {num_classes}: "
            "it is not a model of the same task."
        )
    return model
