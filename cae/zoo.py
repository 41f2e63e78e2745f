"""The model zoo: content-addressed, resumable training of every model the paper needs.

A model is named by the hash of its :class:`TrainSpec` (architecture, dataset, split,
role, label source including the parent model's hash, seed, epochs, optimiser, ...).
Its folder ``$CAE_CACHE_DIR/zoo/<hash>/`` holds::

    model.keras     the trained model (loads with safe_mode=True)
    spec.json       the spec it was trained from
    metrics.json    test accuracy, fidelity to the parent, training time (written last:
                    its presence marks the model complete)
    checkpoint-<epoch>.keras, progress.json
                    while training: the model and optimiser after the last finished
                    epoch (progress.json names the file), so that a killed run resumes
                    from there

Every file is written atomically (temporary file + rename), so an interrupted run never
leaves a partial file that a later run would take as complete. Each epoch draws its
shuffling, augmentation and dropout randomness from (seed, epoch), so a resumed run
continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cae import data, paths

if TYPE_CHECKING:
    import keras

# cae.models imports Keras: it is imported inside the methods that build and load models,
# so that a training worker (cae.cluster) imports this module, then sets up Keras's threads
# and devices, then starts Keras.

log = logging.getLogger(__name__)

# Bump when training code changes in a way that changes results. 2: a model that learns
# its parent's outputs is labelled by the parent on the augmented images it trains on.
SPEC_VERSION = 2

# How a model's training set is made (``TrainSpec.labels``): name -> function
# ``(zoo, spec, dataset, indices, parent) -> (x float32 in [0, 1], y soft labels)``.
# The zoo registers ``ground_truth`` and ``distill``; ``cae.removal`` registers the removal
# attacks' training sets (and the robust C-IGM members'): import it before building or
# training a spec that names one (the runner, the CLI and the cluster's workers do).
TRAINING_SETS = {}
# Training sets whose labels are the parent's answers to the images: name -> function
# ``(parent probabilities, spec) -> labels``. Each epoch the parent answers the
# augmented images themselves (a query labels the input the model trains on, as in
# the paper's Retraining and Beyer et al.'s "consistent teacher"), not the clean images.
RELABEL = {}
# Training sets whose model is built, fitted or scored other than the default way: name ->
# {"build": ..., "fit": ..., "task": ...} (see :func:`training_set`). Registered by
# ``cae.removal`` (pruning, transfer learning, adversarial extraction).
TRAINING_HOOKS = {}
# The TrainSpec options each training set reads, besides the zoo's own (:data:`TRAIN_OPTIONS`):
# name -> option names, as declared by :func:`training_set`.
TRAINING_OPTIONS = {}
# The TrainSpec options the zoo itself reads, valid with every training set (see TrainSpec).
# ``external_weights`` names the weights of a model the zoo holds but did not train.
TRAIN_OPTIONS = ("reinit_last", "train_last_only", "subset_seed", "part", "parts", "label_smoothing", "mixup",
                 "external_weights", "schedule", "ema", "snapshots")


def training_set(name: str, relabel: Callable | None = None, *, options: Sequence[str] = (),
                 build: Callable | None = None, fit: Callable | None = None, task: Callable | None = None,
                 ) -> Callable[[Callable], Callable]:
    """Decorator registering a training-set builder under ``name``. ``relabel``: for a
    set labelled by the parent, how the parent's softmax becomes labels (see
    :data:`RELABEL`); the builder's labels are then those of the un-augmented images.
    ``options``: the names of the TrainSpec options the builder and its hooks read; a
    spec of this training set may carry those and the zoo's own (:data:`TRAIN_OPTIONS`).

    Optional hooks (:data:`TRAINING_HOOKS`), for models trained other than by plain
    fitting; each is a pure function of the spec and the zoo, so a resumed run repeats it:

    ``build(zoo, spec, dataset, x, parent) -> model``
        the fresh (uncompiled) model instead of the default one (the parent's copy or a
        new ``spec.architecture``); ``train_last_only`` and compiling still follow.
    ``fit(zoo, spec, model, x, y, parent, epoch) -> loss``
        one epoch on the epoch's shuffled (augmented) images ``x`` and labels ``y``
        instead of ``model.fit``; it must take ``ceil(len(x) / spec.batch_size)``
        optimiser steps (the learning-rate schedule counts them).
    ``task(spec, dataset) -> mapping``
        for a model of another label set: the int array mapping each of the dataset's
        classes to the model's; the metrics then score the model on mapped labels.
    """
    clash = sorted(set(options) & set(TRAIN_OPTIONS))
    if clash:
        raise ValueError(f"training set {name!r} declares {', '.join(clash)}, which the zoo itself reads; "
                         "declare only the options its builder and hooks add.")

    def register(function):
        TRAINING_SETS[name] = function
        TRAINING_OPTIONS[name] = tuple(options)
        if relabel is not None:
            RELABEL[name] = relabel
        hooks = {k: v for k, v in (("build", build), ("fit", fit), ("task", task)) if v is not None}
        if hooks:
            TRAINING_HOOKS[name] = hooks
        return function
    return register


# Training-time augmentation: random crop (4 px, reflect padding) and horizontal flip,
# flip alone, or nothing.
AUGMENTATIONS = ("crop+flip", "flip", "none")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
    """Everything that determines a trained model. Its hash names the model.

    ``split`` is ``(defender_size, adversary_size, split_seed)`` over the dataset's
    training pool; ``data`` picks ``"D1"`` (defender) or ``"D2"`` (adversary);
    ``subset`` keeps a random sample of ``subset`` examples of that split (0 keeps all;
    see :func:`split_of`).
    ``labels="distill"`` trains on the parent's softmax at temperature
    ``temperature`` (the Retraining attack, T = 1); ``"ground_truth"`` on the labels.
    ``init="parent"`` starts from the parent's weights (fine-tuning). ``options`` holds
    extra settings as sorted ``(name, value)`` pairs: the zoo's own (:data:`TRAIN_OPTIONS`:
    ``reinit_last`` re-initialises the logits layer, ``train_last_only`` freezes
    everything else, ``label_smoothing``, ``mixup``, the subset and part settings of
    :func:`split_of`) and the settings its training set reads (declared by
    :func:`training_set`).
    """

    architecture: str
    dataset: str
    split: tuple[int, int, int]
    data: str = "D1"
    subset: int = 0
    labels: str = "ground_truth"
    parent: str = ""
    init: str = "scratch"
    role: str = "source"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 2e-3
    augment: str = "crop+flip"
    temperature: float = 1.0
    options: tuple[tuple[str, object], ...] = ()
    version: int = SPEC_VERSION

    def __post_init__(self):
        if self.data not in ("D1", "D2"):
            raise ValueError(f"TrainSpec.data is {self.data!r}; expected 'D1' or 'D2'.")
        if self.labels not in TRAINING_SETS:
            raise ValueError(f"TrainSpec.labels is {self.labels!r}; expected one of {tuple(TRAINING_SETS)}. "
                             "The removal attacks' training sets are registered when cae.removal is imported: "
                             "import cae.removal before building such a spec.")
        if (self.labels != "ground_truth" or self.init == "parent") and not self.parent:
            raise ValueError("TrainSpec needs parent= (the parent model's key) to distill or fine-tune.")
        allowed = TRAIN_OPTIONS + TRAINING_OPTIONS[self.labels]
        for name, _ in self.options:
            if name not in allowed:
                raise ValueError(f"TrainSpec option {name!r} is unknown for training set {self.labels!r}; "
                                 f"expected one of {allowed} (a training set declares the options it reads: "
                                 "cae.zoo.training_set(options=...)).")
        if self.init not in ("scratch", "parent"):
            raise ValueError(f"TrainSpec.init is {self.init!r}; expected 'scratch' or 'parent'.")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"TrainSpec.augment is {self.augment!r}; expected one of {AUGMENTATIONS}.")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be positive.")
        snapshots = self.option("snapshots", ())
        if not isinstance(snapshots, (tuple, list)) or not all(
                isinstance(e, int) and not isinstance(e, bool) and 1 <= e < self.epochs for e in snapshots):
            raise ValueError(f"TrainSpec option snapshots={snapshots!r}; expected a tuple of epochs in "
                             f"1..{self.epochs - 1} after which to keep the model (snapshot-<epoch>.keras).")

    def option(self, name: str, default: object = None) -> object:
        return dict(self.options).get(name, default)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def key(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def replace(self, **changes) -> TrainSpec:
        return dataclasses.replace(self, **changes)

    def with_options(self, **changes) -> TrainSpec:
        """This spec with options ``changes`` set (added or replaced; kept sorted)."""
        return self.replace(options=merge_options(self.options, **changes))


def merge_options(options: Iterable[tuple[str, object]], **changes) -> tuple[tuple[str, object], ...]:
    """``(name, value)`` option pairs with ``changes`` set, sorted by name."""
    merged = dict(options)
    merged.update(changes)
    return tuple(sorted(merged.items()))


# Learning-rate schedules (option ``schedule``): cosine decay from the start (the default),
# or one cycle: a linear warm-up over the first fifth of the steps, then cosine decay to 0
# (the shape of the fastest CIFAR-10 trainers' schedules).
SCHEDULES = ("cosine", "onecycle")
# TrainSpec.architecture of a model trained from scratch with its parent's architecture
# (re-initialised), for sources that are not cae architectures (cae.removal.remove_model).
CLONE = "clone"


def softmax_with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Re-temper probability vectors: softmax(log p / T)."""
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


