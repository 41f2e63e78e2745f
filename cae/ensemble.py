"""The C-IGM ensemble M_E (Section IV-D, eqs. 16-19).

:func:`compose` joins the source model M, its surrogates S and the reference models R
into one Keras model with one shared input and one output per class::

    Surr(x) = mean over {M} ∪ S of softmax                          (eq. 16)
    Ref(x)  = mean over R of softmax                                (eq. 17)
    M_E(x)  = (1 - Ref(x)) ⊙ Surr(x)                                (eq. 18)

and :func:`linear_loss` is the loss that C-IGM minimises, L_E = -M_E(x) · t (eq. 19).

Dropout (Section VI-B, "we set the dropout rate to 0.5")
--------------------------------------------------------
The paper adds dropout with rate 0.5 to the ensemble because C-IGM overfits to the
training models without it (test conferrability 0.243 -> 0.469 on CINIC), but it does
not say where. We put it on every member's penultimate features, just before the
member's classification layer: each member is rebuilt as

    features (the member's own layers, inference mode) -> AlwaysDropout(0.5)
    -> the member's own ``logits`` layer -> softmax

sharing the member's weights. Reasons: (1) it regularises what over-fitting exploits,
the individual decision functions of the members, and makes every gradient step see a
different random sub-network of each member (the same idea as the dropout "ghost
networks" used to make adversarial examples transfer, Li et al., AAAI 2020); (2) it
is where the architectures of the paper use dropout themselves (the VGG classifier),
so the thinned members are still accurate classifiers; (3) dropout on the input would
blank half the pixels, a different image altogether, and dropout on the output
probabilities would zero whole classes of the score that the linear loss reads, so
only some steps would carry any gradient. Inverted dropout keeps the expected features
unchanged, so the dropout-free ensemble (``dropout=0``) is the mean-field version of
the stochastic one.

The dropout must be active while attacking although ART calls models with
``training=False``: :class:`AlwaysDropout` ignores ``training``. Each member's own
layers (BatchNorm, the VGG dropout) always run in inference mode, whatever
``training`` the ensemble is called with (:class:`InferenceMode`). The ensemble is
for attacking, not for training. All custom layers are registered, so ensembles
saved as ``.keras`` load with ``safe_mode=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import keras
from keras import layers, ops

# A backend tensor (TensorFlow's or JAX's) as Keras layers and losses receive it.
Tensor = Any

log = logging.getLogger(__name__)

DEFAULT_DROPOUT = 0.5


# --------------------------------------------------------------------------- layers
def _restart(seed_generator, seed):
    """Restart a :class:`keras.random.SeedGenerator`'s sequence from ``seed``."""
    seed_generator.state.assign(ops.convert_to_tensor([int(seed), 0], dtype=seed_generator.state.dtype))


@keras.saving.register_keras_serializable(package="cae")
class AlwaysDropout(layers.Layer):
    """Inverted dropout that is applied at every call, whatever ``training`` says.

    Keras' ``Dropout`` is the identity unless ``training=True``; attack libraries call
    models with ``training=False``. Each call draws a new mask from the layer's own
    :class:`keras.random.SeedGenerator`, so repeated calls (attack iterations) see
    different masks; :meth:`reseed` restarts the sequence.
    """

    def __init__(self, rate: float, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"AlwaysDropout rate must be in [0, 1), got {rate}.")
        self.rate = rate
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.supports_masking = True

    def call(self, inputs: Tensor) -> Tensor:
        if self.rate == 0.0:
            return inputs
        return keras.random.dropout(inputs, self.rate, seed=self.seed_generator)

    def reseed(self, seed: int) -> None:
        """Restart the mask sequence from ``seed`` (an int)."""
        _restart(self.seed_generator, seed)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="cae")
