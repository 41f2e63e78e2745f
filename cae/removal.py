"""Removal attacks: how an adversary tries to break the link to the source (Tables V, VI).

Every attack here leaves the model it is given unchanged and returns a new one. Each
derived model is an ordinary zoo model: :func:`removal_spec` turns the source's
:class:`~cae.zoo.TrainSpec` into the attack's spec (its ``parent`` is the source's key),
the training sets that need special labels or data are registered in
:data:`cae.zoo.TRAINING_SETS` below, and :func:`remove` returns ``zoo.get(spec)``, so
every derived model is cached, resumable, and named by everything that made it.

The adversary holds D2 (``data="D2"``) and white-box access to the source (Section II-D).
The paper: "For fine-tuning and adversarial training we use 10.000 inputs labeled by the
source model and create 1000 adversarial examples. Model extraction uses all the data
available to the adversary." Here these sizes are the preset's ``finetune_examples`` and
``adversarial_examples``; extraction uses all of D2. Every derived model has the
source's architecture (the paper attacks a ResNet20 source with ResNet20 targets).

Model extraction (trained from scratch on D2, ``preset.surrogate_epochs``, the
source's optimiser and learning rate):

``retraining``
    Distillation at T = 1 on the source's softmax (``labels="distill"``).
``jagielski``
    Jagielski et al. (USENIX Security 2020) as the paper describes it (eq. 4): the
    source's softmax M(x) is treated as logits and re-tempered,
    M'(x) = softmax(M(x) / T'). The paper gives no value of T'. We use T' = 0.2: since
    M(x) lies in [0, 1], T' = 1 would give almost uniform labels (a one-hot M(x) becomes
    0.23 on its class for K = 10 and 0.03 for K = 100), while T' = 0.2 keeps about the
    source's confidence for K = 10 (M(x) = (0.8, 0.1, 0.1/8, ...) gives 0.84 on the top
    class) and flattens the ranking of the other classes, which is what separates it
    from Retraining. Option ``jagielski_temperature``.
``papernot``
    Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017). A seed set S_0
    of |D2| / 2^R random D2 images is labelled by the source; in round r a substitute
    F_r is trained on S_r and S_{r+1} = S_r ∪ {clip(x + λ·sign(∇_x log F_r(x)_{O(x)}))}
    where O(x) is the source's label of x (sign(∇ log F_y) = sign(∇ F_y), the Jacobian
    row of the paper, computed from the logits so it does not vanish when the softmax
    saturates). The returned model is F_R, trained on S_R (|D2| images). λ = 0.1 in
    every round (the original's periodic sign flip of λ is not used), R = 3. New points
    are labelled with the source's probabilities (T = 1): the paper runs all its
    distillation attacks with white-box access and soft labels; the original, a
    black-box attack, used hard labels. Round r is its own zoo model (option
    ``papernot_rounds`` = r); its training set is rebuilt from the cached round r - 1
    substitute, so the chain is deterministic and resumes where it stopped.
``knockoff``
    Knockoff Nets (Orekondy et al., CVPR 2019), random selection: a budget of |D2|
    queries drawn at random, without replacement, from a transfer set and labelled with
    the source's probabilities. The paper's transfer set has nine times as many classes
    as the source's task; with the offline CIFAR-10 setup there is no such image pool,
    so the default transfer set is D2 itself, and Knockoff then is Retraining on D2 with
    its own seed. Option ``knockoff_transfer`` (default: the preset's) names another
    dataset whose whole training pool is the transfer set: the ``paper`` preset uses
    ``"imagenet32"`` (100 classes) for its CINIC-10 source. For the ImageNet32 source
    the paper's pool, the other 900 ImageNet classes, is not read by cae: D2 is used.
    Test images are never used, and CIFAR-10 and CINIC-10 cannot serve as each other's
    transfer set: CINIC-10 contains all 60,000 CIFAR-10 images, the test ones included.

Fine-tuning (Section VI-C; Adi et al. 2018's four variants), from the source's weights,
on ``preset.finetune_examples`` random D2 images labelled with the source's hard labels
(argmax), ``preset.finetune_epochs`` epochs, Adam with cosine decay:

``ftll``  fine-tune the last layer only, learning rate 1e-4;
``ftal``  fine-tune all layers, 1e-4;
``rtll``  re-initialise the last layer and train only it, 1e-2 (a fresh linear layer on
          frozen features needs larger steps to learn in a few epochs; on the quick
          preset 1e-3 left it at 0.38 test accuracy, 1e-2 reached 0.66, source 0.69);
``rtal``  re-initialise the last layer and train all layers, 1e-3 (Adam's default; the
          fresh layer's early gradients disturb the whole network, and neither 1e-4,
          3e-4, 3e-3 nor 1e-2 did better on the quick preset).

Adversarial training (``adv_fgm``, ``adv_pgd``, ``adv_igm``): the source is fine-tuned
(all layers, 1e-4, ``preset.finetune_epochs``) on the fine-tuning set plus
``preset.adversarial_examples`` adversarial examples crafted once against the source,
from random inputs of that set, labelled with the source's label of the clean input.
L-inf, ε = 0.03; PGD and IGM take 10 steps of 0.01 (PGD from one random start). ART's
``FastGradientMethod``, ``ProjectedGradientDescent`` and ``BasicIterativeMethod`` on a
``TensorFlowV2Classifier`` of the source's logits.

Ensemble attack (``ensemble``): D2 is split into n = 3 disjoint random parts, a
Retraining surrogate is trained on each, and :func:`ensemble_attack` returns one Keras
model averaging their softmax outputs (average voting), built from built-in layers only.
It is composed from the cached members, not trained, and not cached itself.

Attacking a model the zoo did not train: :func:`remove_model` takes any Keras model and
the adversary's images (the issue's ``remove(source, adversary_data, spec)``); it holds
the source in the zoo under its weight hash and the images as an in-memory dataset, then
runs :func:`remove`. ``cae remove`` is its command line.
"""

