"""Adversarial attacks: C-IGM (Section IV-D) and the paper's baselines (Table I).

:data:`ATTACKS` holds Table I's parameters (and the ART settings it leaves open);
``reproduce/table1.py`` prints it through :func:`rows`, so the table cannot drift
from the code.

:class:`CIGM` is the paper's attack: IGM (iterative FGSM in L-inf) on the ensemble
M_E of :func:`cae.ensemble.compose` with the linear targeted loss L_E = -M_E(x) · t
(eq. 19). It has two interchangeable execution paths: ``backend="art"`` runs ART's
``BasicIterativeMethod`` (the paper's tool) on a ``TensorFlowV2Classifier``;
``backend="compiled"`` runs the same iteration, written with ``keras.ops``, as one
compiled TensorFlow loop. With dropout off both produce the same examples.

The baselines IGM, PGD, DeepFool and CW-L2 (:class:`IGM`, :class:`PGD`,
:class:`DeepFool`, :class:`CarliniL2`) run through ART, untargeted, on the source model
alone (Section IV-C). Every attack is a class in ART's style, derived from
:class:`Attack`: its parameters (``attack_params``), checked by ``_check_params`` (a
``ValueError`` naming the argument, the value and what is allowed), ``set_params`` and
``generate(x, y=None)``.

:data:`REGISTRY` lists every attack the runner knows, with its name in tables, the norm
of its ε, how it is held to ε and the paper's Table II numbers: the runner
(:func:`cae.experiments.run_attack`), Table II and the figures read it. A new attack is a
class here and an entry there (a baseline also a row of :data:`ATTACKS`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import weakref

import keras
import numpy as np
from keras import ops

from cae import checks, data, ensemble as ensemble_lib, models, paper, presets

log = logging.getLogger(__name__)

# The perturbation budgets swept in Section IV-C / Figure 4 (pixel units in [0, 1]).
EPSILONS = presets.EPSILONS
CONSTRAINTS = ("project", "filter", "none")


# --------------------------------------------------------------------------- Table I
@dataclasses.dataclass(frozen=True)
class AttackParams:
    """One row of Table I plus the ART settings that the paper leaves at their defaults.

    ``norm`` is Table I's q: the norm in which the budget ε is measured. ``constraint``
    is how a baseline is held to ε (see :class:`BaselineAttack`). ``art`` holds the other
    keyword arguments given to the ART class, as ``(name, value)`` pairs.
    """

    method: str
    art_class: str
    max_iter: int
    norm: str
    eps_step: float | None = None
    nb_grads: int | None = None
    confidence: float | None = None
    learning_rate: float | None = None
    constraint: str = "project"
    art: tuple[tuple[str, object], ...] = ()
    note: str = ""

    def art_kwargs(self) -> dict[str, object]:
        """Keyword arguments for the ART class (without the estimator and ε)."""
        kwargs = {"max_iter": self.max_iter}
        for name in ("eps_step", "nb_grads", "confidence", "learning_rate"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        kwargs.update(dict(self.art))
        return kwargs

    def row(self) -> dict[str, object]:
        """Table I's columns (None where the paper prints '-'), then the ART mapping."""
        return {
            "Method": self.method,
            "Iter": self.max_iter,
            "α": self.eps_step,
            "Grads": self.nb_grads,
            "κ": self.confidence,
            "lr": self.learning_rate,
            "q": self.norm,
            "ART": self.art_class,
            "ART defaults kept": ", ".join(f"{k}={v}" for k, v in self.art) or None,
            "ε rule": self.constraint,
            "note": self.note or None,
        }


ATTACKS = {
    "igm": AttackParams(
        method="IGM", art_class="BasicIterativeMethod", max_iter=100, eps_step=0.01, norm="inf",
        note="no early stop: all iterations run (as ART does); C-IGM uses the same settings",
    ),
    "deepfool": AttackParams(
        method="DeepFool", art_class="DeepFool", max_iter=100, nb_grads=10, norm="inf",
        constraint="filter", art=(("epsilon", 0.02),),
        note="ART's DeepFool takes L2 steps on the logits and has no ε; overshoot 0.02 as in "
             "Moosavi-Dezfooli et al. (ART's 1e-6 leaves many examples on the boundary, not "
             "adversarial); an example counts if ||δ||∞ <= ε",
    ),
    "pgd": AttackParams(
        method="PGD", art_class="ProjectedGradientDescent", max_iter=100, eps_step=0.01, norm="2",
        art=(("num_random_init", 1),),
        note="ε and α in L2; one random start in the ε-ball (Section II-F: random starting points)",
    ),
    "cw": AttackParams(
        method="CW-L2", art_class="CarliniL2Method", max_iter=100, confidence=50.0,
        learning_rate=0.01, norm="2", constraint="none",
        art=(("binary_search_steps", 10), ("initial_const", 0.01), ("max_halving", 5), ("max_doubling", 5)),
        note="on the logits; ART's CW has no ε and its outputs are not filtered by ε: "
             "the paper's Figure 4 gives CW-L2 the same transferability (0.680) at ε = 0.03 "
             "and 0.3, which only an ε-independent set of examples explains",
    ),
}


