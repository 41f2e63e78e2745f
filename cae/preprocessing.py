"""Input preprocessing: a suspect that transforms every input before classifying it.

Beyond the paper. A thief can leave the stolen weights alone and put a cheap
transformation in front of the model instead, hoping to wash out the small
perturbations fingerprints are made of; "input preprocessing" is one of the removal
attack families of Lukas et al.'s later survey of watermark robustness (SoK, IEEE S&P
2022). Four transformations, each with one strength parameter:

==========  ===============================================================  ==========
kind        what the suspect does to each query                              strength
==========  ===============================================================  ==========
quantize    bit-depth reduction to b bits per channel (feature squeezing,    bits b
            Xu et al. 2018)
blur        Gaussian smoothing, kernel radius ceil(2σ), reflect padding      σ (pixels)
median      k x k median filter, reflect padding (Xu et al.'s other          size k
            squeezer)
noise       additive Gaussian noise, clipped to [0, 1], fresh on every       σ
            query
flip        horizontal mirror image of each query with probability p (the    p
            survey's input flipping; free for models trained with flips)
==========  ===============================================================  ==========

Each is a registered Keras layer written with ``keras.ops`` (any backend), so
:func:`wrap` returns an ordinary model that saves to ``.keras`` and loads with
``safe_mode=True`` (``cae verify`` can judge it). Nothing is trained and the model's
weights are shared, not copied. JPEG compression, the survey's fifth, has no
``keras.ops`` counterpart and is not offered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import layers, ops

# A backend tensor (TensorFlow's or JAX's) as Keras layers receive it.
Tensor = Any

# Strengths swept by reproduce/preprocessing.py, mildest first.
SWEEPS = {
    "quantize": (5, 4, 3, 2),
    "blur": (0.5, 1.0, 1.5),
    "median": (3, 5),
    "noise": (0.02, 0.05, 0.1),
    "flip": (0.5, 1.0),
}


@keras.saving.register_keras_serializable(package="cae")
class Quantize(layers.Layer):
    """Rounds images in [0, 1] to ``bits`` bits per channel (2**bits levels)."""

    def __init__(self, bits: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
            raise ValueError(f"quantize: bits must be an integer from 1 to 8, got {bits!r}.")
        self.bits = int(bits)

    def call(self, x: Tensor) -> Tensor:
        levels = float(2**self.bits - 1)
        return ops.round(ops.clip(x, 0.0, 1.0) * levels) / levels

    def get_config(self) -> dict:
        return {**super().get_config(), "bits": self.bits}


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian of standard deviation ``sigma``, radius ceil(2σ)."""
    radius = max(1, math.ceil(2 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def _reflect_pad(x, radius):
    return ops.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")


@keras.saving.register_keras_serializable(package="cae")
class GaussianBlur(layers.Layer):
    """Gaussian smoothing of each channel with standard deviation ``sigma`` pixels."""

    def __init__(self, sigma: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(sigma, (int, float)) or not 0 < sigma <= 4:
            raise ValueError(f"blur: sigma must be a number in (0, 4] pixels, got {sigma!r}.")
        self.sigma = float(sigma)
        taps = gaussian_kernel(self.sigma)
        self._radius, self._kernel2d = len(taps) // 2, np.outer(taps, taps)[:, :, None, None]

    def call(self, x: Tensor) -> Tensor:
        kernel = np.tile(self._kernel2d, (1, 1, x.shape[-1], 1))  # one copy per channel (depthwise)
        return ops.depthwise_conv(_reflect_pad(x, self._radius), ops.convert_to_tensor(kernel), padding="valid")

    def get_config(self) -> dict:
        return {**super().get_config(), "sigma": self.sigma}


@keras.saving.register_keras_serializable(package="cae")
class MedianFilter(layers.Layer):
    """The median of each pixel's ``size`` x ``size`` neighbourhood, per channel."""

    def __init__(self, size: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(size, (int, np.integer)) or size < 3 or size > 9 or size % 2 == 0:
            raise ValueError(f"median: size must be an odd integer from 3 to 9, got {size!r}.")
        self.size = int(size)

    def call(self, x: Tensor) -> Tensor:
        radius = self.size // 2
        height, width = x.shape[1], x.shape[2]
        padded = _reflect_pad(x, radius)
        shifted = [padded[:, i:i + height, j:j + width, :] for i in range(self.size) for j in range(self.size)]
        return ops.sort(ops.stack(shifted, axis=-1), axis=-1)[..., self.size * self.size // 2]

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="cae")
class InputNoise(layers.Layer):
    """Adds Gaussian noise of standard deviation ``stddev`` to every query (in training
    and inference alike, unlike ``keras.layers.GaussianNoise``), then clips to [0, 1]."""

    def __init__(self, stddev: float, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(stddev, (int, float)) or not 0 < stddev <= 1:
            raise ValueError(f"noise: stddev must be a number in (0, 1], got {stddev!r}.")
        self.stddev, self.seed = float(stddev), int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, x: Tensor) -> Tensor:
        noise = keras.random.normal(ops.shape(x), stddev=self.stddev, seed=self.seed_generator)
        return ops.clip(x + noise, 0.0, 1.0)

    def get_config(self) -> dict:
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


@keras.saving.register_keras_serializable(package="cae")
class RandomMirror(layers.Layer):
    """Mirrors each image left to right with probability ``p`` (1 = every image), in
    training and inference alike (unlike ``keras.layers.RandomFlip``)."""

    def __init__(self, p: float, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(p, (int, float)) or not 0 < p <= 1:
            raise ValueError(f"flip: p must be a probability in (0, 1], got {p!r}.")
        self.p, self.seed = float(p), int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, x: Tensor) -> Tensor:
        mirrored = ops.flip(x, axis=2)
        if self.p >= 1:
            return mirrored
        pick = keras.random.uniform(ops.shape(x)[:1], seed=self.seed_generator) < self.p
        return ops.where(ops.reshape(pick, (-1, 1, 1, 1)), mirrored, x)

    def get_config(self) -> dict:
        return {**super().get_config(), "p": self.p, "seed": self.seed}


TRANSFORMS = {"quantize": Quantize, "blur": GaussianBlur, "median": MedianFilter, "noise": InputNoise,
              "flip": RandomMirror}


def transform(kind: str, strength: float) -> keras.layers.Layer:
    """The layer of ``kind`` (one of :data:`TRANSFORMS`) at ``strength``."""
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown input transformation {kind!r}; choose one of {', '.join(TRANSFORMS)}.")
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"{kind}: strength must be a number, got {strength!r}.") from None
    if kind in ("quantize", "median") and strength.is_integer():
        strength = int(strength)
    return TRANSFORMS[kind](strength, name=f"preprocess_{kind}")


def parse(spec: str, what: str = "transformations") -> tuple[tuple[str, float], ...]:
    """``"flip:1,blur:0.5"`` -> ``(("flip", 1.0), ("blur", 0.5))``; ``"none"`` -> ``()``.
    Every item is checked (:func:`transform`); ``what`` names the option in errors."""
    if spec.strip().lower() == "none":
        return ()
    out = []
    for item in spec.split(","):
        kind, _, strength = item.strip().partition(":")
        try:
            transform(kind, strength)
        except ValueError as error:
            raise ValueError(f"{what} {spec!r}: {item.strip()!r} is not a transformation ({error}); expected "
                             "KIND:STRENGTH items such as flip:1, blur:0.5 or quantize:4, or 'none'.") from None
        out.append((kind, float(strength)))
    return tuple(out)


def name(kind: str, strength: float) -> str:
    """``("flip", 1.0)`` -> ``"flip 1"``: how a transformation is named in calibrations
    and reports."""
    return f"{kind} {float(strength):g}"


def describe(transformations: Sequence[tuple[str, float]]) -> str:
    """``(("flip", 1.0), ("blur", 0.5))`` -> ``"flip 1, blur 0.5"`` (``"none"`` if empty)."""
    return ", ".join(name(kind, strength) for kind, strength in transformations) or "none"


def wrap(model: keras.Model, kind: str, strength: float) -> keras.Model:
    """``model`` behind input transformation ``kind`` at ``strength``: a new model that
    shares ``model``'s weights (nothing is trained or copied)."""
    inputs = keras.Input((32, 32, 3), name="image")
    outputs = model(transform(kind, strength)(inputs))
    return keras.Model(inputs, outputs, name=f"{model.name}_{kind}")
