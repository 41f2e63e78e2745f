"""Peer fingerprinting methods, behind one interface, for the benchmark (issue #19).

Every method is a class with two verbs:

* ``extract(source, x_pool, y_pool=None, *, surrogates=(), references=(), seed=0)``
  returns a :class:`PeerFingerprint`: the inputs ``x`` (float32 (n, H, W, C) in [0, 1]),
  the source's labels on them (``keys``) and whatever the method's score needs
  (SAC: the source's sample-correlation matrix). ``x_pool`` is the defender's pool of
  natural images to start from (``y_pool`` its labels, where the method needs them);
  ``surrogates`` / ``references`` are the defender's own models, for the methods that
  use them (C-IGM's ensemble, SAC-w's common mistakes). Methods ignore what they do
  not use, so one harness can call them all alike.
* ``score(suspect, fingerprint, mapping=None) -> float``: larger means "more likely
  derived from the source". A method with ``needs_probabilities = False`` asks the
  suspect for labels only (anything :func:`cae.fingerprint.predict_labels` accepts: a
  Keras model, a remote client, a callable); one with ``True`` needs the suspect's class
  scores (a Keras model or a callable returning (n, K') scores). ``mapping``: for a
  suspect of another label set (transfer learning), the suspect's class of each of the
  source's classes (int (K,)); label-only methods compare the suspect's labels with the
  mapped keys, SAC compares as is (its n × n matrix does not depend on the classes).

Hyperparameters are keyword-only constructor arguments, listed in ``attack_params``
and checked by ``_check_params`` (a ``ValueError`` names the argument, the value and
what is allowed). :data:`PEERS` maps each method's name to its class.

Methods
-------
``ipguard``
    IPGuard (Cao, Jia & Gong, AsiaCCS 2021): data points near the source's
    classification boundary. Each starts from a pool image, with i the source's label of
    it and j another class drawn at random (the paper picks the pair; this choice keeps
    the points near natural data), and minimises, with Adam on the pixels (clipped to
    [0, 1]), ``ReLU(g_i(x) - g_j(x) + k) + ReLU(max_{t != i, j} g_t(x) - g_i(x))`` over
    the source's logits g: at zero loss class j leads by at least the margin k and i is
    the runner-up, so x sits just past the i / j boundary. An example stops moving once
    its loss is zero; those that never reach it are dropped. Without a layer named
    ``logits`` the log-probabilities stand in for the logits (the loss only uses their
    differences, which are the same). Score: the fraction of keys the suspect matches
    (label-only).
``sac_w`` / ``sac_m``
    SAC (Guan, Liang & He, "Are You Stealing My Model? Sample Correlation for
    Fingerprinting Deep Neural Networks", NeurIPS 2022). A model's fingerprint is the
    correlation of its outputs O (n, K) between samples, ``C = (1 - cos(O_a, O_b)) / 2``
    for every pair; the distance between two models is the mean absolute difference of
    their matrices over all n × n entries, in [0, 1]. Score: minus the distance to the
    source's matrix (the source itself scores 0, the maximum). Needs probabilities (the
    suspect's softmax outputs are O). ``sac_w`` takes natural images the source
    misclassifies and, when ``surrogates`` are given, that every one of the defender's
    surrogates misclassifies too (the mistakes a stolen model tends to share; without
    surrogates, the source's mistakes alone). ``sac_m`` needs no labels and no models:
    CutMix-augmented pool images, a square patch of a fifth of the image side pasted
    from another pool image at the same place, centred in a corner region (outside the
    middle two thirds along both axes), one box for the whole set, as in the authors'
    release.
``mistakes``
    Natural images the source misclassifies, keyed by its wrong label; score: the
    fraction of keys the suspect matches (label-only). A derived model tends to copy
    its source's mistakes.
``cigm``
    This package's fingerprint (Lukas, Zhang & Kerschbaum, ICLR 2021): C-IGM on the
    ensemble of the source, ``surrogates`` and ``references`` (:class:`cae.attacks.CIGM`),
    kept by Algorithm 2's filter (:func:`cae.fingerprint.extract`); score: the
    retention of :func:`cae.fingerprint.verify`. :meth:`CIGMPeer.wrap` turns a
    :class:`cae.fingerprint.Fingerprint` made elsewhere (``cae extract``) into a peer
    fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import numbers
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cae import attacks, checks, data, ensemble, fingerprint as fingerprint_lib, models, paths, scores

if TYPE_CHECKING:
    import keras

# What a method scores: a Keras model, or a callable returning class probabilities (or,
# for the label-only methods, labels; cae.fingerprint.predict_labels lists the forms).
Suspect = Any

log = logging.getLogger(__name__)

__all__ = ["PEERS", "PeerFingerprint", "Peer", "IPGuard", "SACW", "SACM", "Mistakes", "CIGMPeer", "get",
           "correlation_matrix", "correlation_distance", "cutmix", "ipguard_loss", "probabilities"]


# --------------------------------------------------------------------------- the artefact
@dataclasses.dataclass(frozen=True, eq=False)
class PeerFingerprint:
    """What a peer method extracts from the source.

    ``method``: the :data:`PEERS` name. ``x``: float32 (n, H, W, C) in [0, 1], the
    inputs sent to a suspect. ``keys``: int64 (n,), the source's labels on ``x``.
    ``num_classes``: K. ``outputs``: float32 (n, K), the source's class probabilities on
    ``x`` (SAC), else None. ``correlation``: float32 (n, n), the source's SAC matrix,
    else None. ``settings``: the method's hyperparameters and seed (JSON). ``fingerprint``:
    the :class:`cae.fingerprint.Fingerprint` behind a ``cigm`` peer fingerprint, else None.
    Arrays are stored as read-only copies.
    """

    method: str
    x: np.ndarray
    keys: np.ndarray
    num_classes: int
    outputs: np.ndarray | None = None
    correlation: np.ndarray | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    fingerprint: fingerprint_lib.Fingerprint | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        x = data.check_images(self.x, name="x", shape=None)
        if x.ndim != 4 or len(x) == 0:
            raise ValueError(f"x has shape {x.shape}; a peer fingerprint needs at least one image (n, H, W, C).")
        n = len(x)
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, numbers.Integral) \
                or self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes!r}; expected an integer >= 2.")
        keys = np.asarray(self.keys)
        if keys.shape != (n,) or not np.issubdtype(keys.dtype, np.integer):
            raise ValueError(f"keys has shape {keys.shape} and dtype {keys.dtype}; expected ({n},) integer labels.")
        if keys.min() < 0 or keys.max() >= self.num_classes:
            raise ValueError(f"keys hold classes in [{keys.min()}, {keys.max()}]; expected 0..{self.num_classes - 1}.")
        set_(self, "x", _frozen(x.astype(np.float32, copy=True)))
        set_(self, "keys", _frozen(keys.astype(np.int64, copy=True)))
        set_(self, "num_classes", int(self.num_classes))
        if self.outputs is not None:
            outputs = np.asarray(self.outputs, np.float32)
            if outputs.shape != (n, self.num_classes) or not np.all(np.isfinite(outputs)):
                raise ValueError(f"outputs has shape {outputs.shape}; expected finite ({n}, {self.num_classes}).")
            set_(self, "outputs", _frozen(outputs.copy()))
        if self.correlation is not None:
            correlation = np.asarray(self.correlation, np.float32)
            if correlation.shape != (n, n) or not np.all(np.isfinite(correlation)):
                raise ValueError(f"correlation has shape {correlation.shape}; expected finite ({n}, {n}).")
            set_(self, "correlation", _frozen(correlation.copy()))
        try:
            set_(self, "settings", json.loads(json.dumps(dict(self.settings), sort_keys=True, allow_nan=False)))
        except (TypeError, ValueError) as err:
            raise ValueError(f"settings must be JSON-serialisable: {err}") from None

    @property
    def n(self) -> int:
        return len(self.keys)

    def save(self, path: str | os.PathLike) -> str | os.PathLike:
        """Write the arrays and settings to ``path`` (an ``.npz``, atomically; no pickles).
        A ``cigm`` fingerprint is saved with :func:`cae.fingerprint.save` instead."""
        if self.fingerprint is not None:
            raise ValueError("a cigm peer fingerprint is a cae Fingerprint: save it with cae.fingerprint.save.")
        arrays = {"x": self.x, "keys": self.keys,
                  "meta": np.array(json.dumps({"method": self.method, "num_classes": self.num_classes,
                                               "settings": self.settings}))}
        arrays.update({name: getattr(self, name) for name in ("outputs", "correlation")
                       if getattr(self, name) is not None})
        paths.atomic_save(path, lambda tmp: np.savez(tmp, **arrays), suffix=".npz")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> PeerFingerprint:
        """Read what :meth:`save` wrote (checked like a new one)."""
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        meta = json.loads(str(arrays.pop("meta")))
        return cls(method=meta["method"], num_classes=meta["num_classes"], settings=meta["settings"], **arrays)

    def __repr__(self):
        return f"PeerFingerprint(method={self.method!r}, n={self.n}, num_classes={self.num_classes})"


def _frozen(array):
    array.flags.writeable = False
    return array


# --------------------------------------------------------------------------- shared helpers
def _pool(x_pool, y_pool=None, needs_labels=False, method=""):
    """The pool as float32 images in [0, 1] (uint8 is converted) and its labels."""
    x = np.asarray(x_pool)
    if np.issubdtype(x.dtype, np.integer):
        x = data.to_float(x)
    x = data.check_images(x, name="x_pool", shape=None)
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"x_pool has shape {x.shape}; expected a non-empty batch of images (n, H, W, C).")
    if y_pool is None:
        if needs_labels:
            raise ValueError(f"{method} needs the pool's true labels (it looks for the source's mistakes); "
                             "give y_pool, integer labels (n,).")
        return x, None
    y = np.asarray(y_pool)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y_pool has shape {y.shape} and dtype {y.dtype}; expected ({len(x)},) integer labels, "
                         "one per pool image.")
    return x, y.astype(np.int64)


def _keras_model(model, where):
    import keras

    if not isinstance(model, keras.Model):
        raise ValueError(f"{where} is a {type(model).__name__}; extracting needs the source as a keras.Model "
                         "(its weights: IPGuard takes gradients, the others its outputs).")
    return model


def _num_classes(model):
    return int(model.output_shape[-1])


def _predict(model, x, batch_size=256):
    return data.predict(model, x, batch_size).astype(np.float64)


def probabilities(suspect: Suspect, x: np.ndarray, num_classes: int | None = None,
                  batch_size: int = 256) -> np.ndarray:
    """The suspect's class scores (n, K) on ``x``: a Keras model's outputs, or what a
    callable returns (``num_classes`` None: any K >= 2). Label-only suspects are
    refused (SAC needs scores)."""
    import keras

    if isinstance(suspect, keras.Model):
        models.check_interface(suspect, where="the suspect model", num_classes=num_classes)
        output = data.predict(suspect, x, batch_size)
    elif callable(suspect) and not hasattr(suspect, "predict_labels"):
        output = suspect(x)
    else:
        raise ValueError(f"the suspect ({type(suspect).__name__}) answers labels only, and this method needs its "
                         "class probabilities (n, K); score it with a label-only method (ipguard, mistakes, cigm) "
                         "or give a Keras model or a callable returning probabilities.")
    output = np.asarray(output)
    width = output.shape[1] if output.ndim == 2 else None
    if output.ndim != 2 or len(output) != len(x) or width < 2 or (num_classes is not None and width != num_classes) \
            or not np.issubdtype(output.dtype, np.floating):
        raise ValueError(f"the suspect returned an array of shape {output.shape} and dtype {output.dtype} for "
                         f"{len(x)} inputs; this method needs class probabilities ({len(x)}, "
                         f"{num_classes or 'K'}) (label-only suspects cannot be scored by SAC).")
    if not np.all(np.isfinite(output)):
        raise ValueError("the suspect returned non-finite class scores.")
    return output.astype(np.float64)


def _mapping(mapping, num_classes):
    """A class mapping (the suspect's class of each source class) as int64 (K,), checked."""
    values = np.asarray(mapping)
    if values.shape != (num_classes,) or not np.issubdtype(values.dtype, np.integer) or values.dtype == bool \
            or values.min() < 0 or values.max() < 1:
        raise ValueError(f"mapping={mapping!r}; give the suspect's class of each of the source's {num_classes} "
                         "classes, integers 0..k-1 with k >= 2 (e.g. cae.removal.task_mapping('transfer')).")
    return values.astype(np.int64)


def _label_rate(suspect, fp, mapping=None):
    """The fraction of keys the suspect's labels match (through ``mapping``, when given)."""
    if mapping is None:
        labels, _ = fingerprint_lib.predict_labels(suspect, fp.x, fp.num_classes)
        return float(np.mean(labels == fp.keys))
    mapping = _mapping(mapping, fp.num_classes)
    labels, _ = fingerprint_lib.predict_labels(suspect, fp.x, int(mapping.max()) + 1)
    return float(np.mean(labels == mapping[fp.keys]))


def _check_fingerprint(fp, method):
    if not isinstance(fp, PeerFingerprint):
        raise ValueError(f"fingerprint is a {type(fp).__name__}; expected the PeerFingerprint that "
                         f"{method}'s extract returned.")
    if fp.method != method:
        raise ValueError(f"this is a {fp.method!r} fingerprint; score it with PEERS[{fp.method!r}], not {method!r}.")


# --------------------------------------------------------------------------- the interface
class Peer:
    """One fingerprinting method: ``extract`` on the source, ``score`` a suspect."""

    name = ""
    title = ""
    needs_probabilities = False
    needs_labels = False  # extract needs y_pool
    attack_params = ()

    def __init__(self, **params) -> None:
        for key, value in params.items():
            if key not in self.attack_params:
                raise ValueError(f"{key!r} is not a parameter of {self.name}; choose from "
                                 f"{', '.join(self.attack_params) or 'none'}.")
            setattr(self, key, value)
        self._check_params()

    def _check_params(self):
        pass

    def settings(self, seed: int) -> dict[str, object]:
        return {**{k: getattr(self, k) for k in self.attack_params}, "seed": int(seed)}

    def extract(self, source: keras.Model, x_pool: np.ndarray, y_pool: np.ndarray | None = None, *,
                surrogates: Sequence[keras.Model] = (), references: Sequence[keras.Model] = (),
                seed: int = 0) -> PeerFingerprint:
        raise NotImplementedError

    def score(self, suspect: Suspect, fingerprint: PeerFingerprint, mapping: np.ndarray | None = None) -> float:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.attack_params)})"