def rows() -> list[dict[str, object]]:
    """Table I as plain dicts, one per attack, in the paper's order."""
    return [params.row() for params in ATTACKS.values()]


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _numpy_seed(seed):
    """Seed NumPy's global generator (ART draws from it) and restore it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def require_tensorflow(what: str) -> None:
    """Refuse ``what`` (an ART-based step) unless Keras runs on TensorFlow, with the fix."""
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"{what} runs through ART's TensorFlowV2Classifier, which needs the TensorFlow Keras "
            f"backend (this process runs {keras.backend.backend()!r}); set KERAS_BACKEND=tensorflow "
            "before importing keras. Under JAX, training the zoo, C-IGM (backend='compiled'), "
            "extracting and verifying work."
        )


def _tensorflow_classifier(model, loss_object, compiled_gradient=False):
    require_tensorflow("this attack")
    from art.estimators.classification import TensorFlowV2Classifier

    cls = _compiled_gradient_classifier_class() if compiled_gradient else TensorFlowV2Classifier
    return cls(
        model=model,
        nb_classes=int(model.output_shape[-1]),
        input_shape=tuple(model.input_shape[1:]),
        loss_object=loss_object,
        clip_values=(0.0, 1.0),
    )


@functools.lru_cache(maxsize=None)
def _compiled_gradient_classifier_class():
    import tensorflow as tf
    from art.estimators.classification import TensorFlowV2Classifier
    from art.utils import check_and_transform_label_format

    class CompiledGradientClassifier(TensorFlowV2Classifier):
        """ART's ``TensorFlowV2Classifier`` whose ``loss_gradient`` runs as a tf.function.

        Same gradient as ART's eager tape, traced once instead of run op by op; only used
        without ART preprocessing, which cae models never need (they normalise inside).
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            model, loss = self.model, self._loss_object

            @tf.function(reduce_retracing=True)
            def gradient(x, y):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    value = loss(y, model(x, training=False))
                return tape.gradient(value, x)

            @tf.function(reduce_retracing=True)
            def jacobian(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    outputs = model(x, training=False)
                return tape.batch_jacobian(outputs, x)

            self._gradient = gradient
            self._jacobian = jacobian

        def class_gradient(self, x, label=None, training_mode=False, **kwargs):
            """All class gradients in one compiled Jacobian (DeepFool asks for every class at
            every step; ART's eager loop over classes is the attack's bottleneck)."""
            if training_mode or not self.all_framework_preprocessing or not isinstance(x, np.ndarray):
                return super().class_gradient(x, label=label, training_mode=training_mode, **kwargs)
            full = self._jacobian(tf.convert_to_tensor(x, tf.float32)).numpy()  # (n, K, *input)
            if label is None:
                return full
            if isinstance(label, (int, np.integer)):
                return full[:, [int(label)]]
            label = np.asarray(label).reshape(-1)
            return full[np.arange(len(x)), label][:, None]

        def loss_gradient(self, x, y, training_mode=False, **kwargs):
            if training_mode or not self.all_framework_preprocessing or self._reduce_labels:
                return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
            as_numpy = isinstance(x, np.ndarray)
            if isinstance(y, np.ndarray):
                y = check_and_transform_label_format(y, self.nb_classes)
            gradients = self._gradient(tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32))
            return gradients.numpy() if as_numpy else gradients

    return CompiledGradientClassifier


def _project(delta, eps, norm):
    """Project perturbations (N, ...) onto the ε-ball of ``norm`` ("inf" or "2")."""
    if norm == "inf":
        return np.clip(delta, -eps, eps)
    flat = delta.reshape(len(delta), -1)
    length = np.linalg.norm(flat, axis=1)
    scale = np.where(length > eps, eps / np.maximum(length, 1e-12), 1.0)
    return (flat * scale[:, None]).reshape(delta.shape).astype(delta.dtype)


def perturbation_norm(x: np.ndarray, x_adv: np.ndarray, norm: str) -> np.ndarray:
    """Per-example ||x_adv - x|| in ``norm`` ("inf" or "2")."""
    delta = (np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)).reshape(len(x), -1)
    if norm == "inf":
        return np.abs(delta).max(axis=1) if delta.size else np.zeros(len(x))
    return np.linalg.norm(delta, axis=1)