@training_set("ground_truth")
def _ground_truth(store, spec, dataset, indices, parent):
    x = data.to_float(dataset.x_train[indices])
    return x, data.onehot(dataset.y_train[indices], dataset.num_classes)


def _tempered(probs, spec):
    probs = np.asarray(probs, np.float32)
    return probs if spec.temperature == 1.0 else softmax_with_temperature(probs, spec.temperature)


@training_set("distill", relabel=_tempered)
def _distill(store, spec, dataset, indices, parent):
    """Retraining: the parent's softmax (temperature ``spec.temperature``, T = 1 in the
    paper, since an adversary cannot change the temperature of a deployed model)."""
    x = data.to_float(dataset.x_train[indices])
    return x, _tempered(store.parent_predictions(spec, dataset, indices, parent), spec)


def split_of(dataset: data.Dataset, spec: TrainSpec) -> np.ndarray:
    """Indices of ``spec``'s training examples in ``dataset.x_train`` (sorted).

    ``spec.subset`` keeps a random sample of that many examples of the split: the first
    ones of a fixed shuffle of the split (seeded by the split seed), so smaller subsets
    lie inside larger ones. (Not the lowest indices: a pool decoded from image folders
    is sorted by class.) Option ``("subset_seed", s)`` shuffles with ``s`` as well, so
    models with different ``s`` see different samples of the split. Options
    ``("parts", n)`` and ``("part", i)`` then keep the i-th of n disjoint, equally sized
    random parts (the ensemble attack).
    """
    defender, adversary, seed = spec.split
    d1, d2 = data.split_indices(len(dataset.y_train), (defender, adversary), seed)
    indices = d1 if spec.data == "D1" else d2
    parts = spec.option("parts")
    if not spec.subset and not parts:
        return indices
    if spec.subset > len(indices):
        raise ValueError(f"TrainSpec.subset is {spec.subset}, but {spec.data} has only {len(indices)} examples; "
                         f"use a subset of at most {len(indices)} (0 keeps all of {spec.data}).")
    shuffle = [seed, 0 if spec.data == "D1" else 1]
    if spec.option("subset_seed") is not None:
        shuffle.append(int(spec.option("subset_seed")))
    order = np.random.default_rng(shuffle).permutation(indices)
    if spec.subset:
        order = order[: spec.subset]
    if parts:
        part = spec.option("part", 0)
        if not (isinstance(parts, int) and parts >= 1 and isinstance(part, int) and 0 <= part < parts):
            raise ValueError(f"TrainSpec options part={part!r}, parts={parts!r}; expected ints with "
                             "0 <= part < parts.")
        order = np.array_split(order, parts)[part]
    return np.sort(order)