class RandomShiftFlip(layers.Layer):
    """A random translation by up to ``shift`` pixels (reflect padding, each image its
    own offset) and, with ``flip``, a random horizontal mirror, drawn anew at every
    call whatever ``training`` says: expectation over transformation for C-IGM.

    Both are permutations of pixels, so the gradient of a loss through this layer is the
    gradient at the transformed image, moved back to where each pixel came from. An
    attack that follows it finds perturbations that work at every nearby position and
    in both orientations, the image variations every CIFAR model is trained to ignore
    (the translation-invariant and input-diversity attacks: Dong et al. 2019; Xie et
    al. 2019). ``draws`` > 1 averages the model over that many transformed copies.
    """

    def __init__(self, shift: int = 2, flip: bool = True, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 8:
            raise ValueError(f"shift={shift!r} is not allowed; expected an int number of pixels in 0..8.")
        if not isinstance(flip, bool):
            raise ValueError(f"flip={flip!r} is not allowed; expected True or False.")
        self.shift = shift
        self.flip = flip
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs: Tensor) -> Tensor:
        x = inputs
        n = ops.shape(x)[0]
        if self.shift:
            s = self.shift
            height, width = int(x.shape[1]), int(x.shape[2])
            padded = ops.pad(x, ((0, 0), (s, s), (s, s), (0, 0)), mode="reflect")
            dy = keras.random.randint((n, 1), 0, 2 * s + 1, seed=self.seed_generator)
            dx = keras.random.randint((n, 1), 0, 2 * s + 1, seed=self.seed_generator)
            rows = dy + ops.arange(height)[None, :]                     # (n, H)
            cols = dx + ops.arange(width)[None, :]                      # (n, W)
            rows = ops.broadcast_to(rows[:, :, None, None], (n, height, width + 2 * s, int(x.shape[3])))
            x = ops.take_along_axis(padded, rows, axis=1)
            cols = ops.broadcast_to(cols[:, None, :, None], (n, height, width, int(x.shape[3])))
            x = ops.take_along_axis(x, cols, axis=2)
        if self.flip:
            mirror = keras.random.uniform((n, 1, 1, 1), seed=self.seed_generator) < 0.5
            x = ops.where(mirror, ops.flip(x, axis=2), x)
        return x

    def reseed(self, seed: int) -> None:
        """Restart the draws from ``seed`` (an int)."""
        _restart(self.seed_generator, seed)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "shift": self.shift, "flip": self.flip, "seed": self.seed}


@keras.saving.register_keras_serializable(package="cae")
class RandomResize(layers.Layer):
    """Input diversity (Xie et al. 2019): every image rescaled by its own random factor
    in [1 - pixels/W, 1 + pixels/W] (W its width: zoomed in or out by up to ``pixels``
    pixels across), moved by up to ``pixels`` pixels each way (continuous, bilinear,
    reflect fill) and, with ``flip``, mirrored at random; drawn anew at every call
    whatever ``training`` says. The gradient flows through the bilinear resampling
    (``keras.ops.image.affine_transform``). Where :class:`RandomShiftFlip` moves pixels
    whole, this one also varies the scale, so a step's perturbation must work at nearby
    sizes as well as positions. ``pixels=0`` leaves the images as they are (but the flip).
    """

    def __init__(self, pixels: int = 2, flip: bool = True, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(pixels, bool) or not isinstance(pixels, int) or not 0 <= pixels <= 8:
            raise ValueError(f"pixels={pixels!r} is not allowed; expected an int number of pixels in 0..8.")
        if not isinstance(flip, bool):
            raise ValueError(f"flip={flip!r} is not allowed; expected True or False.")
        self.pixels = pixels
        self.flip = flip
        self.seed = int(seed)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def call(self, inputs: Tensor) -> Tensor:
        x = inputs
        n = ops.shape(x)[0]
        if self.pixels:
            height, width = int(x.shape[1]), int(x.shape[2])
            # Output pixel (col, row) reads input ((col - cx) / s + cx + dx, (row - cy) / s + cy + dy):
            # a zoom by s about the centre, then a move by (dx, dy).
            s = 1.0 + self.pixels / width * keras.random.uniform((n, 1), -1.0, 1.0, seed=self.seed_generator)
            dx = self.pixels * keras.random.uniform((n, 1), -1.0, 1.0, seed=self.seed_generator)
            dy = self.pixels * keras.random.uniform((n, 1), -1.0, 1.0, seed=self.seed_generator)
            cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
            zero = ops.zeros_like(s)
            transform = ops.concatenate([1.0 / s, zero, cx - cx / s + dx, zero, 1.0 / s, cy - cy / s + dy,
                                         zero, zero], axis=1)
            x = ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="reflect")
        if self.flip:
            mirror = keras.random.uniform((n, 1, 1, 1), seed=self.seed_generator) < 0.5
            x = ops.where(mirror, ops.flip(x, axis=2), x)
        return x

    def reseed(self, seed: int) -> None:
        """Restart the draws from ``seed`` (an int)."""
        _restart(self.seed_generator, seed)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "pixels": self.pixels, "flip": self.flip, "seed": self.seed}