class _EnsembleParts:
    """What C-IGM derives from an ensemble, built once per ensemble and reused.

    The compiled loop is traced once per ensemble (and input shape), not once per
    attack instance: sweeping ε with new ``CIGM`` objects does not retrace.
    """

    def __init__(self, ensemble):
        ensemble_lib.roles(ensemble)  # raises unless it came from compose
        self.mean_field = ensemble_lib.with_dropout(ensemble, 0.0)
        self.source = ensemble_lib.source_model(ensemble)
        # A weak reference: the cache must not keep its key (the ensemble) alive.
        self.run = _compiled_igm(weakref.ref(ensemble), ensemble_lib.LinearLoss())


_PARTS = weakref.WeakKeyDictionary()


def _ensemble_parts(ensemble):
    parts = _PARTS.get(ensemble)
    if parts is None:
        parts = _PARTS[ensemble] = _EnsembleParts(ensemble)
    return parts


def _compiled_igm(model_ref, loss, smooth=0.0):
    """The targeted IGM loop on ``model_ref()``, compiled by the Keras backend in use.

    Returns ``run(x, onehot, eps, eps_step, max_iter) -> x_adv`` on NumPy arrays. Under
    TensorFlow the loop is one tf.function; under JAX one ``jax.jit`` (a GPU machine
    may have JAX but not TensorFlow). The step's math is in keras.ops and is the same,
    in the same order, as ART's BIM step; only taking the gradient is backend code.
    ``smooth`` > 0: every gradient is first blurred by a Gaussian of that many pixels
    (:func:`gradient_kernel`).
    """
    kernel = gradient_kernel(smooth) if smooth else None
    if keras.backend.backend() == "jax":
        return _compiled_igm_jax(model_ref, loss, kernel)
    return _compiled_igm_tensorflow(model_ref, loss, kernel)


MAX_SMOOTH = 4.0  # pixels: a wider blur of a 32-pixel image's gradient leaves little of it


def gradient_kernel(sigma: float, channels: int = 3) -> np.ndarray:
    """The (k, k, channels, 1) depthwise kernel of a normalised Gaussian of ``sigma``
    pixels (radius ⌈2σ⌉), the translation-invariant attack's (Dong et al. 2019)."""
    checks.positive_number("smooth", sigma, upper=MAX_SMOOTH)
    radius = int(np.ceil(2 * sigma))
    offsets = np.arange(-radius, radius + 1)
    line = np.exp(-0.5 * (offsets / sigma) ** 2)
    plane = np.outer(line, line)
    plane /= plane.sum()
    return np.tile(plane[:, :, None, None], (1, 1, channels, 1)).astype(np.float32)


def _igm_step(x_adv, x_init, grad, eps, eps_step, kernel=None):
    """One targeted BIM step from the loss gradient ``grad``: descend, clip, project.
    With a ``kernel``, the gradient is blurred by it first (each channel alone)."""
    grad = ops.where(ops.isnan(grad), ops.zeros_like(grad), -grad)
    if kernel is not None:
        grad = ops.depthwise_conv(grad, kernel, strides=1, padding="same")
    x_next = ops.clip(x_adv + eps_step * ops.sign(grad), 0.0, 1.0)
    delta = x_next - x_init
    delta = ops.sign(delta) * ops.minimum(ops.abs(delta), eps)
    return x_init + delta


def _compiled_igm_tensorflow(model_ref, loss, kernel=None):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def loop(x_init, onehot, eps, eps_step, max_iter):
        x_adv = tf.identity(x_init)
        for _ in tf.range(max_iter):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                value = loss(onehot, model_ref()(x_adv, training=False))
            x_adv = _igm_step(x_adv, x_init, tape.gradient(value, x_adv), eps, eps_step, kernel)
        return x_adv

    def run(x, onehot, eps, eps_step, max_iter):
        return loop(tf.constant(x), tf.constant(onehot), tf.constant(eps, tf.float32),
                    tf.constant(eps_step, tf.float32), tf.constant(int(max_iter), tf.int32)).numpy()

    return run