def augment_batch(x: np.ndarray, rng: np.random.Generator, pad: int = 4, crop: bool = True) -> np.ndarray:
    """Standard CIFAR augmentation: random crop with ``pad`` reflect padding, h-flip."""
    n = len(x)
    if not crop:
        out = x.copy()
        flip = rng.random(n) < 0.5
        out[flip] = out[flip, :, ::-1]
        return out
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy = rng.integers(0, 2 * pad + 1, n)
    dx = rng.integers(0, 2 * pad + 1, n)
    rows = dy[:, None] + np.arange(32)[None, :]
    cols = dx[:, None] + np.arange(32)[None, :]
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip, :, ::-1]
    return out


def mixup_images(x: np.ndarray, rng: np.random.Generator, alpha: float) -> np.ndarray:
    """Each image blended with another of the batch, λ ~ Beta(α, α) per image: the inputs
    of function matching (Beyer et al. 2022, "Knowledge distillation: A good teacher is
    patient and consistent"), where the teacher labels the blends themselves, so the
    student learns the teacher's function between the images too, not only on them."""
    if not alpha > 0:
        raise ValueError(f"mixup alpha={alpha!r} is not allowed; expected a positive Beta parameter (e.g. 1.0).")
    lam = rng.beta(alpha, alpha, size=(len(x), 1, 1, 1)).astype(np.float32)
    return lam * x + (1.0 - lam) * x[rng.permutation(len(x))]