import dataclasses
import logging

import numpy as np

from cae import data, paths, zoo

log = logging.getLogger(__name__)

REMOVAL_SEED = 5000  # seeds of removal models (the zoo's groups use 0 and 1000-4999)
JAGIELSKI_TEMPERATURE = 0.2  # T' (our choice; the paper gives none, see the module doc)
PAPERNOT_LAMBDA = 0.1
PAPERNOT_ROUNDS = 3
ADVERSARIAL_EPS = 0.03  # L-inf, pixel units in [0, 1]
ADVERSARIAL_EPS_STEP = 0.01
ADVERSARIAL_MAX_ITER = 10
ADVERSARIAL_METHODS = ("fgm", "pgd", "igm")
FAMILIES = ("model extraction", "fine-tuning", "adversarial training", "ensemble")
# Pairs of datasets that share images: neither may be the other's Knockoff transfer set.
_OVERLAPPING = ({"cifar10", "cinic10"},)


@dataclasses.dataclass(frozen=True)
class RemovalAttack:
    """How one removal attack derives its model from the source.

    ``labels`` names the training set (:data:`cae.zoo.TRAINING_SETS`). ``fine_tune``
    attacks start from the source's weights and use ``preset.finetune_examples`` D2
    images for ``preset.finetune_epochs`` epochs; the others train from scratch on all
    of D2 for ``preset.surrogate_epochs`` epochs. ``learning_rate`` None keeps the
    source's. ``options`` are the attack's settings, as TrainSpec options (any of them
    can be changed through :func:`removal_spec`'s keyword arguments).
    """

    name: str
    family: str
    labels: str
    fine_tune: bool = False
    # Added to REMOVAL_SEED: attacks that would otherwise train the same model (Knockoff
    # on D2 is Retraining) start from different initial weights.
    seed_offset: int = 0
    learning_rate: float | None = None
    options: tuple = ()
    note: str = ""

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"RemovalAttack family {self.family!r}; expected one of {FAMILIES}.")

    def row(self):
        """One line of the settings table (:func:`rows`)."""
        return {
            "Attack": self.name, "Family": self.family, "Training set": self.labels,
            "Init": "source" if self.fine_tune else "scratch",
            "Data": "finetune_examples of D2" if self.fine_tune else "all of D2",
            "Epochs": "finetune_epochs" if self.fine_tune else "surrogate_epochs",
            "lr": self.learning_rate if self.learning_rate is not None else "source's",
            "Settings": ", ".join(f"{k}={v}" for k, v in self.options) or None,
            "note": self.note or None,
        }