def _compiled_igm_jax(model_ref, loss, kernel=None):
    import jax

    def value(x_adv, trainable, non_trainable, onehot):
        # The ensemble's dropout draws its masks from seed-generator state, which is
        # among the non-trainable variables: it is threaded through the loop and
        # written back afterwards, so the next batch continues the mask sequence.
        outputs, non_trainable = model_ref().stateless_call(trainable, non_trainable, x_adv, training=False)
        return loss(onehot, outputs), non_trainable

    gradient = jax.grad(value, has_aux=True)

    @jax.jit
    def loop(trainable, non_trainable, x_init, onehot, eps, eps_step, max_iter):
        def body(_, carry):
            x_adv, state = carry
            grad, state = gradient(x_adv, trainable, state, onehot)
            return _igm_step(x_adv, x_init, grad, eps, eps_step, kernel), state

        return jax.lax.fori_loop(0, max_iter, body, (x_init, non_trainable))

    def run(x, onehot, eps, eps_step, max_iter):
        model = model_ref()
        x_adv, state = loop([v.value for v in model.trainable_variables],
                            [v.value for v in model.non_trainable_variables],
                            x, onehot, np.float32(eps), np.float32(eps_step), np.int32(max_iter))
        for variable, new in zip(model.non_trainable_variables, state):
            variable.assign(new)
        return np.asarray(x_adv)

    return run