# --------------------------------------------------------------------------- IPGuard
def ipguard_loss(logits: np.ndarray, i: np.ndarray, j: np.ndarray, k: float) -> np.ndarray:
    """IPGuard's loss per example, in NumPy: ``ReLU(g_i - g_j + k) + ReLU(max_{t != i,j} g_t - g_i)``."""
    logits = np.asarray(logits, np.float64)
    rows = np.arange(len(logits))
    others = logits.copy()
    others[rows, i] = -np.inf
    others[rows, j] = -np.inf
    rest = others.max(axis=1) if logits.shape[1] > 2 else np.full(len(logits), -np.inf)
    g_i, g_j = logits[rows, i], logits[rows, j]
    return np.maximum(g_i - g_j + k, 0.0) + np.maximum(rest - g_i, 0.0)


def _ops_loss(logits, onehot_i, onehot_j, k):
    """The same loss in keras.ops (for the gradient)."""
    from keras import ops

    g_i = ops.sum(logits * onehot_i, axis=-1)
    g_j = ops.sum(logits * onehot_j, axis=-1)
    rest = ops.max(logits - 1e9 * (onehot_i + onehot_j), axis=-1)
    return ops.relu(g_i - g_j + k) + ops.relu(rest - g_i)


def _logit_model(model):
    """The network up to its ``logits`` layer when it has one (a cae model), else None."""
    try:
        model.get_layer("logits")
    except ValueError:
        return None
    return models.logits_model(model)