def test_subset(dataset: data.Dataset, n: int | None = None, seed: int = 0) -> np.ndarray:
    """A fixed random sample of ``n`` test indices (all of them when ``n`` is None)."""
    total = len(dataset.y_test)
    if not n or n >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).permutation(total)[:n])


# The one predict helper is cae.data.predict; cae.cli and the benchmarks call it by this name too.
predict = data.predict


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of float images, accumulated in float64
    (a float32 running sum over millions of pixels drifts by about 1 % in the std)."""
    pixels = x.reshape(-1, x.shape[-1])
    mean = np.einsum("ij->j", pixels, dtype=np.float64) / len(pixels)
    square = np.einsum("ij,ij->j", pixels, pixels, dtype=np.float64) / len(pixels)
    return mean, np.sqrt(np.maximum(square - mean**2, 0.0))


class Zoo:
    """Trains, caches and loads models by spec.

    ``Zoo()`` uses ``$CAE_CACHE_DIR/zoo``. ``get(spec)`` returns the model, training it
    (and, recursively, nothing else: a parent must already be in the zoo) if needed.
    """

    def __init__(self, root: str | os.PathLike | None = None, evaluate_on: int | None = None,
                 datasets: Mapping[str, data.Dataset] | None = None) -> None:
        self.root = pathlib.Path(root) if root else paths.cache_dir() / "zoo"
        self.evaluate_on = evaluate_on  # number of test images for metrics (None = all)
        # Datasets already in memory, by name (tests and notebooks pass small ones).
        self._datasets = dict(datasets or {})
        # A parent's softmax on its dataset's images, filled in as children ask for them:
        # (parent key, dataset name, "train" | "test") -> (probabilities, known mask).
        self._parent_outputs = {}
        self._parents = {}  # parent key -> loaded model (children only predict with it)

    # ------------------------------------------------------------------ paths
    def folder(self, spec: TrainSpec) -> pathlib.Path:
        return self.root / spec.key

    def complete(self, spec: TrainSpec) -> bool:
        return (self.folder(spec) / "metrics.json").exists()

    def metrics(self, spec: TrainSpec) -> dict:
        return json.loads((self.folder(spec) / "metrics.json").read_text())

    def add_dataset(self, dataset: data.Dataset) -> None:
        """Make an in-memory :class:`cae.data.Dataset` available to specs by its name."""
        known = self._datasets.get(dataset.name)
        if known is not None and known.sha256 != dataset.sha256:
            raise ValueError(f"this zoo already holds a different dataset named {dataset.name!r}.")
        self._datasets[dataset.name] = dataset

    def datasets_in_memory(self) -> dict[str, data.Dataset]:
        """The datasets this zoo holds in memory, by name (given, added or loaded so far):
        what a worker of another process needs besides the files (cae.cluster)."""
        return dict(self._datasets)

    def dataset(self, name: str) -> data.Dataset:
        if name not in self._datasets:
            self._datasets[name] = data.load(name)
        return self._datasets[name]

    def parent_predictions(self, spec: TrainSpec, dataset: data.Dataset, indices: np.ndarray, parent: keras.Model,
                           pool: str = "train") -> np.ndarray:
        """``parent``'s softmax on ``dataset``'s ``pool`` images at ``indices``.

        The parent (``spec.parent``) is a fixed model of the zoo, so each image is
        predicted once per zoo: the distilled surrogates of one source share its
        outputs, and so do their fidelity checks."""
        images = dataset.x_train if pool == "train" else dataset.x_test
        memo_key = (spec.parent, spec.dataset, pool)
        if memo_key not in self._parent_outputs:
            self._parent_outputs[memo_key] = (np.zeros((len(images), dataset.num_classes), np.float32),
                                              np.zeros(len(images), bool))
        probs, known = self._parent_outputs[memo_key]
        indices = np.asarray(indices)
        missing = np.unique(indices[~known[indices]])
        if len(missing):
            probs[missing] = predict(parent, data.to_float(images[missing]))
            known[missing] = True
        return probs[indices]

    def _parent(self, key):
        if key not in self._parents:
            self._parents[key] = self.load(key)
        return self._parents[key]

    def load(self, spec_or_key: TrainSpec | str) -> keras.Model:
        import keras  # noqa: F401  (registers layers)

        from cae import models

        key = spec_or_key if isinstance(spec_or_key, str) else spec_or_key.key
        return models.load(self.root / key / "model.keras")

    # ------------------------------------------------------------------ training
    def snapshots(self, spec: TrainSpec, verbose: bool = True) -> list[keras.Model]:
        """The models a spec with option ``snapshots`` kept after those epochs (trained
        first if needed), in epoch order."""
        import keras

        from cae import models

        self.get(spec, verbose=verbose)
        out = []
        for epoch in spec.option("snapshots", ()):
            path = self.folder(spec) / f"snapshot-{epoch}.keras"
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing although {spec.key} is trained; delete "
                                        f"{self.folder(spec)} and train it again to restore its snapshots.")
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
            out.append(models.check_interface(model, where=str(path)))
        return out

    def get(self, spec: TrainSpec, verbose: bool = True) -> keras.Model:
        """The trained model for ``spec``; trains (or resumes) it if not complete."""
        if not self.complete(spec):
            self.train(spec, verbose=verbose)
        return self.load(spec)

    def train(self, spec: TrainSpec, verbose: bool = True) -> keras.Model:
        import keras
        from tqdm.auto import tqdm

        from cae import models

        folder = self.folder(spec)
        folder.mkdir(parents=True, exist_ok=True)
        paths.atomic_write_bytes(folder / "spec.json", (json.dumps(dataclasses.asdict(spec), indent=2, sort_keys=True) + "\n").encode())
        dataset = self.dataset(spec.dataset)
        indices = split_of(dataset, spec)
        parent = self._parent(spec.parent) if spec.parent else None
        x, y = TRAINING_SETS[spec.labels](self, spec, dataset, indices, parent)

        start_epoch, model = self._resume(spec, folder)
        if model is None:
            model = self._fresh_model(spec, dataset, x, parent, models, keras)
        log.info("training %s (%s, %s) from epoch %d of %d", spec.key, spec.role, spec.architecture,
                 start_epoch, spec.epochs)
        started, spent_before = time.time(), self._seconds_so_far(folder)
        progress = tqdm(range(start_epoch, spec.epochs), desc=f"{spec.role} {spec.architecture} {spec.key[:8]}",
                        initial=start_epoch, total=spec.epochs, unit="epoch", disable=not verbose, leave=False)
        for epoch in progress:
            rng = np.random.default_rng([spec.seed, epoch])
            keras.utils.set_random_seed(int(rng.integers(2**31)))
            order = rng.permutation(len(x))
            xe = augment_batch(x[order], rng, crop=spec.augment == "crop+flip") if spec.augment != "none" else x[order]
            if spec.option("mixup") and spec.labels in RELABEL:
                xe = mixup_images(xe, rng, float(spec.option("mixup")))
            relabel = spec.labels in RELABEL and (spec.augment != "none" or spec.option("mixup"))
            ye = self._labels_for(spec, parent, xe) if relabel else y[order]
            fit = TRAINING_HOOKS.get(spec.labels, {}).get("fit")
            if fit is None:
                loss = model.fit(xe, ye, batch_size=spec.batch_size, epochs=1, shuffle=False,
                                 verbose=0).history["loss"][-1]
            else:
                loss = fit(self, spec, model, xe, ye, parent, epoch)
            progress.set_postfix(loss=f"{loss:.3f}")
            # One checkpoint file per epoch; progress.json names the one to resume from and
            # is renamed into place after it, so a kill between the two writes resumes from
            # the previous, still present, checkpoint.
            checkpoint = f"checkpoint-{epoch + 1}.keras"
            paths.atomic_save(folder / checkpoint, model.save, suffix=".keras")
            paths.atomic_write_json(folder / "progress.json", {"epoch": epoch + 1, "checkpoint": checkpoint,
                                    "seconds": spent_before + time.time() - started})
            if epoch + 1 in spec.option("snapshots", ()):  # kept: an earlier self, e.g. an extra ensemble member
                paths.atomic_save(folder / f"snapshot-{epoch + 1}.keras", model.save, suffix=".keras")
            for old in folder.glob("checkpoint-*.keras"):
                if old.name != checkpoint:
                    old.unlink(missing_ok=True)
        paths.atomic_save(folder / "model.keras", model.save, suffix=".keras")
        metrics = self._evaluate(spec, model, dataset, parent)
        metrics["train_seconds"] = round(spent_before + time.time() - started, 1)
        metrics["resumed_from_epoch"] = start_epoch
        paths.atomic_write_json(folder / "metrics.json", metrics)
        (folder / "progress.json").unlink(missing_ok=True)
        for leftover in folder.glob("checkpoint-*.keras"):
            leftover.unlink(missing_ok=True)
        return model

    @staticmethod
    def _labels_for(spec, parent, images):
        """The parent's labels of exactly the (augmented) images the model trains on."""
        return RELABEL[spec.labels](predict(parent, images), spec).astype(np.float32)

    @staticmethod
    def _seconds_so_far(folder):
        progress = folder / "progress.json"
        return json.loads(progress.read_text())["seconds"] if progress.exists() else 0.0

    def _resume(self, spec, folder):
        from cae import models

        progress = folder / "progress.json"
        if not progress.exists():
            return 0, None
        try:
            state = json.loads(progress.read_text())
            epoch, checkpoint = int(state["epoch"]), folder / state["checkpoint"]
            import keras

            model = keras.saving.load_model(checkpoint, compile=True, safe_mode=True)
            models.check_interface(model, where=str(checkpoint))
        except (OSError, ValueError, KeyError) as err:
            log.warning("cannot resume %s (%s); training from scratch", folder, err)
            return 0, None
        log.info("resuming %s after epoch %d", spec.key, epoch)
        return epoch, model

    def _fresh_model(self, spec, dataset, x, parent, models, keras):
        build = TRAINING_HOOKS.get(spec.labels, {}).get("build")
        if build is not None:
            model = build(self, spec, dataset, x, parent)
        elif spec.init == "parent":
            model = keras.models.clone_model(parent)
            model.set_weights(parent.get_weights())
            if spec.option("reinit_last"):
                keras.utils.set_random_seed(spec.seed)  # the fresh layer is part of the spec
                last = models.last_layer(model)
                fresh = keras.layers.Dense(last.units, name="fresh")
                fresh.build((None, last.kernel.shape[0]))
                last.set_weights(fresh.get_weights())
        elif spec.architecture == CLONE:
            if parent is None:
                raise ValueError(f"TrainSpec.architecture {CLONE!r} copies the parent's architecture; give parent=.")
            keras.utils.set_random_seed(spec.seed)
            model = keras.models.clone_model(parent)  # new layers: freshly initialised weights
        else:
            mean, std = channel_stats(x)
            model = models.build(spec.architecture, dataset.num_classes, mean=mean.tolist(),
                                 std=std.tolist(), seed=spec.seed)
        if spec.option("train_last_only"):
            for layer in model.layers:
                layer.trainable = layer is models.last_layer(model)
        model.compile(optimizer=_optimizer(spec, int(np.ceil(len(x) / spec.batch_size)), keras),
                      loss=keras.losses.CategoricalCrossentropy(
                          label_smoothing=float(spec.option("label_smoothing", 0.0))),
                      jit_compile=models.jit_compile(spec.architecture))
        return model
    def _evaluate(self, spec, model, dataset, parent):
        import keras

        pick = test_subset(dataset, self.evaluate_on)
        x_test = data.to_float(dataset.x_test[pick])
        pred = predict(model, x_test).argmax(axis=1)
        task = TRAINING_HOOKS.get(spec.labels, {}).get("task")
        mapping = None if task is None else np.asarray(task(spec, dataset))
        labels = dataset.y_test[pick] if mapping is None else mapping[dataset.y_test[pick]]
        metrics = {"test_accuracy": float(np.mean(pred == labels)), "test_examples": int(len(pick)),
                   "architecture": spec.architecture, "role": spec.role,
                   "parameters": int(model.count_params()), "backend": keras.backend.backend()}
        if mapping is not None:  # another label set: scored on the mapped labels
            metrics["task_classes"] = int(mapping.max()) + 1
        if parent is not None:
            parent_pred = self.parent_predictions(spec, dataset, pick, parent, pool="test").argmax(axis=1)
            if mapping is not None:
                parent_pred = mapping[parent_pred]
            metrics["fidelity_test"] = float(np.mean(pred == parent_pred))
        return metrics

    # ------------------------------------------------------------------ housekeeping
    def remove(self, spec: TrainSpec) -> None:
        shutil.rmtree(self.folder(spec), ignore_errors=True)