def _adversarial(method):
    return RemovalAttack(
        f"Adv. training {method.upper()}", "adversarial training", "adversarial", fine_tune=True,
        learning_rate=1e-4,
        options=(("adversarial_attack", method), ("adversarial_eps", ADVERSARIAL_EPS))
        + ((("adversarial_eps_step", ADVERSARIAL_EPS_STEP), ("adversarial_max_iter", ADVERSARIAL_MAX_ITER))
           if method != "fgm" else ()),
        note="plus preset.adversarial_examples examples crafted against the source",
    )


REMOVAL_ATTACKS = {
    "retraining": RemovalAttack("Retraining", "model extraction", "distill", note="T = 1"),
    "jagielski": RemovalAttack("Jagielski", "model extraction", "jagielski",
                               options=(("jagielski_temperature", JAGIELSKI_TEMPERATURE),),
                               note="labels softmax(M(x) / T')"),
    "papernot": RemovalAttack("Papernot", "model extraction", "papernot",
                              options=(("papernot_lambda", PAPERNOT_LAMBDA), ("papernot_rounds", PAPERNOT_ROUNDS)),
                              note="seed set |D2| / 2^rounds, doubled every round"),
    "knockoff": RemovalAttack("Knockoff", "model extraction", "knockoff", seed_offset=1,
                              note="random selection; transfer set D2 unless knockoff_transfer is set"),
    "ftll": RemovalAttack("FTLL", "fine-tuning", "source_labels", fine_tune=True, learning_rate=1e-4,
                          options=(("train_last_only", True),)),
    "ftal": RemovalAttack("FTAL", "fine-tuning", "source_labels", fine_tune=True, learning_rate=1e-4),
    "rtll": RemovalAttack("RTLL", "fine-tuning", "source_labels", fine_tune=True, learning_rate=1e-2,
                          options=(("reinit_last", True), ("train_last_only", True))),
    "rtal": RemovalAttack("RTAL", "fine-tuning", "source_labels", fine_tune=True, learning_rate=1e-3,
                          options=(("reinit_last", True),)),
    "adv_fgm": _adversarial("fgm"),
    "adv_pgd": _adversarial("pgd"),
    "adv_igm": _adversarial("igm"),
    "ensemble": RemovalAttack("Ensemble attack", "ensemble", "distill", options=(("parts", 3),),
                              note="one Retraining surrogate per part, softmax averaged"),
}
# Options an attack accepts besides its defaults.
_EXTRA_OPTIONS = {"knockoff": ("knockoff_transfer",)}


def rows():
    """The attacks' settings as plain dicts, in the order of Tables V and VI."""
    return [attack.row() for attack in REMOVAL_ATTACKS.values()]


# --------------------------------------------------------------------------- specs
def _check_attack(name):
    if name not in REMOVAL_ATTACKS:
        raise ValueError(f"unknown removal attack {name!r}; choose one of {', '.join(REMOVAL_ATTACKS)}.")
    return REMOVAL_ATTACKS[name]


def _with_options(options, **changes):
    merged = dict(options)
    merged.update(changes)
    return tuple(sorted(merged.items()))