def _loss_and_gradient(model):
    """``f(x, onehot_i, onehot_j, k) -> (loss (b,), d loss.sum() / dx)`` on NumPy arrays,
    compiled by the Keras backend in use; the log-probabilities stand in for missing logits."""
    import keras
    from keras import ops

    logit_model = _logit_model(model)

    def logits_of(network_output_model, x):
        if logit_model is not None:
            return network_output_model(x, training=False)
        return ops.log(ops.clip(network_output_model(x, training=False), 1e-30, 1.0))

    if keras.backend.backend() == "jax":
        import jax

        network = logit_model or model

        def value(x, trainable, non_trainable, onehot_i, onehot_j, k):
            output, _ = network.stateless_call(trainable, non_trainable, x, training=False)
            logits = output if logit_model is not None else ops.log(ops.clip(output, 1e-30, 1.0))
            losses = _ops_loss(logits, onehot_i, onehot_j, k)
            return ops.sum(losses), losses

        gradient = jax.jit(jax.value_and_grad(value, has_aux=True))

        def run(x, onehot_i, onehot_j, k):
            (_, losses), grad = gradient(x, [v.value for v in network.trainable_variables],
                                         [v.value for v in network.non_trainable_variables],
                                         onehot_i, onehot_j, np.float32(k))
            return np.asarray(losses), np.asarray(grad)

        return run
    import tensorflow as tf

    network = logit_model or model

    @tf.function(reduce_retracing=True)
    def step(x, onehot_i, onehot_j, k):
        with tf.GradientTape() as tape:
            tape.watch(x)
            losses = _ops_loss(logits_of(network, x), onehot_i, onehot_j, k)
            total = tf.reduce_sum(losses)
        return losses, tape.gradient(total, x)

    def run(x, onehot_i, onehot_j, k):
        losses, grad = step(tf.constant(x), tf.constant(onehot_i), tf.constant(onehot_j), tf.constant(k, tf.float32))
        return losses.numpy(), grad.numpy()

    return run