@keras.saving.register_keras_serializable(package="cae")
class MeanOverDraws(layers.Layer):
    """Averages (draws * n, K) scores of ``draws`` stacked copies of a batch to (n, K)."""

    def __init__(self, draws: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.draws = int(draws)

    def call(self, inputs: Tensor) -> Tensor:
        k = ops.shape(inputs)[-1]
        return ops.mean(ops.reshape(inputs, (self.draws, -1, k)), axis=0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "draws": self.draws}


@keras.saving.register_keras_serializable(package="cae")
class Tile(layers.Layer):
    """Stacks ``draws`` copies of a batch along the batch axis."""

    def __init__(self, draws: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.draws = int(draws)

    def call(self, inputs: Tensor) -> Tensor:
        return ops.concatenate([inputs] * self.draws, axis=0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "draws": self.draws}


@keras.saving.register_keras_serializable(package="cae")
class InferenceMode(layers.Layer):
    """Runs a wrapped model with ``training=False`` whatever the caller asks for.

    Inside a functional model, ``training`` given to the outer call overrides the one
    written in the graph; this wrapper does not take ``training`` and so keeps the
    wrapped members' BatchNorm on their moving statistics (and their own dropout off).
    """

    def __init__(self, model: keras.Model, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        self.model = model

    def build(self, input_shape: tuple) -> None:
        self.built = True

    def call(self, inputs: Tensor) -> Tensor:
        return self.model(inputs, training=False)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return self.model.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "model": keras.saving.serialize_keras_object(self.model)}


@keras.saving.register_keras_serializable(package="cae")
class ConferrabilityScores(layers.Layer):
    """M_E = (1 - mean(reference probabilities)) ⊙ mean(source and surrogate probabilities).

    Takes the list of member probability vectors, the ``num_surrogates`` of the
    source's group ({M} ∪ S, eq. 16) first, then the references (eq. 17). Without
    references Ref = 0 and M_E = Surr. ``aggregate`` replaces both means by geometric
    means (``"geometric"``) or minima (``"worst"``) of the agreement terms, see
    :func:`compose`.
    """

    def __init__(self, num_surrogates: int, aggregate: str = "mean", **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_surrogates = int(num_surrogates)
        if self.num_surrogates < 1:
            raise ValueError(
                f"num_surrogates must be at least 1 (the source), got {num_surrogates}."
            )
        self.aggregate = _check_aggregate(aggregate)

    def call(self, inputs: Sequence[Tensor]) -> Tensor:
        inputs = list(inputs)
        surrogate = self._combine(ops.stack(inputs[: self.num_surrogates], axis=0))
        if len(inputs) == self.num_surrogates:
            return surrogate
        return self._combine(1.0 - ops.stack(inputs[self.num_surrogates:], axis=0)) * surrogate

    def _combine(self, agreement):
        """One group's (members, n, K) agreement terms combined into (n, K)."""
        if self.aggregate == "mean":  # eqs. 16-17
            return ops.mean(agreement, axis=0)
        if self.aggregate == "geometric":
            return ops.exp(ops.mean(ops.log(ops.maximum(agreement, 1e-12)), axis=0))
        return ops.min(agreement, axis=0)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape[0])

    def get_config(self) -> dict:
        return {**super().get_config(), "num_surrogates": self.num_surrogates, "aggregate": self.aggregate}


AGGREGATES = ("mean", "geometric", "worst")


def _check_aggregate(aggregate):
    if aggregate not in AGGREGATES:
        raise ValueError(
            f"aggregate={aggregate!r} is not allowed; expected one of {', '.join(AGGREGATES)} ('mean' is the "
            "paper's eqs. 16-17)."
        )
    return aggregate


@keras.saving.register_keras_serializable(package="cae")
class LinearLoss(keras.losses.Loss):
    """L_E = -M_E(x) · t (eq. 19) as a Keras loss; ``y_true`` is one-hot t.

    Summed over the batch by default, so the gradient of each example does not depend
    on the batch size (ART's ``TensorFlowV2Classifier`` takes it as ``loss_object``).
    """

    def __init__(self, reduction: str = "sum", name: str = "linear_loss", **kwargs) -> None:
        super().__init__(reduction=reduction, name=name, **kwargs)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        return linear_loss(y_true, y_pred)


def linear_loss(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Per-example L_E = -sum_k M_E(x)_k t_k (eq. 19); ``y_true`` one-hot (N, K)."""
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype)
    return -ops.sum(y_true * y_pred, axis=-1)


# --------------------------------------------------------------------------- building
def _check_member(model, where):
    if not isinstance(model, keras.Model):
        raise TypeError(f"{where} is a {type(model).__name__}; expected a keras.Model.")
    try:
        logits = model.get_layer("logits")
    except ValueError:
        raise ValueError(
            f"{where} ({model.name!r}) has no layer named 'logits'; ensemble members must be "
            "cae models (cae.models.build), which end in Dense 'logits' -> softmax."
        ) from None
    if not isinstance(logits, layers.Dense):
        raise ValueError(f"{where}: layer 'logits' is a {type(logits).__name__}; expected Dense.")
    return logits


def _features_model(model):
    """The member up to its penultimate features (shares its layers)."""
    return keras.Model(model.inputs, model.get_layer("logits").input, name=f"{model.name}_features")


def _head(features, logits, rate, seed, name):
    """features (inference mode) -> AlwaysDropout -> logits -> softmax, one member."""
    inputs = keras.Input(tuple(features.input_shape[1:]), name=f"{name}_input")
    x = InferenceMode(features, name=f"{name}_features")(inputs)
    if rate > 0:
        x = AlwaysDropout(rate, seed=seed, name=f"{name}_dropout")(x)
    x = logits(x)
    outputs = layers.Activation("softmax", name=f"{name}_softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def _assemble(parts, num_surrogates, input_shape, rate, seed, name, aggregate="mean"):
    inputs = keras.Input(input_shape, name="image")
    outputs = [
        _head(features, logits, rate, seed + i, role_name)(inputs)
        for i, (role_name, features, logits) in enumerate(parts)
    ]
    scores = ConferrabilityScores(num_surrogates, aggregate, name="conferrability")(outputs)
    return keras.Model(inputs, scores, name=name)


def _check_rate(dropout):
    try:
        rate = float(dropout)
    except (TypeError, ValueError):
        rate = -1.0
    if not 0.0 <= rate < 1.0:
        raise ValueError(
            f"dropout={dropout!r} is not a rate; expected a float in [0, 1) "
            f"(the paper uses {DEFAULT_DROPOUT}; 0 turns dropout off)."
        )
    return rate


def compose(source: keras.Model, surrogates: Sequence[keras.Model], references: Sequence[keras.Model],
            dropout: float = DEFAULT_DROPOUT, seed: int = 0, name: str = "ensemble", aggregate: str = "mean",
            ) -> keras.Model:
    """Compose(M, S, R): the C-IGM ensemble M_E as one Keras model (eqs. 16-18).

    ``source`` is M, ``surrogates`` and ``references`` lists of models with the cae
    interface (``Dense`` ``"logits"`` then softmax; inputs in [0, 1]). The members'
    weights are shared, not copied, and they are not modified. ``dropout`` is the rate
    of the :class:`AlwaysDropout` on each member's penultimate features (0 turns it
    off: a deterministic ensemble); member ``i`` draws its masks from seed
    ``seed + i``. Returns a model mapping (N, 32, 32, 3) to (N, K) scores M_E(x)
    (not probabilities).

    ``aggregate`` (beyond the paper; ``"mean"`` is eqs. 16-17) is how the members of each
    group are combined, per class: ``"geometric"`` takes the geometric mean of the
    surrogates' probabilities and of the references' 1 - probabilities, so one reference
    that accepts the target costs the score far more than under the mean (every member
    must agree, as in a joint likelihood); ``"worst"`` takes the least agreeing surrogate
    and the most agreeing reference.
    """
    rate = _check_rate(dropout)
    aggregate = _check_aggregate(aggregate)
    surrogates, references = list(surrogates), list(references)
    members = [("source", source)]
    members += [(f"surrogate_{i}", m) for i, m in enumerate(surrogates)]
    members += [(f"reference_{i}", m) for i, m in enumerate(references)]
    shapes, classes = set(), set()
    parts = []
    for role_name, model in members:
        logits = _check_member(model, role_name)
        shapes.add(tuple(model.input_shape[1:]))
        classes.add(int(model.output_shape[-1]))
        parts.append((role_name, _features_model(model), logits))
    if len(shapes) != 1 or len(classes) != 1:
        raise ValueError(
            f"ensemble members disagree: input shapes {sorted(shapes)}, numbers of classes "
            f"{sorted(classes)}; all members must be models of the same task."
        )
    log.info(
        "ensemble: 1 source, %d surrogates, %d references, dropout %.2f",
        len(surrogates), len(references), rate,
    )
    return _assemble(parts, 1 + len(surrogates), shapes.pop(), rate, int(seed), name, aggregate)


# --------------------------------------------------------------------------- inspecting
def _heads(ensemble):
    heads, scores = _heads_and_scores(ensemble)
    return heads, scores.num_surrogates


def _heads_and_scores(ensemble):
    heads = [layer for layer in ensemble.layers if isinstance(layer, keras.Model)]
    scores = [layer for layer in ensemble.layers if isinstance(layer, ConferrabilityScores)]
    if not heads or len(scores) != 1 or not heads[0].name.startswith("source"):
        raise ValueError(
            f"model {ensemble.name!r} is not an ensemble made by cae.ensemble.compose."
        )
    return heads, scores[0]


def aggregate_of(ensemble: keras.Model) -> str:
    """How the ensemble combines its members (see :func:`compose`)."""
    return _heads_and_scores(ensemble)[1].aggregate


def _head_parts(head):
    features = next(layer for layer in head.layers if isinstance(layer, InferenceMode)).model
    logits = next(layer for layer in head.layers if isinstance(layer, layers.Dense))
    return features, logits


def dropout_layers(ensemble: keras.Model) -> list[AlwaysDropout]:
    """The :class:`AlwaysDropout` layers of an ensemble, one per member (none if off)."""
    heads, _ = _heads(ensemble)
    return [layer for head in heads for layer in head.layers if isinstance(layer, AlwaysDropout)]


def dropout_rate(ensemble: keras.Model) -> float:
    """The ensemble's dropout rate (0.0 when built without dropout)."""
    rates = {layer.rate for layer in dropout_layers(ensemble)}
    return rates.pop() if rates else 0.0


def reseed(ensemble: keras.Model, seed: int) -> None:
    """Restart every member's dropout masks: member ``i`` from ``seed + i``."""
    for i, layer in enumerate(dropout_layers(ensemble)):
        layer.reseed(int(seed) + i)


def with_dropout(ensemble: keras.Model, dropout: float, seed: int = 0) -> keras.Model:
    """The same ensemble (shared weights) with another dropout rate; 0 turns it off."""
    rate = _check_rate(dropout)
    heads, num_surrogates = _heads(ensemble)
    parts = [(head.name, *_head_parts(head)) for head in heads]
    return _assemble(
        parts, num_surrogates, tuple(ensemble.input_shape[1:]), rate, int(seed), ensemble.name,
        aggregate_of(ensemble),
    )


def source_model(ensemble: keras.Model) -> keras.Model:
    """The ensemble's source model M (softmax output, no dropout, shared weights)."""
    heads, _ = _heads(ensemble)
    features, logits = _head_parts(heads[0])
    return _head(features, logits, 0.0, 0, "source")


# "shift": whole-pixel translations (RandomShiftFlip); "scale": input diversity, random
# zoom and sub-pixel translation (RandomResize); "+flip" adds a random mirror.
TRANSFORMS = ("none", "shift+flip", "shift", "scale+flip", "scale")


def parse_transform(transform: str) -> tuple[str, int, int]:
    """``"none"``, ``"shift"``, ``"shift+flip"``, ``"scale"`` or ``"scale+flip"``,
    optionally with ``:PIXELS`` (default 2) and ``xDRAWS`` (default 1): e.g.
    ``"shift+flip:2x1"``. Returns (kind, pixels, draws)."""
    text = str(transform)
    kind, _, rest = text.partition(":")
    shift, draws = 2, 1
    try:
        if rest:
            pixels, _, count = rest.partition("x")
            shift, draws = int(pixels), int(count or 1)
    except ValueError:
        kind = None
    if kind not in TRANSFORMS or not 0 <= shift <= 8 or not 1 <= draws <= 16 or (kind == "none" and rest):
        raise ValueError(
            f"transform={transform!r} is not allowed; expected one of {', '.join(TRANSFORMS)}, optionally "
            "followed by ':PIXELS' (0..8, default 2) and 'xDRAWS' (1..16), e.g. 'shift+flip:2x1'."
        )
    return kind, shift, draws


def with_transform(ensemble: keras.Model, transform: str, seed: int = 0) -> keras.Model:
    """``ensemble`` (shared weights) behind :class:`RandomShiftFlip` (``"shift"``) or
    :class:`RandomResize` (``"scale"``): every call sees each image randomly moved (and
    rescaled, mirrored), averaged over ``draws`` copies. ``"none"``
    returns ``ensemble`` itself."""
    kind, shift, draws = parse_transform(transform)
    if kind == "none":
        return ensemble
    inputs = keras.Input(tuple(ensemble.input_shape[1:]), name="image")
    x = Tile(draws, name="tile")(inputs) if draws > 1 else inputs
    layer = RandomResize if kind.startswith("scale") else RandomShiftFlip
    x = layer(shift, flip=kind.endswith("+flip"), seed=seed, name="transform")(x)
    scores = ensemble(x)
    if draws > 1:
        scores = MeanOverDraws(draws, name="mean_over_draws")(scores)
    return keras.Model(inputs, scores, name=f"{ensemble.name}_transformed")


def roles(ensemble: keras.Model) -> dict[str, int]:
    """Numbers of members by role: ``{"source": 1, "surrogate": s, "reference": r}``."""
    heads, num_surrogates = _heads(ensemble)
    return {"source": 1, "surrogate": num_surrogates - 1, "reference": len(heads) - num_surrogates}