def removal_spec(name, source_spec, preset, **settings):
    """The TrainSpec of removal attack ``name`` applied to the source (a list of n
    member specs for ``"ensemble"``; the last round's spec for ``"papernot"``).

    ``settings`` change the attack's options (e.g. ``jagielski_temperature=0.5``,
    ``papernot_rounds=2``, ``parts=5``, ``knockoff_transfer="imagenet32"``) or its
    ``learning_rate`` / ``epochs``.
    """
    attack = _check_attack(name)
    allowed = tuple(k for k, _ in attack.options) + _EXTRA_OPTIONS.get(name, ()) + ("learning_rate", "epochs")
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"removal attack {name!r} has no setting {', '.join(map(repr, unknown))}; "
                         f"it takes {', '.join(allowed)}.")
    if name == "knockoff" and preset.knockoff_transfer:
        settings.setdefault("knockoff_transfer", preset.knockoff_transfer)
    learning_rate = settings.pop("learning_rate", None)
    epochs = settings.pop("epochs", None)
    options = _with_options(attack.options, **settings)
    if attack.fine_tune:
        learning_rate = learning_rate if learning_rate is not None else attack.learning_rate
        epochs = epochs or preset.finetune_epochs
    else:
        learning_rate = learning_rate if learning_rate is not None else source_spec.learning_rate
        epochs = epochs or preset.surrogate_epochs
    base = source_spec.replace(
        data="D2", labels=attack.labels, parent=source_spec.key, role=name, seed=REMOVAL_SEED + attack.seed_offset,
        init="parent" if attack.fine_tune else "scratch", subset=0, epochs=int(epochs),
        learning_rate=float(learning_rate), temperature=1.0, options=options,
    )
    if attack.fine_tune:
        adversary = source_spec.split[1]
        if preset.finetune_examples > adversary:
            raise ValueError(f"preset.finetune_examples={preset.finetune_examples} is more than the "
                             f"adversary's {adversary} D2 images; use a preset with fewer (e.g. 'smoke') or "
                             "give the adversary more images.")
        base = base.replace(subset=int(preset.finetune_examples))
        if attack.labels == "adversarial":
            base = base.replace(options=_with_options(
                options, adversarial_examples=int(preset.adversarial_examples)))
    if name == "papernot":
        return papernot_specs(base)[-1]
    if name == "ensemble":
        parts = dict(options)["parts"]
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts={parts!r} is not allowed; expected a positive int (number of parts of D2).")
        return [base.replace(seed=REMOVAL_SEED + i, options=_with_options(options, part=i))
                for i in range(parts)]
    return base