class IPGuard(Peer):
    """IPGuard (Cao, Jia & Gong, AsiaCCS 2021): points near the source's classification
    boundary, label-only matching rate (see the module notes).

    ``n``: starting images (the first ``n`` of a seeded shuffle of the pool). ``k``: the
    margin (in logits) by which class j must lead class i. ``learning_rate``,
    ``max_iter``: Adam on the pixels. ``batch_size``: images optimised at once.
    """

    name, title = "ipguard", "IPGuard"
    needs_probabilities = False
    attack_params = ("n", "k", "learning_rate", "max_iter", "batch_size")

    def __init__(self, *, n: int = 100, k: float = 1.0, learning_rate: float = 0.01, max_iter: int = 500,
                 batch_size: int = 128) -> None:
        super().__init__(n=n, k=k, learning_rate=learning_rate, max_iter=max_iter, batch_size=batch_size)

    def _check_params(self):
        checks.integer("n", self.n)
        checks.number("k", self.k, low=0.0)
        checks.number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        checks.integer("max_iter", self.max_iter)
        checks.integer("batch_size", self.batch_size)

    def extract(self, source: keras.Model, x_pool: np.ndarray, y_pool: np.ndarray | None = None, *,
                surrogates: Sequence[keras.Model] = (), references: Sequence[keras.Model] = (),
                seed: int = 0) -> PeerFingerprint:
        source = _keras_model(source, "source")
        x, _ = _pool(x_pool, y_pool)
        rng = np.random.default_rng(seed)
        x = x[np.sort(rng.permutation(len(x))[: self.n])]
        num_classes = _num_classes(source)
        i = np.argmax(_predict(source, x), axis=1)
        j = (i + rng.integers(1, num_classes, size=len(i))) % num_classes
        run = _loss_and_gradient(source)
        eye = np.eye(num_classes, dtype=np.float32)
        out, losses = np.empty_like(x), np.empty(len(x))
        for start in range(0, len(x), self.batch_size):
            stop = start + self.batch_size
            out[start:stop], losses[start:stop] = self._optimise(run, x[start:stop], eye[i[start:stop]],
                                                                 eye[j[start:stop]])
        keep = losses <= 0.0
        log.info("IPGuard: %d of %d points reached the boundary (k = %g) within %d steps", int(keep.sum()), len(x),
                 self.k, self.max_iter)
        if not keep.any():
            raise ValueError(f"IPGuard: no point reached zero loss in max_iter={self.max_iter} steps; raise "
                             "max_iter or learning_rate, or lower k.")
        x_fp = out[keep]
        keys = np.argmax(_predict(source, x_fp), axis=1)
        return PeerFingerprint(self.name, x_fp, keys, num_classes, settings=self.settings(seed))

    def _optimise(self, run, x, onehot_i, onehot_j, beta1=0.9, beta2=0.999, epsilon=1e-8):
        """Adam on the pixels, clipped to [0, 1]; an example freezes once its loss is 0."""
        x = x.copy()
        m, v = np.zeros_like(x), np.zeros_like(x)
        losses = np.full(len(x), np.inf)
        for step in range(1, self.max_iter + 1):
            losses, grad = run(x, onehot_i, onehot_j, float(self.k))
            active = (losses > 0.0)[:, None, None, None]
            if not active.any():
                break
            m = np.where(active, beta1 * m + (1 - beta1) * grad, m)
            v = np.where(active, beta2 * v + (1 - beta2) * grad * grad, v)
            update = self.learning_rate * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + epsilon)
            x = np.where(active, np.clip(x - update, 0.0, 1.0), x).astype(np.float32)
        else:
            losses, _ = run(x, onehot_i, onehot_j, float(self.k))
        return x, np.asarray(losses, np.float64)

    def score(self, suspect: Suspect, fingerprint: PeerFingerprint, mapping: np.ndarray | None = None) -> float:
        """The fraction of IPGuard's keys the suspect's labels match (label-only), in [0, 1]."""
        _check_fingerprint(fingerprint, self.name)
        return _label_rate(suspect, fingerprint, mapping)