# --------------------------------------------------------------------------- the base
class Attack:
    """What every attack shares, in ART's shape: its parameters are attributes named in
    ``attack_params`` and checked by :meth:`_check_params` (a ``ValueError`` naming the
    argument, the value and what is allowed); :meth:`set_params` changes them;
    :meth:`generate` returns the adversarial examples of float32 images in [0, 1].

    Class attributes: ``method`` (the attack's name in messages and tables), ``norm``
    (the norm its ε is measured in, ``"inf"`` or ``"2"``) and ``constraint`` (how it is
    held to ε by default, one of :data:`CONSTRAINTS`). :data:`REGISTRY` reads them.
    """

    attack_params: tuple[str, ...] = ()
    method: str = ""
    norm: str = "inf"
    constraint: str = "project"

    def set_params(self, **kwargs) -> None:
        """Change attack parameters (names in ``attack_params``) and check them; a refused
        change leaves the attack as it was."""
        self._check_names(kwargs)
        before = {name: getattr(self, name) for name in kwargs}
        for name, value in kwargs.items():
            setattr(self, name, value)
        try:
            self._check_params()
        except ValueError:
            for name, value in before.items():
                setattr(self, name, value)
            raise

    def _check_names(self, names) -> None:
        unknown = sorted(set(names) - set(self.attack_params))
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} {'is not a parameter' if len(unknown) == 1 else 'are not parameters'} "
                f"of {self.method}; it takes {', '.join(self.attack_params)}."
            )

    def _check_params(self) -> None:
        """Check the parameters every attack has: ``batch_size``, ``seed`` and ``verbose``."""
        checks.integer("batch_size", self.batch_size, 1, "a positive int")
        checks.integer("seed", self.seed, 0, "a non-negative int")
        _check_flag("verbose", self.verbose)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples (float32) of ``x`` (float32 (N, 32, 32, 3) in [0, 1]);
        ``y``: labels (int or one-hot; default: the attacked model's own)."""
        raise NotImplementedError


def _check_flag(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} is not allowed; expected True or False.")


# --------------------------------------------------------------------------- C-IGM
class CIGM(Attack):
    """Conferrable IGM (Lukas, Zhang & Kerschbaum, Section IV-D): targeted IGM on M_E.

    Each step moves x against the gradient of L_E = -M_E(x) · t (eq. 19), i.e.
    ``x <- clip_[0,1](x + α · sign(∇_x M_E(x)_t))``, then projects the perturbation
    onto the L-inf ε-ball around the input. As in ART's ``BasicIterativeMethod``
    (random start off), all ``max_iter`` steps run for every example (no early stop);
    the ensemble's dropout draws new masks at every step.

    Target class t. The paper leaves t open ("we do not put constraints on the chosen
    target class"). ``target`` chooses it once per example, before the attack, from
    the dropout-free ensemble (the mean of the stochastic one) and the source label y:

    * ``"most_conferrable"`` (default): argmax over classes t != y of M_E(x)_t, the
      wrong class that is already most conferrable. It is the class that the loss
      L_E can raise most with the least perturbation: the surrogates lean towards it
      and the references do not, which is what the fingerprint needs;
    * ``"second_source"``: the source's most likely class other than y;
    * ``"random"``: a uniformly random class other than y (from ``seed``).

    The default was chosen on the defender's own models (``benchmarks/target_rule.py``,
    training pairs held out of the ensemble); the README gives the measurements.

    ``y`` given to :meth:`generate` is the source label of each input (int or one-hot);
    by default the source member's prediction. The chosen targets are kept in
    ``targets_`` and the source labels in ``labels_``.

    ``seed`` restarts the ensemble's dropout masks (``cae.ensemble.reseed``) at each
    :meth:`generate`, so equal inputs give equal outputs.

    ``transform`` (beyond the paper; the default ``"none"`` is the paper's C-IGM):
    ``"shift+flip"`` takes every step's gradient through a random translation by up to
    2 pixels and a random mirror of each image (:class:`cae.ensemble.RandomShiftFlip`;
    ``"shift+flip:4x2"``: 4 pixels, the mean over 2 draws per step). The examples then
    fit the ensemble at every nearby position rather than at one, which is what models
    trained with the same augmentation, but never seen by the attack, have in common.
    ``"scale+flip"`` (and ``"scale"``, without the mirror) is input diversity (Xie et al.
    2019): each image is also zoomed in or out by up to 2 pixels across and moved by a
    continuous offset (:class:`cae.ensemble.RandomResize`; ``"scale+flip:4"``: 4 pixels).

    ``smooth`` (beyond the paper; 0, the default, is the paper's): the translation-invariant
    attack of Dong et al. (2019). Every step's gradient is blurred by a Gaussian of
    ``smooth`` pixels before its sign is taken, which approximates the gradient over
    every translation of the image nearby without computing it there (the ``shift``
    transform draws those translations instead). Compiled backend only.
    """

    attack_params = ("eps", "eps_step", "max_iter", "target", "transform", "smooth", "backend", "batch_size",
                     "seed", "verbose")
    method = "C-IGM"
    TARGETS = ("most_conferrable", "second_source", "random")
    BACKENDS = ("compiled", "art")

    def __init__(
        self,
        ensemble: keras.Model,
        eps: float,
        *,
        eps_step: float = ATTACKS["igm"].eps_step,
        max_iter: int = ATTACKS["igm"].max_iter,
        target: str = "most_conferrable",
        transform: str = "none",
        smooth: float = 0.0,
        backend: str = "compiled",
        batch_size: int = 32,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        self.ensemble = ensemble
        self.eps = eps
        self.eps_step = eps_step
        self.max_iter = max_iter
        self.target = target
        self.transform = transform
        self.smooth = smooth
        self.backend = backend
        self.batch_size = batch_size
        self.seed = seed
        self.verbose = verbose
        self._check_params()
        self._parts = _ensemble_parts(ensemble)
        self._transformed = None  # ((transform, smooth), model, compiled loop), built on first use
        self.targets_ = None
        self.labels_ = None

    def _check_params(self):
        if not isinstance(self.ensemble, keras.Model):
            raise ValueError(
                f"ensemble={type(self.ensemble).__name__} is not allowed; expected the keras.Model "
                "returned by cae.ensemble.compose."
            )
        checks.positive_number("eps", self.eps, upper=1.0)
        checks.positive_number("eps_step", self.eps_step, upper=1.0)
        checks.integer("max_iter", self.max_iter, 1, "a positive int")
        checks.choice("target", self.target, self.TARGETS, verb="supported")
        ensemble_lib.parse_transform(self.transform)
        if self.smooth != 0:
            gradient_kernel(self.smooth)  # raises for a bad width
        checks.choice("backend", self.backend, self.BACKENDS, verb="supported")
        if self.backend == "art":
            require_tensorflow("C-IGM with backend='art'")
            if self.smooth:
                raise ValueError(f"smooth={self.smooth!r} needs backend='compiled': ART's BIM takes the gradient "
                                 "as it is.")
        super()._check_params()

    @property
    def num_classes(self) -> int:
        return int(self.ensemble.output_shape[-1])

    # ----------------------------------------------------------------- targets
    def choose_targets(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Target classes t (n,) for inputs ``x`` with source labels ``labels``."""
        if self.target == "random":
            rng = np.random.default_rng(self.seed)
            shift = rng.integers(1, self.num_classes, size=len(labels))
            return (labels + shift) % self.num_classes
        model = self._parts.mean_field if self.target == "most_conferrable" else self._parts.source
        scores = data.predict(model, x, self.batch_size).astype(np.float64)
        scores[np.arange(len(labels)), labels] = -np.inf
        return np.argmax(scores, axis=1).astype(np.int64)

    # ----------------------------------------------------------------- attack
    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """C-IGM examples for ``x`` (float32 (N, 32, 32, 3) in [0, 1]); ``y`` source labels."""
        x = data.check_images(x)
        if y is not None:
            labels = checks.labels("y", y, len(x), self.num_classes, one_hot=True)
        elif len(x):
            labels = np.argmax(data.predict(self._parts.source, x, self.batch_size), axis=1).astype(np.int64)
        else:
            labels = np.zeros(0, dtype=np.int64)
        targets = self.choose_targets(x, labels) if len(x) else labels.copy()
        self.labels_, self.targets_ = labels, targets
        if len(x) == 0:
            return x.copy()
        ensemble_lib.reseed(self.ensemble, self.seed)
        onehot = data.onehot(targets, self.num_classes)
        log.info("C-IGM (%s, transform %s, smooth %g): %d inputs, eps %.3g, %d steps of %.3g",
                 self.backend, self.transform, self.smooth, len(x), self.eps, self.max_iter, self.eps_step)
        if self.backend == "art":
            return self._generate_art(x, onehot)
        return self._generate_compiled(x, onehot)

    def _generate_art(self, x, onehot):
        from art.attacks.evasion import BasicIterativeMethod

        classifier = _tensorflow_classifier(self._attacked()[0], ensemble_lib.LinearLoss())
        attack = BasicIterativeMethod(
            classifier, eps=float(self.eps), eps_step=float(self.eps_step), max_iter=int(self.max_iter),
            targeted=True, batch_size=int(self.batch_size), verbose=self.verbose,
        )
        return attack.generate(x, y=onehot).astype(np.float32)

    def _generate_compiled(self, x, onehot):
        run = self._attacked()[1]
        out = np.empty_like(x)
        starts = range(0, len(x), self.batch_size)
        if self.verbose:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="C-IGM", leave=False)
        for start in starts:
            stop = start + self.batch_size
            out[start:stop] = run(x[start:stop], onehot[start:stop], self.eps, self.eps_step, self.max_iter)
        return out

    def _attacked(self):
        """The model the steps follow and its compiled loop: the ensemble itself, or the
        ensemble behind the random transformation (restarted from ``seed``); with
        ``smooth``, a loop that blurs each gradient."""
        plain = ensemble_lib.parse_transform(self.transform)[0] == "none"
        if plain and not self.smooth:
            return self.ensemble, self._parts.run
        if self._transformed is None or self._transformed[0] != (self.transform, self.smooth):
            model = self.ensemble if plain else ensemble_lib.with_transform(self.ensemble, self.transform,
                                                                            seed=self.seed)
            loop = _compiled_igm(weakref.ref(model), ensemble_lib.LinearLoss(), self.smooth)
            self._transformed = ((self.transform, self.smooth), model, loop)
        model = self._transformed[1]
        if not plain:
            model.get_layer("transform").reseed(self.seed)
        return model, self._transformed[2]


# --------------------------------------------------------------------------- baselines
class BaselineAttack(Attack):
    """A baseline of the paper (Section IV-C, Table I): an untargeted attack on the source
    model alone, run through ART. Subclasses give their row of :data:`ATTACKS` (``params``)
    and build their ART attack (:meth:`_art_attack`); the rest is shared.

    All attacks run on a ``TensorFlowV2Classifier`` of the model's logits (DeepFool and
    CW-L2 need logits; IGM and PGD use the cross-entropy on logits, which has the same
    gradient direction as on the probabilities but does not vanish where the softmax
    saturates), ``clip_values=(0, 1)``.

    ε and ``constraint`` (default: the attack's ``AttackParams.constraint``): IGM (L-inf)
    and PGD (L2) take ε themselves. DeepFool and CW-L2 have no ε in ART; the paper
    "select[s] only successful adversarial examples from the attack outputs for varying
    perturbation distances", which we read as ``"filter"``: the attack runs once,
    unbounded, and an example is successful only if its perturbation is within ε in the
    attack's norm q (Table I: L-inf for DeepFool, L2 for CW-L2) and it changes the
    model's label; the examples are returned unchanged. (ART's DeepFool always moves
    away from the model's own prediction, whatever ``y``.) ``"project"`` instead
    projects every perturbation onto the ε-ball (and [0, 1]) and judges success there;
    ``"none"`` ignores ε.

    The ART settings of Table I (``params.art_kwargs()``: ``max_iter`` and the others)
    are attack parameters too, with Table I's values as defaults. :meth:`generate`
    returns the examples; ``success_`` then holds the bool mask of the successful ones
    (the model's label differs from ``y`` and the ε rule holds) and ``labels_`` the
    labels moved away from.
    """

    params: AttackParams  # the attack's row of Table I (ATTACKS)
    common_params = ("eps", "constraint", "batch_size", "seed", "compiled_gradient", "verbose")

    def __init__(self, model: keras.Model, eps: float, *, constraint: str | None = None, batch_size: int = 32,
                 seed: int = 0, compiled_gradient: bool = True, verbose: bool = False, **art_params) -> None:
        self.model = model
        self.eps = eps
        self.constraint = type(self).constraint if constraint is None else constraint
        self.batch_size = batch_size
        self.seed = seed
        self.compiled_gradient = compiled_gradient
        self.verbose = verbose
        self._check_names(art_params)
        for name, value in {**self.params.art_kwargs(), **art_params}.items():
            setattr(self, name, value)
        self._check_params()
        self.success_ = None
        self.labels_ = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # The parameters set_params takes: the common ones, then the attack's ART settings;
        # the name, norm and default ε rule are its row of Table I's.
        cls.attack_params = cls.common_params + tuple(cls.params.art_kwargs())
        cls.method, cls.norm, cls.constraint = cls.params.method, cls.params.norm, cls.params.constraint

    def _check_params(self):
        super()._check_params()
        checks.choice("constraint", self.constraint, CONSTRAINTS, verb="supported")
        # The largest distance between two images in [0, 1]: 1 in L-inf, sqrt(32*32*3) in L2.
        upper = 1.0 if self.norm == "inf" else float(np.sqrt(32 * 32 * 3))
        checks.positive_number("eps", self.eps, upper=upper)
        _check_flag("compiled_gradient", self.compiled_gradient)

    def _art_kwargs(self):
        """The ART settings (Table I's and any changed), as keyword arguments."""
        return {name: getattr(self, name) for name in self.params.art_kwargs()}

    def _art_attack(self, classifier, num_classes, common):
        """The ART attack on ``classifier``; ``common``: ``batch_size`` and ``verbose``."""
        raise NotImplementedError

    def generate(self, x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples (float32) of ``x`` (float32 (N, 32, 32, 3) in [0, 1]),
        moving away from ``y`` (int or one-hot labels; default: the model's own)."""
        x = data.check_images(x)
        logits = models.logits_model(self.model)
        num_classes = int(logits.output_shape[-1])
        if y is not None:
            labels = checks.labels("y", y, len(x), num_classes, one_hot=True)
        if len(x) == 0:
            self.labels_, self.success_ = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
            return x.copy()
        if y is None:
            labels = np.argmax(data.predict(logits, x, self.batch_size), axis=1).astype(np.int64)

        loss = keras.losses.CategoricalCrossentropy(from_logits=True, reduction="sum")
        classifier = _tensorflow_classifier(logits, loss, compiled_gradient=self.compiled_gradient)
        attack = self._art_attack(classifier, num_classes, {"batch_size": int(self.batch_size),
                                                            "verbose": self.verbose})
        with _numpy_seed(self.seed):
            x_adv = attack.generate(x, y=data.onehot(labels, num_classes)).astype(np.float32)

        eps, norm = float(self.eps), self.norm
        if self.constraint == "project":
            x_adv = np.clip(x + _project(x_adv - x, eps, norm), 0.0, 1.0).astype(np.float32)
        success = np.argmax(data.predict(logits, x_adv, self.batch_size), axis=1) != labels
        if self.constraint == "filter":
            # A float32 tolerance: a perturbation of exactly ε may round just above it.
            success &= perturbation_norm(x, x_adv, norm) <= eps * (1 + 1e-5) + 1e-7
        log.info("%s eps=%.3g: %d/%d successful", self.method, eps, int(success.sum()), len(x))
        self.labels_, self.success_ = labels, success
        return x_adv


class IGM(BaselineAttack):
    """IGM, iterative FGSM in L-inf (Kurakin, Goodfellow & Bengio, 2017): ART's
    ``BasicIterativeMethod``, untargeted, within the L-inf ε-ball."""

    params = ATTACKS["igm"]

    def _art_attack(self, classifier, num_classes, common):
        from art.attacks.evasion import BasicIterativeMethod

        return BasicIterativeMethod(classifier, eps=float(self.eps), targeted=False, **common, **self._art_kwargs())


class PGD(BaselineAttack):
    """PGD in L2 (Madry et al., 2018): ART's ``ProjectedGradientDescent``, untargeted,
    with ε and the step α in L2 and one random start in the ε-ball."""

    params = ATTACKS["pgd"]

    def _art_attack(self, classifier, num_classes, common):
        from art.attacks.evasion import ProjectedGradientDescent

        return ProjectedGradientDescent(classifier, norm=2, eps=float(self.eps), targeted=False, **common,
                                        **self._art_kwargs())


class DeepFool(BaselineAttack):
    """DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, 2016): ART's ``DeepFool`` on the
    logits, without ε; an example counts if its L-inf perturbation is within ε."""

    params = ATTACKS["deepfool"]

    def _art_attack(self, classifier, num_classes, common):
        from art.attacks.evasion import DeepFool as ArtDeepFool

        kwargs = self._art_kwargs()
        kwargs["nb_grads"] = min(int(kwargs["nb_grads"]), num_classes)
        return ArtDeepFool(classifier, **common, **kwargs)


class CarliniL2(BaselineAttack):
    """CW-L2 (Carlini & Wagner, 2017): ART's ``CarliniL2Method`` on the logits, untargeted,
    without ε; its outputs are not filtered by ε (see :data:`ATTACKS`)."""

    params = ATTACKS["cw"]

    def _art_attack(self, classifier, num_classes, common):
        from art.attacks.evasion import CarliniL2Method

        return CarliniL2Method(classifier, targeted=False, **common, **self._art_kwargs())


def baseline(name: str, model: keras.Model, x: np.ndarray, eps: float, y: np.ndarray | None = None,
             **settings) -> tuple[np.ndarray, np.ndarray]:
    """Run baseline ``name`` (a key of :data:`ATTACKS`: ``"igm"``, ``"pgd"``,
    ``"deepfool"``, ``"cw"``) untargeted on the source ``model`` alone: its class of
    :data:`REGISTRY` with ``settings`` (see :class:`BaselineAttack`; Table I's ART
    settings, e.g. ``max_iter``, among them). Returns ``(x_adv, success)``."""
    checks.choice("name", name, tuple(ATTACKS), verb="supported")
    attack = REGISTRY[name].attack(model, eps, **settings)
    x_adv = attack.generate(x, y)
    return x_adv, attack.success_


# --------------------------------------------------------------------------- registry
# What an attack of the registry attacks (Registered.on).
ATTACKED_MODELS = ("ensemble", "source")


@dataclasses.dataclass(frozen=True)
class Registered:
    """One attack as the runner (:func:`cae.experiments.run_attack`), the tables and the
    figures see it.

    ``attack``: its class (an :class:`Attack`), ``attack(model, eps, **params).generate(x, y)``.
    ``name``: its name in tables and figures. ``norm``: the norm ε is measured in (Table I's q,
    ``"inf"`` or ``"2"``). ``eps_rule``: how the attack is held to ε (one of
    :data:`CONSTRAINTS`, see :class:`BaselineAttack`); ``"project"`` attacks run once per
    ε, the others once for every ε. ``on``: what it attacks, ``"ensemble"`` (the training
    models' ensemble, :func:`cae.experiments.cigm_ensemble`; the run then also takes
    C-IGM's target rule and transform) or ``"source"`` (the source model alone).
    ``outputs``: ``(name, attribute)`` pairs of per-example int arrays the attack leaves
    on itself after :meth:`generate`, kept with the run (C-IGM's target classes).
    ``paper``: Table II of the paper at ε = 0.15 (quoted in :data:`cae.paper.TABLE2`),
    ``((dataset, (transferable, conferrable)), ...)`` for the paper's datasets
    (``"cinic10"``, ``"imagenet32"``); empty for an attack the paper did not run.
    """

    attack: type[Attack]
    name: str
    norm: str
    eps_rule: str
    on: str
    outputs: tuple[tuple[str, str], ...] = ()
    paper: tuple[tuple[str, tuple[float, float]], ...] = ()

    def __post_init__(self):
        checks.choice("norm", self.norm, ("inf", "2"), verb="supported")
        checks.choice("eps_rule", self.eps_rule, CONSTRAINTS, verb="supported")
        checks.choice("on", self.on, ATTACKED_MODELS, verb="supported")

    def paper_scores(self, dataset: str) -> tuple[float | None, float | None]:
        """The paper's (transferable, conferrable) on ``dataset``; (None, None) where it has none."""
        return dict(self.paper).get(dataset, (None, None))


def _quoted(method):
    """``method``'s numbers of Table II as :attr:`Registered.paper` holds them (from :data:`cae.paper.TABLE2`)."""
    return tuple(paper.TABLE2.get(method, {}).items())


def _entry(key, cls, on="source", outputs=()):
    """An attack's registry entry: name, norm and ε rule from the class (a baseline's from
    its row of Table I), Table II's numbers from :data:`cae.paper.TABLE2`."""
    return Registered(cls, cls.method, cls.norm, cls.constraint, on, outputs=outputs, paper=_quoted(key))


# Every attack the runner knows, in Table II's order: C-IGM, then the baselines.
REGISTRY = {
    "cigm": _entry("cigm", CIGM, on="ensemble", outputs=(("target", "targets_"),)),
    "igm": _entry("igm", IGM),
    "pgd": _entry("pgd", PGD),
    "deepfool": _entry("deepfool", DeepFool),
    "cw": _entry("cw", CarliniL2),
}


def registered(method: str) -> Registered:
    """The :data:`REGISTRY` entry of ``method``, or a ValueError naming the known ones."""
    if method not in REGISTRY:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(REGISTRY)}.")
    return REGISTRY[method]