def papernot_specs(spec):
    """Specs of every round 0..R of a Papernot spec (round R last)."""
    rounds = spec.option("papernot_rounds")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"papernot_rounds={rounds!r}; expected an int >= 0.")
    seed_size = spec.subset or max(1, spec.split[1] // 2 ** rounds)
    return [spec.replace(subset=seed_size, options=_with_options(spec.options, papernot_rounds=r))
            for r in range(rounds + 1)]


# --------------------------------------------------------------------------- attacks
def remove(name, source_spec, preset, store, verbose=True, **settings):
    """Run removal attack ``name`` on the source and return the derived Keras model.

    The source must be trainable or cached in ``store`` (it is loaded, never changed);
    the derived model is trained or loaded from the zoo. ``settings``: see
    :func:`removal_spec`.
    """
    _check_attack(name)
    if name == "ensemble":
        return ensemble_attack(source_spec, preset, store, n=settings.pop("parts", 3), verbose=verbose,
                               **settings)
    spec = removal_spec(name, source_spec, preset, **settings)
    store.get(source_spec, verbose=verbose)
    log.info("removal attack %s on %s -> %s", name, source_spec.key, spec.key)
    return store.get(spec, verbose=verbose)


def remove_model(name, source, x_adversary, *, preset="quick", architecture=zoo.CLONE, test=None, store=None,
                 verbose=True, **settings):
    """Run removal attack ``name`` on any Keras model and return the derived model.

    :func:`remove` attacks a zoo model; this attacks one the zoo did not train (a
    ``.keras`` file of your own), with the adversary's images:

    ``source``
        A Keras model mapping (N, 32, 32, 3) images in [0, 1] to K class
        probabilities; never changed. It must save and load with ``safe_mode=True``.
    ``x_adversary``
        The adversary's images (uint8, or float32 in [0, 1]): the attack's D2. Every
        attack labels them with the source, as in the paper; no ground truth is needed.
    ``preset``
        A :class:`cae.presets.Preset` (or its name) for the sizes and schedules:
        ``surrogate_epochs`` for extraction, ``finetune_examples`` /
        ``finetune_epochs`` / ``adversarial_examples`` for fine-tuning and adversarial
        training, the batch size, optimiser and learning rate.
    ``architecture``
        For the attacks that train from scratch: ``"clone"`` (the source's own
        architecture, freshly initialised; the paper's surrogates share the source's
        architecture) or a name of :mod:`cae.models`.
    ``test``
        ``(x_test, y_test)`` for the derived model's test accuracy (``metrics.json``).
        Without it, the first 1,000 adversary images labelled by the source stand in,
        so "test accuracy" then means agreement with the source.

    The derived model is cached in ``store`` (default: the zoo in ``$CAE_CACHE_DIR``)
    under a spec that names the source's weight hash and the data's hash, so a rerun
    loads it and a killed run resumes. ``settings``: see :func:`removal_spec`.
    """
    from cae import presets

    _check_attack(name)
    preset = presets.get(preset) if isinstance(preset, str) else preset
    store = store or zoo.Zoo(evaluate_on=preset.evaluate_on or None)
    source_spec = external_source(source, x_adversary, store, preset=preset, architecture=architecture, test=test)
    log.info("removal attack %s on external source %s with %d adversary images", name, source_spec.key,
             source_spec.split[1])
    return remove(name, source_spec, preset, store, verbose=verbose, **settings)


def external_source(source, x_adversary, store, *, preset, architecture=zoo.CLONE, test=None, labels=None,
                    split=None):
    """Put a model the zoo did not train into ``store`` as a source, with the images as
    an in-memory dataset; returns the source's spec (see :func:`remove_model` for the
    arguments). The spec names the source's weight hash and the dataset names the
    images' hash, so the same inputs give the same spec.

    By default the images are all D2 and labelled by the source (an adversary's data).
    ``labels`` gives them ground truth instead, and ``split`` = ``(d1, d2, seed)``
    divides them (the owner's data, :func:`cae.experiments.external_context`)."""
    from cae import models

    if architecture != zoo.CLONE and architecture not in models.ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}; expected {zoo.CLONE!r} (the source's) or one of "
                         f"{', '.join(models.ARCHITECTURES)}.")
    models.check_interface(source, where="the source model")
    num_classes = int(source.output_shape[-1])
    x = _adversary_images(x_adversary, "x_adversary" if labels is None else "x")
    if labels is None:
        y = zoo.predict(source, data.to_float(x)).argmax(axis=1)
    else:
        y = _check_labels(np.asarray(labels), len(x), num_classes)
    if test is None:
        x_test, y_test = x[:1000], y[:1000]
    else:
        x_test = _adversary_images(test[0], "test images")
        y_test = _check_labels(np.asarray(test[1]), len(x_test), num_classes)
    digest = models.arrays_sha256((x, y, x_test, y_test))
    dataset = data.Dataset(f"external-{digest[:16]}", x, y.astype(np.int64), x_test, y_test.astype(np.int64),
                           tuple(str(k) for k in range(num_classes)), digest)
    store.add_dataset(dataset)
    weights = models.weights_sha256(source)
    split = (0, len(x), 0) if split is None else tuple(int(v) for v in split)
    if len(split) != 3 or min(split[:2]) < 0 or split[0] + split[1] > len(x):
        raise ValueError(f"split={split!r} does not fit {len(x)} images; expected (d1, d2, seed) with "
                         "d1 + d2 <= the number of images.")
    spec = zoo.TrainSpec(
        architecture=architecture, dataset=dataset.name, split=split, data="D2" if labels is None else "D1",
        role="source", epochs=1, batch_size=preset.batch_size, learning_rate=preset.learning_rate,
        optimizer=preset.optimizer, augment=preset.augment, options=(("external_weights", weights),),
    )
    if not store.complete(spec):  # the zoo holds the source like a model it trained
        folder = store.folder(spec)
        folder.mkdir(parents=True, exist_ok=True)
        paths.atomic_save(folder / "model.keras", source.save, suffix=".keras")
        paths.atomic_write_json(folder / "spec.json", dataclasses.asdict(spec))
        paths.atomic_write_json(folder / "metrics.json", {"role": "source", "external": True,
                                                          "weights_sha256": weights})
    return spec