# --------------------------------------------------------------------------- SAC
def correlation_matrix(outputs: np.ndarray) -> np.ndarray:
    """SAC's sample correlation: ``(1 - cos(O_a, O_b)) / 2`` for every pair of rows of
    ``outputs`` (n, K); (n, n), in [0, 1], zero on the diagonal."""
    outputs = np.asarray(outputs, np.float64)
    if outputs.ndim != 2 or len(outputs) < 2:
        raise ValueError(f"outputs has shape {outputs.shape}; SAC needs (n, K) outputs of at least 2 samples.")
    unit = outputs / np.maximum(np.linalg.norm(outputs, axis=1, keepdims=True), 1e-12)
    return np.clip((1.0 - unit @ unit.T) / 2.0, 0.0, 1.0)


def correlation_distance(a: np.ndarray, b: np.ndarray) -> float:
    """SAC's distance between two correlation matrices: the mean absolute difference, in [0, 1]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"correlation matrices of shapes {a.shape} and {b.shape}; expected two equal (n, n).")
    return float(np.mean(np.abs(a - b)))


class _SAC(Peer):
    needs_probabilities = True

    def _fingerprint(self, source, x, seed):
        num_classes = _num_classes(source)
        outputs = _predict(source, x)
        return PeerFingerprint(self.name, x, np.argmax(outputs, axis=1), num_classes, outputs=outputs,
                               correlation=correlation_matrix(outputs), settings=self.settings(seed))

    def score(self, suspect: Suspect, fingerprint: PeerFingerprint, mapping: np.ndarray | None = None) -> float:
        """Minus SAC's distance between the suspect's and the source's correlation
        matrices, in [-1, 0]; 0 for a suspect whose outputs correlate exactly like the
        source's. Needs the suspect's probabilities; a suspect of another label set
        (``mapping`` given) is compared as is."""
        _check_fingerprint(fingerprint, self.name)
        if mapping is not None:
            _mapping(mapping, fingerprint.num_classes)
        outputs = probabilities(suspect, fingerprint.x, fingerprint.num_classes if mapping is None else None)
        return -correlation_distance(correlation_matrix(outputs), fingerprint.correlation)


class SACW(_SAC):
    """SAC-w (Guan, Liang & He, NeurIPS 2022): the sample correlation of ``n`` natural
    images that the source, and every one of ``surrogates`` given to :meth:`extract`,
    misclassify (see the module notes)."""

    name, title = "sac_w", "SAC-w"
    needs_labels = True
    attack_params = ("n",)

    def __init__(self, *, n: int = 100) -> None:
        super().__init__(n=n)

    def _check_params(self):
        checks.integer("n", self.n, minimum=2)

    def extract(self, source: keras.Model, x_pool: np.ndarray, y_pool: np.ndarray | None = None, *,
                surrogates: Sequence[keras.Model] = (), references: Sequence[keras.Model] = (),
                seed: int = 0) -> PeerFingerprint:
        source = _keras_model(source, "source")
        x, y = _pool(x_pool, y_pool, needs_labels=True, method="SAC-w")
        wrong = np.argmax(_predict(source, x), axis=1) != y
        for surrogate in surrogates:
            wrong &= np.argmax(_predict(surrogate, x), axis=1) != y
        chosen = _first(np.flatnonzero(wrong), self.n, seed)
        if len(chosen) < 2:
            who = "the source and every surrogate misclassify" if len(surrogates) else "the source misclassifies"
            raise ValueError(f"SAC-w: the pool holds {len(chosen)} image(s) that {who}; it needs at least 2 "
                             "(give a larger pool, e.g. test images, or fewer surrogates).")
        if len(chosen) < self.n:
            log.warning("SAC-w: only %d common mistakes in the pool (n=%d asked)", len(chosen), self.n)
        return self._fingerprint(source, x[chosen], seed)


def _first(indices, n, seed):
    """``n`` of ``indices`` from a seeded shuffle, in pool order."""
    return np.sort(np.random.default_rng(seed).permutation(indices)[:n])


def cutmix(x: np.ndarray, seed: int = 0, fraction: float = 0.2) -> np.ndarray:
    """SAC-m's CutMix (as the authors release it): every image gets the square patch
    (side ``fraction`` of the image side) of another image of ``x`` at the same place;
    one box for the whole batch, centred outside the middle two thirds along both axes."""
    x = np.asarray(x)
    if x.ndim != 4 or len(x) < 2:
        raise ValueError(f"x has shape {x.shape}; CutMix needs a batch of at least 2 images (n, H, W, C).")
    rng = np.random.default_rng(seed)
    height, width = x.shape[1:3]
    cut_h, cut_w = max(1, int(height * fraction)), max(1, int(width * fraction))
    centre = []
    for size in (height, width):
        edges = [c for c in range(size) if not size / 6 < c < 5 * size / 6]
        centre.append(int(rng.choice(edges)))
    (cy, cx) = centre
    y1, x1 = max(0, cy - cut_h // 2), max(0, cx - cut_w // 2)
    y2, x2 = min(height, max(y1 + 1, cy + cut_h // 2)), min(width, max(x1 + 1, cx + cut_w // 2))
    partner = rng.permutation(len(x))
    same = partner == np.arange(len(x))
    partner[same] = (partner[same] + 1) % len(x)  # never an image's own patch
    mixed = x.copy()
    mixed[:, y1:y2, x1:x2] = x[partner, y1:y2, x1:x2]
    return mixed


class SACM(_SAC):
    """SAC-m (Guan, Liang & He, NeurIPS 2022): the sample correlation of ``n``
    CutMix-augmented pool images (:func:`cutmix`; no labels, no surrogate models)."""

    name, title = "sac_m", "SAC-m"
    attack_params = ("n", "fraction")

    def __init__(self, *, n: int = 100, fraction: float = 0.2) -> None:
        super().__init__(n=n, fraction=fraction)

    def _check_params(self):
        checks.integer("n", self.n, minimum=2)
        checks.number("fraction", self.fraction, low=0.0, high=1.0, low_open=True)

    def extract(self, source: keras.Model, x_pool: np.ndarray, y_pool: np.ndarray | None = None, *,
                surrogates: Sequence[keras.Model] = (), references: Sequence[keras.Model] = (),
                seed: int = 0) -> PeerFingerprint:
        source = _keras_model(source, "source")
        x, _ = _pool(x_pool, y_pool)
        if len(x) < 2:
            raise ValueError(f"SAC-m: x_pool holds {len(x)} image; CutMix needs at least 2.")
        picked = x[_first(np.arange(len(x)), self.n, seed)]
        return self._fingerprint(source, cutmix(picked, seed=seed, fraction=self.fraction).astype(np.float32), seed)


# --------------------------------------------------------------------------- mistakes
class Mistakes(Peer):
    """Natural images the source misclassifies, keyed by its wrong label; the score is
    the fraction of them a suspect labels the same (label-only)."""

    name, title = "mistakes", "Mistakes"
    needs_labels = True
    attack_params = ("n",)

    def __init__(self, *, n: int = 100) -> None:
        super().__init__(n=n)

    def _check_params(self):
        checks.integer("n", self.n)

    def extract(self, source: keras.Model, x_pool: np.ndarray, y_pool: np.ndarray | None = None, *,
                surrogates: Sequence[keras.Model] = (), references: Sequence[keras.Model] = (),
                seed: int = 0) -> PeerFingerprint:
        source = _keras_model(source, "source")
        x, y = _pool(x_pool, y_pool, needs_labels=True, method="the mistakes baseline")
        labels = np.argmax(_predict(source, x), axis=1)
        chosen = _first(np.flatnonzero(labels != y), self.n, seed)
        if not len(chosen):
            raise ValueError("the source classifies every pool image correctly, so there is no mistake to key on; "
                             "give a larger pool (e.g. test images).")
        return PeerFingerprint(self.name, x[chosen], labels[chosen], _num_classes(source),
                               settings=self.settings(seed))

    def score(self, suspect: Suspect, fingerprint: PeerFingerprint, mapping: np.ndarray | None = None) -> float:
        """The fraction of the source's mistakes the suspect repeats (label-only), in [0, 1]."""
        _check_fingerprint(fingerprint, self.name)
        return _label_rate(suspect, fingerprint, mapping)