def _optimizer(spec, steps_per_epoch, keras):
    """The spec's optimiser and learning-rate schedule. Option ``ema`` (a momentum, e.g.
    0.99) keeps an exponential moving average of the weights, which replaces them at the
    end of every epoch (Keras finalises the average after each ``fit``; the zoo fits one
    epoch at a time)."""
    steps = spec.epochs * steps_per_epoch
    shape = spec.option("schedule", "cosine")
    if shape not in SCHEDULES:
        raise ValueError(f"TrainSpec option schedule={shape!r}; expected one of {SCHEDULES}.")
    if shape == "onecycle":
        warmup = max(1, steps // 5)
        schedule = keras.optimizers.schedules.CosineDecay(0.0, steps - warmup, warmup_target=spec.learning_rate,
                                                          warmup_steps=warmup)
    else:
        schedule = keras.optimizers.schedules.CosineDecay(spec.learning_rate, steps)
    ema = spec.option("ema")
    extra = {} if not ema else {"use_ema": True, "ema_momentum": float(ema)}
    if spec.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9, **extra)
    return keras.optimizers.Adam(schedule, **extra)


def set_threads_from_env() -> None:
    """Honour ``CAE_THREADS`` for TensorFlow's thread pools (before any op runs).

    Other Keras backends are left alone (JAX sizes its CPU pool from XLA_FLAGS).
    """
    import keras

    threads = os.environ.get("CAE_THREADS")
    if threads and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