def _adversary_images(x, what):
    x = np.asarray(x)
    if x.dtype == np.uint8:
        if x.ndim != 4 or x.shape[1:] != data.IMAGE_SHAPE:
            raise ValueError(f"{what} has shape {x.shape}; expected (N, 32, 32, 3) images (channels last).")
    else:
        x = data.check_images(x, name=what)
    if not len(x):
        raise ValueError(f"{what} holds no images; the attack needs the adversary's data.")
    return x


def ensemble_attack(source_spec, preset, store, n=3, verbose=True, **settings):
    """The ensemble attack: one Retraining surrogate per part of D2 (n disjoint parts),
    averaged into one model (see :func:`average_models`)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is not allowed; expected a positive int (number of parts of D2).")
    specs = removal_spec("ensemble", source_spec, preset, parts=n, **settings)
    store.get(source_spec, verbose=verbose)
    members = [store.get(spec, verbose=verbose) for spec in specs]
    return average_models(members, name=f"ensemble_{n}")


def average_models(members, name="ensemble"):
    """One Keras model whose output is the mean of the members' softmax outputs.

    Built from built-in layers (``Average`` over the member sub-models), so it saves as
    ``.keras`` and loads with ``safe_mode=True``. The members are shared, not copied.
    """
    import keras

    from cae import models

    if not members:
        raise ValueError("average_models needs at least one member model.")
    classes = {int(m.output_shape[-1]) for m in members}
    if len(classes) != 1:
        raise ValueError(f"the members predict different numbers of classes {sorted(classes)}; "
                         "average voting needs models of the same task.")
    for i, member in enumerate(members):
        models.check_interface(member, where=f"ensemble member {i}")
    inputs = keras.Input((32, 32, 3), name="image")
    outputs = [keras.Model(m.inputs[0], m.outputs[0], name=f"member_{i}")(inputs) for i, m in enumerate(members)]
    average = keras.layers.Average(name="average")(outputs) if len(outputs) > 1 else outputs[0]
    return models.check_interface(keras.Model(inputs, average, name=name))


# --------------------------------------------------------------------------- labels
def jagielski_labels(probabilities, temperature):
    """Jagielski et al.'s soft labels: the softmax M(x) taken as logits, re-tempered by
    T' (paper eq. 4): ``softmax(M(x) / T')``."""
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
            and np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"jagielski_temperature={temperature!r} is not allowed; expected a number > 0.")
    logits = np.asarray(probabilities, np.float64) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def _onehot(labels, num_classes):
    return np.eye(num_classes, dtype=np.float32)[labels]


def _check_labels(labels, n, num_classes):
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or (
            n and not 0 <= labels.min() <= labels.max() < num_classes):
        raise ValueError(f"labels have shape {labels.shape} and dtype {labels.dtype}; expected ({n},) "
                         f"integer class indices in [0, {num_classes}).")
    return labels


def _hard_labels(probabilities, spec):
    probabilities = np.asarray(probabilities)
    return _onehot(probabilities.argmax(axis=1), probabilities.shape[1])


def _jagielski_relabel(probabilities, spec):
    return jagielski_labels(probabilities, spec.option("jagielski_temperature", JAGIELSKI_TEMPERATURE))


def _soft_labels(probabilities, spec):
    return np.asarray(probabilities, np.float32)


@zoo.training_set("source_labels", relabel=_hard_labels)
def _source_labels(store, spec, dataset, indices, parent):
    """Fine-tuning: D2 images with the source's hard labels (argmax, one-hot)."""
    x = data.to_float(dataset.x_train[indices])
    labels = store.parent_predictions(spec, dataset, indices, parent).argmax(axis=1)
    return x, _onehot(labels, dataset.num_classes)


@zoo.training_set("jagielski", relabel=_jagielski_relabel)
def _jagielski(store, spec, dataset, indices, parent):
    x = data.to_float(dataset.x_train[indices])
    probs = store.parent_predictions(spec, dataset, indices, parent)
    return x, jagielski_labels(probs, spec.option("jagielski_temperature", JAGIELSKI_TEMPERATURE))