# --------------------------------------------------------------------------- C-IGM
class CIGMPeer(Peer):
    """This package's fingerprint as a peer: C-IGM on the ensemble of the source,
    ``surrogates`` and ``references`` (:class:`cae.attacks.CIGM`), Algorithm 2's filter
    (conferrability on those models >= ``tau``, and success), scored by the retention
    of :func:`cae.fingerprint.verify`. ``n``: starting pool images (those the source
    classifies correctly, when ``y_pool`` is given). ``eps``, ``iterations``, ``dropout``,
    ``transform``, ``smooth`` (its gradient blur in pixels): C-IGM's."""

    name, title = "cigm", "C-IGM (this paper)"
    attack_params = ("n", "eps", "tau", "iterations", "dropout", "transform", "smooth")

    def __init__(self, *, n: int = 100, eps: float = 0.15, tau: float = 1.0, iterations: int = 100,
                 dropout: float = 0.5, transform: str = "none", smooth: float = 0.0) -> None:
        super().__init__(n=n, eps=eps, tau=tau, iterations=iterations, dropout=dropout, transform=transform,
                         smooth=smooth)

    def _check_params(self):
        checks.integer("n", self.n)
        checks.number("eps", self.eps, low=0.0, high=1.0, low_open=True)
        checks.number("tau", self.tau, low=0.0, high=1.0)
        checks.integer("iterations", self.iterations)
        checks.number("dropout", self.dropout, low=0.0, high=1.0)
        checks.number("smooth", self.smooth, low=0.0, high=attacks.MAX_SMOOTH)
        if not isinstance(self.transform, str):
            raise ValueError(f"transform={self.transform!r} is not allowed; expected a C-IGM transform name "
                             "such as 'none' or 'shift+flip'.")

    @classmethod
    def wrap(cls, fp: fingerprint_lib.Fingerprint) -> PeerFingerprint:
        """A peer fingerprint of a :class:`cae.fingerprint.Fingerprint` (e.g. ``cae extract``'s)."""
        if not isinstance(fp, fingerprint_lib.Fingerprint):
            raise ValueError(f"fp is a {type(fp).__name__}; expected a cae.fingerprint.Fingerprint "
                             "(cae.fingerprint.load reads one).")
        settings = {**fp.manifest.get("created_with", {}),
                    **{k: fp.manifest.get(k) for k in ("epsilon", "tau", "attack", "source_model_hash")}}
        return PeerFingerprint(cls.name, fp.x, fp.keys, fp.num_classes, settings=settings, fingerprint=fp)

    def extract(self, source: keras.Model, x_pool: np.ndarray, y_pool: np.ndarray | None = None, *,
                surrogates: Sequence[keras.Model] = (), references: Sequence[keras.Model] = (),
                seed: int = 0) -> PeerFingerprint:
        source = _keras_model(source, "source")
        surrogates, references = list(surrogates), list(references)
        if not surrogates or not references:
            raise ValueError(f"C-IGM needs the defender's surrogates and references for its ensemble; got "
                             f"{len(surrogates)} and {len(references)}: give surrogates=[...] and references=[...].")
        x, y = _pool(x_pool, y_pool)
        labels = np.argmax(_predict(source, x), axis=1)
        candidates = np.flatnonzero(labels == y) if y is not None else np.arange(len(x))
        chosen = _first(candidates, self.n, seed)
        if not len(chosen):
            raise ValueError("C-IGM: the source misclassifies every pool image; Algorithm 2 starts from images it "
                             "classifies correctly.")
        x, labels = x[chosen], labels[chosen]
        members = ensemble.compose(source, surrogates, references, dropout=float(self.dropout), seed=int(seed))
        attack = attacks.CIGM(members, float(self.eps), max_iter=int(self.iterations), transform=self.transform,
                              smooth=float(self.smooth), seed=int(seed))
        x_adv = attack.generate(x, labels)
        t = np.argmax(_predict(source, x_adv), axis=1)
        confer = scores.confer(scores.predict_labels(surrogates, x_adv), scores.predict_labels(references, x_adv), t)
        try:
            fp, _ = fingerprint_lib.extract(source, x_adv, confer, tau=float(self.tau), success=t != labels,
                                            attack="C-IGM", epsilon=float(self.eps), dataset="pool",
                                            created_with=self.settings(seed))
        except ValueError as err:
            raise ValueError(f"C-IGM: {err}") from None
        return self.wrap(fp)

    def score(self, suspect: Suspect, fingerprint: PeerFingerprint, mapping: np.ndarray | None = None) -> float:
        """The retention of :func:`cae.fingerprint.verify` (label-only), in [0, 1]; through
        ``mapping``, the fraction of keys t the suspect answers with ``mapping[t]``."""
        _check_fingerprint(fingerprint, self.name)
        fp = fingerprint.fingerprint
        if fp is None:
            raise ValueError("this cigm peer fingerprint carries no cae Fingerprint; make it with CIGMPeer.extract "
                             "or CIGMPeer.wrap.")
        if mapping is not None:
            return _label_rate(suspect, fingerprint, mapping)
        return float(fingerprint_lib.verify(suspect, fp).retention)


# --------------------------------------------------------------------------- registry
PEERS = {cls.name: cls for cls in (CIGMPeer, IPGuard, SACW, SACM, Mistakes)}


def get(name: str, **params) -> Peer:
    """An instance of peer method ``name`` with ``params``."""
    if name not in PEERS:
        raise ValueError(f"unknown peer method {name!r}; choose one of {', '.join(PEERS)}.")
    unknown = sorted(set(params) - set(PEERS[name].attack_params))
    if unknown:
        raise ValueError(f"{', '.join(map(repr, unknown))} is not a parameter of {name}; choose from "
                         f"{', '.join(PEERS[name].attack_params)}.")
    return PEERS[name](**params)