@zoo.training_set("knockoff", relabel=_soft_labels)
def _knockoff(store, spec, dataset, indices, parent):
    transfer = spec.option("knockoff_transfer") or spec.dataset
    budget = len(indices)
    if transfer == spec.dataset:
        images, pool = dataset.x_train, indices
    else:
        if {transfer, spec.dataset} in _OVERLAPPING:
            raise ValueError(f"knockoff_transfer={transfer!r} shares images (test images included) with "
                             f"the source's dataset {spec.dataset!r}; choose a dataset without overlap.")
        other = store.dataset(transfer)
        images, pool = other.x_train, np.arange(len(other.x_train))
    rng = np.random.default_rng(spec.seed)
    chosen = np.sort(rng.choice(pool, size=min(budget, len(pool)), replace=False))
    log.info("knockoff: %d transfer images from %s", len(chosen), transfer)
    x = data.to_float(images[chosen])
    return x, zoo.predict(parent, x).astype(np.float32)


# --------------------------------------------------------------------------- Papernot
def jacobian_sign(model, x, labels, batch_size=256):
    """sign(∂ log F_y(x) / ∂x) for each image x and its label y (F = ``model``'s
    softmax, computed from its logits); same sign as Papernot's Jacobian row ∂F_y/∂x."""
    import keras
    from keras import ops

    from cae import models

    x = data.check_images(x)
    logits = models.logits_model(model)
    num_classes = int(logits.output_shape[-1])
    labels = _check_labels(labels, len(x), num_classes)

    if keras.backend.backend() == "jax":
        import jax

        def picked(batch, onehot, trainable, non_trainable):
            outputs, _ = logits.stateless_call(trainable, non_trainable, batch, training=False)
            return ops.sum(ops.log_softmax(outputs, axis=-1) * onehot)

        compiled = jax.jit(jax.grad(picked))

        def gradient(batch, onehot):
            return compiled(batch, onehot, [v.value for v in logits.trainable_variables],
                            [v.value for v in logits.non_trainable_variables])
    else:
        import tensorflow as tf

        @tf.function(reduce_retracing=True, autograph=False)  # straight-line code: nothing to convert
        def gradient(batch, onehot):
            with tf.GradientTape() as tape:
                tape.watch(batch)
                log_probabilities = ops.log_softmax(logits(batch, training=False), axis=-1)
                picked = ops.sum(log_probabilities * onehot)
            return tape.gradient(picked, batch)

    out = np.empty_like(x)
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        g = gradient(x[start:stop], _onehot(labels[start:stop], num_classes))
        out[start:stop] = np.sign(ops.convert_to_numpy(g))
    return out


def jacobian_augmentation(model, x, labels, lam=PAPERNOT_LAMBDA, batch_size=256):
    """Papernot et al.'s new points: clip(x + λ · sign(∂F_y(x)/∂x), 0, 1)."""
    if not (isinstance(lam, (int, float)) and not isinstance(lam, bool) and np.isfinite(lam) and lam > 0):
        raise ValueError(f"papernot_lambda={lam!r} is not allowed; expected a number > 0.")
    step = np.float32(lam) * jacobian_sign(model, x, labels, batch_size)
    return np.clip(x + step, 0.0, 1.0).astype(np.float32)


def _papernot_set(store, spec, dataset, indices, parent):
    rounds = spec.option("papernot_rounds", 0)
    if rounds == 0:
        x = data.to_float(dataset.x_train[indices])
        return x, zoo.predict(parent, x).astype(np.float32)
    previous = spec.replace(options=_with_options(spec.options, papernot_rounds=rounds - 1))
    x_previous, y_previous = _papernot_set(store, previous, dataset, indices, parent)
    log.info("papernot round %d: substitute %s augments %d points", rounds, previous.key, len(x_previous))
    substitute = store.get(previous)
    x_new = jacobian_augmentation(substitute, x_previous, y_previous.argmax(axis=1),
                                  spec.option("papernot_lambda", PAPERNOT_LAMBDA))
    y_new = zoo.predict(parent, x_new).astype(np.float32)
    return np.concatenate([x_previous, x_new]), np.concatenate([y_previous, y_new])


@zoo.training_set("papernot", relabel=_soft_labels)
def _papernot(store, spec, dataset, indices, parent):
    """Round r's training set S_r: the seed images, augmented r times (see module doc)."""
    return _papernot_set(store, spec, dataset, indices, parent)


# --------------------------------------------------------------------------- adversarial
def adversarial_examples(model, x, labels, method="fgm", eps=ADVERSARIAL_EPS, eps_step=ADVERSARIAL_EPS_STEP,
                         max_iter=ADVERSARIAL_MAX_ITER, seed=0, batch_size=128):
    """Untargeted L-inf adversarial examples against ``model`` with ART (FGM, PGD with
    one random start, or IGM = ART's BasicIterativeMethod), moving away from ``labels``."""
    import keras

    from cae.attacks import require_tensorflow

    require_tensorflow("adversarial training")
    from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    from cae import models

    if method not in ADVERSARIAL_METHODS:
        raise ValueError(f"adversarial_attack={method!r} is not supported; choose one of "
                         f"{', '.join(ADVERSARIAL_METHODS)}.")
    for name, value in (("adversarial_eps", eps), ("adversarial_eps_step", eps_step)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"{name}={value!r} is not allowed; expected a number in (0, 1].")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"adversarial_max_iter={max_iter!r} is not allowed; expected a positive int.")
    x = data.check_images(x)
    logits = models.logits_model(model)
    num_classes = int(logits.output_shape[-1])
    labels = _check_labels(labels, len(x), num_classes)
    classifier = TensorFlowV2Classifier(
        model=logits, nb_classes=num_classes, input_shape=(32, 32, 3), clip_values=(0.0, 1.0),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True, reduction="sum"),
    )
    common = {"eps": float(eps), "targeted": False, "batch_size": int(batch_size)}
    if method == "fgm":
        attack = FastGradientMethod(classifier, norm=np.inf, **common)
    elif method == "pgd":
        attack = ProjectedGradientDescent(classifier, norm=np.inf, eps_step=float(eps_step), max_iter=max_iter,
                                          num_random_init=1, verbose=False, **common)
    else:
        attack = BasicIterativeMethod(classifier, eps_step=float(eps_step), max_iter=max_iter, verbose=False,
                                      **common)
    if len(x) == 0:
        return x.copy()
    from cae.attacks import _numpy_seed  # ART draws random starts from NumPy's global RNG

    with _numpy_seed(seed):
        x_adv = attack.generate(x, y=_onehot(labels, num_classes))
    # Guard against float rounding just outside the ε-ball or [0, 1].
    return np.clip(np.clip(x_adv, x - eps, x + eps), 0.0, 1.0).astype(np.float32)


@zoo.training_set("adversarial")
def _adversarial_set(store, spec, dataset, indices, parent):
    """Fine-tuning set (source's hard labels) plus adversarial examples of random inputs
    of it, crafted against the source and labelled with its label of the clean input."""
    x, y = _source_labels(store, spec, dataset, indices, parent)
    count = int(spec.option("adversarial_examples", 0))
    if not 0 <= count <= len(x):
        raise ValueError(f"adversarial_examples={count} is more than the {len(x)} fine-tuning inputs; "
                         "lower preset.adversarial_examples or raise preset.finetune_examples.")
    pick = np.sort(np.random.default_rng(spec.seed).choice(len(x), size=count, replace=False))
    method = spec.option("adversarial_attack", "fgm")
    log.info("adversarial training: %d %s examples", count, method.upper())
    x_adv = adversarial_examples(
        parent, x[pick], y[pick].argmax(axis=1), method, eps=spec.option("adversarial_eps", ADVERSARIAL_EPS),
        eps_step=spec.option("adversarial_eps_step", ADVERSARIAL_EPS_STEP),
        max_iter=spec.option("adversarial_max_iter", ADVERSARIAL_MAX_ITER), seed=spec.seed,
    )
    return np.concatenate([x, x_adv]), np.concatenate([y, y[pick]])
