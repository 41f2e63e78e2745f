"""The experiment runner: from a preset to trained models, attacks and per-example results.

Expensive stages (training, attacks) write their outputs to the cache, named by the
hash of everything that determines them; cheap stages (tables, figures) only read them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import weakref
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cae import (attacks, checks, cluster, data, ensemble, fingerprint, paths, preprocessing, presets, removal,
                 scores, stats, zoo)
from cae import models as cae_models  # "models" is a local name throughout this module

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

GROUPS = presets.GROUPS
# A zoo's specs and models by group: "source" -> one, every other group -> a list.
Specs = dict[str, "zoo.TrainSpec | list[zoo.TrainSpec]"]
Models = dict[str, "keras.Model | list[keras.Model]"]


def source_spec(preset: presets.Preset) -> zoo.TrainSpec:
    return zoo.TrainSpec(
        architecture=preset.source_architecture, dataset=preset.dataset,
        split=(preset.defender_size, preset.adversary_size, preset.split_seed),
        data="D1", labels="ground_truth", role="source", seed=0, epochs=preset.source_epochs,
        batch_size=preset.batch_size, learning_rate=preset.learning_rate, optimizer=preset.optimizer,
        augment=preset.augment,
    )


def model_specs(preset: presets.Preset, source: zoo.TrainSpec | None = None) -> Specs:
    """Specs of every model of the preset: ``{"source": spec, group: [spec, ...]}``.

    Training models (used to build the ensemble) learn from the defender's D1; testing
    models (used only to score) from the adversary's D2. Surrogates are distilled from
    the source at T = 1 (Retraining); references learn the ground truth. Seeds differ
    per group and per model, so no two models share a spec. With
    ``preset.training_subset`` the training models each learn from a different random
    sample of D1 of that size (cheaper models, so more of them fit a CPU budget).

    ``source``: the source's spec when it is not the preset's (a model of your own, see
    :func:`external_context`). Models of architecture ``"clone"`` copy the source's
    architecture, freshly initialised, so they name it as their parent.
    """
    source = source or source_spec(preset)
    specs = {"source": source}
    subset = preset.training_subset
    layout = {
        "train_surrogates": ("D1", "distill", "surrogate", preset.training_epochs or preset.surrogate_epochs,
                             1000, subset),
        "train_references": ("D1", "ground_truth", "reference", preset.training_epochs or preset.reference_epochs,
                             2000, subset),
        "valid_surrogates": ("D1", "distill", "surrogate", preset.surrogate_epochs, 5000, 0),
        "valid_references": ("D1", "ground_truth", "reference", preset.reference_epochs, 6000, 0),
        "test_surrogates": ("D2", "distill", "surrogate", preset.surrogate_epochs, 3000, 0),
        "test_references": ("D2", "ground_truth", "reference", preset.reference_epochs, 4000, 0),
    }
    for group, (split, labels, role, epochs, seed0, size) in layout.items():
        specs[group] = [
            source.replace(
                architecture=arch, data=split, labels=labels, role=role, epochs=preset.epochs_for(arch, epochs),
                seed=seed0 + i,
                parent=source.key if labels == "distill" or arch == zoo.CLONE else "", subset=size,
                # Each training model learns from its own random sample of D1, so that
                # together they cover it (when the preset trains them on subsets).
                options=(("subset_seed", seed0 + i),) if size else (),
            )
            for i, arch in enumerate(getattr(preset, group))
        ]
    return specs


# --------------------------------------------------------------------------- robust C-IGM
# Beyond the paper (issue 19): a C-IGM ensemble that also holds adversarially trained
# surrogates and references, so that the fingerprint survives a thief who adversarially
# trains its copy while extracting it (cae.removal's ``adv_extract``). ``members="paper"``
# (the default everywhere) is the paper's ensemble; ``"robust"`` adds these models.
MEMBERS = ("paper", "robust", "snapshots")
ROBUST_GROUPS = ("robust_surrogates", "robust_references")
# Their seeds: model_specs' groups use 0 and 1000-6999 (extra references continue from
# 4000), cae.removal.REMOVAL_SEED 5000 onwards; these ranges no other model uses.
ROBUST_SEEDS = {"robust_surrogates": 7000, "robust_references": 8000}


def _check_robust(preset, needed=False):
    """``preset.robust_members`` and ``preset.robust_attack``, checked; ``needed``: the
    robust ensemble was asked for, so there must be at least one of each."""
    count, attack = preset.robust_members, preset.robust_attack
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"preset {preset.name!r} has robust_members={count!r}; give a whole number of adversarially "
                         "trained surrogates (and as many references), 0 or more, e.g. "
                         "dataclasses.replace(preset, robust_members=2).")
    if needed and count == 0:
        raise ValueError(f"members='robust' needs adversarially trained members, but preset {preset.name!r} has "
                         "robust_members=0; use dataclasses.replace(preset, robust_members=2) (or a preset that "
                         "sets it, such as 'cpu'), or members='paper'.")
    if attack not in removal.ADVERSARIAL_METHODS:
        raise ValueError(f"preset {preset.name!r} has robust_attack={attack!r}; choose one of "
                         f"{', '.join(removal.ADVERSARIAL_METHODS)} ('fgm', one step, is the cheap default).")
    return count, attack


def _check_members(members, method="cigm"):
    if members not in MEMBERS:
        raise ValueError(f"members={members!r} is not allowed; choose one of {', '.join(map(repr, MEMBERS))} "
                         "('paper' is the paper's ensemble, 'robust' adds adversarially trained members, "
                         "'snapshots' the training models' earlier selves).")
    if members != "paper" and attacks.registered(method).on != "ensemble":
        raise ValueError(f"members={members!r} applies to C-IGM's ensemble only; {method!r} attacks the source "
                         "alone, so use members='paper' (the default) with it.")
    return members


def robust_member_specs(preset: presets.Preset, source: zoo.TrainSpec | None = None,
                        ) -> dict[str, list[zoo.TrainSpec]]:
    """Specs of the robust C-IGM's adversarially trained members:
    ``{"robust_surrogates": [...], "robust_references": [...]}``, ``preset.robust_members``
    of each (empty for 0).

    Built like the training models of :func:`model_specs` (D1, ``preset.training_subset``
    with a sample of their own, the architectures of ``train_surrogates`` /
    ``train_references`` in turn, their epochs, the source's optimiser and learning
    rate), with the recipe of the thief's adversarial extraction (``adv_extract``, see
    :mod:`cae.removal`): in every batch the first ``ADVERSARIAL_FRACTION`` (half) of the
    images are replaced by L-inf examples (ε = ``ADVERSARIAL_EPS``, 0.03) of the model
    itself at its current weights, away from the batch's labels. Surrogates learn the
    source's hard labels (label-only extraction: the ``adversarial_extraction`` training
    set, adv_extract on D1); references learn the ground truth (the
    ``adversarial_ground_truth`` training set, registered by :mod:`cae.removal`). A reference
    names the source as its parent only because the zoo asks every training set but
    ``ground_truth`` for one: its labels never query the source (its metrics then hold its
    fidelity to the source).

    ``preset.robust_attack`` is the members' attack while training: ``"fgm"`` (the
    default: one step, one extra gradient per adversarial image, affordable on a CPU) or
    adv_extract's ``"pgd"`` (10 steps of 0.01, one random start; about ten extra
    gradients) or ``"igm"``. ``source``: as in :func:`model_specs`. Seeds:
    :data:`ROBUST_SEEDS`.
    """
    count, attack = _check_robust(preset)
    source = source or source_spec(preset)
    adversarial = {"adversarial_attack": attack, "adversarial_eps": removal.ADVERSARIAL_EPS,
                   "adversarial_fraction": removal.ADVERSARIAL_FRACTION}
    if attack != "fgm":
        adversarial.update(adversarial_eps_step=removal.ADVERSARIAL_EPS_STEP,
                           adversarial_max_iter=removal.ADVERSARIAL_MAX_ITER)
    subset = preset.training_subset
    layout = {
        "robust_surrogates": ("adversarial_extraction", "surrogate", preset.surrogate_epochs, preset.train_surrogates),
        "robust_references": ("adversarial_ground_truth", "reference", preset.reference_epochs,
                              preset.train_references),
    }
    specs = {}
    for group, (labels, role, epochs, architectures) in layout.items():
        if count and not architectures:
            raise ValueError(f"preset {preset.name!r} has no {role}s among its training models to take the robust "
                             f"members' architectures from; give it some, or robust_members=0.")
        seed0 = ROBUST_SEEDS[group]
        specs[group] = [
            source.replace(
                architecture=arch, data="D1", labels=labels, role=role, epochs=preset.epochs_for(arch, epochs),
                seed=seed0 + i, parent=source.key, init="scratch", subset=subset, temperature=1.0,
                options=tuple(sorted({**adversarial, **({"subset_seed": seed0 + i} if subset else {})}.items())),
            )
            for i, arch in ((i, architectures[i % len(architectures)]) for i in range(count))
        ]
    return specs


def snapshot_specs(preset: presets.Preset, source: zoo.TrainSpec | None = None) -> dict[str, list[zoo.TrainSpec]]:
    """The training models' specs with option ``snapshots=preset.snapshot_epochs``
    (``{"train_surrogates": [...], "train_references": [...]}``): the same models, trained
    again under their own keys so that the zoo keeps each one's earlier selves."""
    if not preset.snapshot_epochs:
        raise ValueError(f"preset {preset.name!r} has no snapshot_epochs; set them (e.g. "
                         "dataclasses.replace(preset, snapshot_epochs=(4, 7))) to use members='snapshots'.")
    specs = model_specs(preset, source)
    return {group: [spec.with_options(snapshots=tuple(preset.snapshot_epochs)) for spec in specs[group]]
            for group in ("train_surrogates", "train_references")}


def snapshot_models(context: Context, verbose: bool = False) -> tuple[list[keras.Model], list[keras.Model]]:
    """The snapshot C-IGM's (surrogates, references): each training model, then its
    snapshots (:func:`snapshot_specs`), trained through the zoo if not cached."""
    specs = snapshot_specs(context.preset, context.specs["source"])
    return tuple([model for spec in specs[group]
                  for model in (context.store.get(spec, verbose=verbose), *context.store.snapshots(spec, verbose))]
                 for group in ("train_surrogates", "train_references"))


def robust_models(context: Context, verbose: bool = False) -> tuple[list[keras.Model], list[keras.Model]]:
    """The robust C-IGM's adversarially trained (surrogates, references) for ``context``'s
    source (:func:`robust_member_specs`), trained through the zoo if not cached."""
    specs = robust_member_specs(context.preset, context.specs["source"])
    return tuple([context.store.get(s, verbose=verbose) for s in specs[group]] for group in ROBUST_GROUPS)


def all_specs(specs: Specs) -> Iterator[zoo.TrainSpec]:
    yield specs["source"]
    for group in GROUPS:
        yield from specs[group]


def train_zoo(preset: presets.Preset, store: zoo.Zoo | None = None, verbose: bool = True,
              source: zoo.TrainSpec | None = None,
              ) -> tuple[Models, Specs, zoo.Zoo]:
    """Train (or reuse) every model of the preset; returns ``{name: model(s)}``.
    ``source``: see :func:`model_specs`."""
    store = store or zoo.Zoo(evaluate_on=preset.evaluate_on or None)
    specs = model_specs(preset, source)
    todo = [s for s in all_specs(specs) if not store.complete(s)]
    log.info("zoo: %d models, %d to train", sum(1 for _ in all_specs(specs)), len(todo))
    if todo and os.environ.get("CAE_RAY"):  # "local" or a Ray cluster's address (cae.cluster)
        cluster.train(todo, store=store, address=os.environ["CAE_RAY"], verbose=verbose)
    models = {"source": store.get(specs["source"], verbose=verbose)}
    for group in GROUPS:
        models[group] = [store.get(s, verbose=verbose) for s in specs[group]]
    return models, specs, store


def removal_attacks(chosen: bool | str | Iterable[str] | None) -> list[str]:
    """The removal attacks a ``removal`` setting names: False / None none, True the
    paper's (Tables V / VI), or a list of names or a command line's text (``"all"``,
    ``"paper"``, ``"none"``, comma-separated names; :func:`cae.removal.attack_list`)."""
    if chosen is None or chosen is False:
        return []
    if chosen is True:
        return list(removal.PAPER_ATTACKS)
    return removal.attack_list(chosen if isinstance(chosen, str) else ",".join(chosen))


def removal_specs(preset: presets.Preset, source: zoo.TrainSpec | None = None,
                  attacks: bool | str | Iterable[str] | None = True) -> list[zoo.TrainSpec]:
    """The specs of the removal attacks ``attacks`` names (:func:`removal_attacks`; by
    default the paper's, of Tables V / VI) on the preset's source (the ensemble
    attack's members, Papernot's rounds), parents before children."""
    source = source or source_spec(preset)
    specs = []
    for name in removal_attacks(attacks):
        made = removal.removal_spec(name, source, preset)
        specs.extend(made if isinstance(made, list) else [made])
    return cluster.ordered(specs)


def preset_specs(preset: presets.Preset, removal: bool | str | Iterable[str] | None = False,
                 source: zoo.TrainSpec | None = None, extra_references: int = 0) -> list[zoo.TrainSpec]:
    """Every model of the preset's zoo (:func:`model_specs`), then ``extra_references``
    more independent references (:func:`extra_reference_specs`, the verification
    report's), then the models of the removal attacks ``removal`` names
    (:func:`removal_attacks`); parents before children."""
    grouped = model_specs(preset, source)
    specs = list(all_specs(grouped)) + extra_reference_specs(grouped, extra_references)
    if removal_attacks(removal):
        specs += removal_specs(preset, source or specs[0], removal)
    return cluster.ordered(specs)


def train_preset(preset: presets.Preset, *, address: str | None = None,
                 removal: bool | str | Iterable[str] | None = False, extra_references: int = 0,
                 store: zoo.Zoo | None = None, cpus_per_task: float = 1, gpus_per_task: float = 0.0,
                 verbose: bool = True) -> list[dict] | None:
    """Train the preset's zoo (and ``extra_references`` more independent references and
    the models of the removal attacks ``removal`` names; :func:`preset_specs`).

    ``address`` None trains serially in this process, as ``cae zoo train`` always did
    (``CAE_THREADS`` sets TensorFlow's threads); otherwise on Ray (:func:`cae.cluster.train`).
    """
    store = store or zoo.Zoo(evaluate_on=preset.evaluate_on or None)
    if address is None:
        zoo.set_threads_from_env()
        train_zoo(preset, store=store, verbose=verbose)  # on Ray when CAE_RAY says so, as always
        trained = {spec.key for spec in all_specs(model_specs(preset))}
        for spec in preset_specs(preset, removal=removal, extra_references=extra_references):
            if spec.key not in trained:
                store.get(spec, verbose=verbose)
        return None
    return cluster.train(preset_specs(preset, removal=removal, extra_references=extra_references),
                         store=store, address=address,
                         cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task, verbose=verbose)


def attack_inputs(preset: presets.Preset, dataset: data.Dataset, source: keras.Model,
                  spec: zoo.TrainSpec | None = None) -> np.ndarray:
    """Indices into the training pool of ``preset.attack_inputs`` D1 images that the
    source classifies correctly, drawn with a fixed seed (Alg. 2, line 5). ``spec``:
    the source's, when it is not the preset's."""
    d1 = zoo.split_of(dataset, spec or source_spec(preset))
    order = np.random.default_rng(preset.split_seed + 7).permutation(d1)
    chosen = []
    for start in range(0, len(order), 1024):
        batch = order[start:start + 1024]
        pred = zoo.predict(source, data.to_float(dataset.x_train[batch])).argmax(axis=1)
        chosen.extend(batch[pred == dataset.y_train[batch]].tolist())
        if len(chosen) >= preset.attack_inputs:
            break
    return np.array(chosen[: preset.attack_inputs])


def run_key(*parts: object) -> str:
    """A short hash naming an expensive stage's output by everything that determines it."""
    text = json.dumps([p if not dataclasses.is_dataclass(p) else dataclasses.asdict(p) for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- attacks
@dataclasses.dataclass
class Context:
    """Everything the attack stages need, loaded once: preset, models, specs, inputs."""

    preset: presets.Preset
    dataset: data.Dataset
    models: Models
    specs: Specs
    store: zoo.Zoo
    inputs: np.ndarray  # indices into dataset.x_train (D1, classified correctly by the source)

    @property
    def x(self) -> np.ndarray:
        return data.to_float(self.dataset.x_train[self.inputs])

    @property
    def y(self) -> np.ndarray:
        return self.dataset.y_train[self.inputs]

    def key(self, *parts: object) -> str:
        model_keys = {g: [s.key for s in self.specs[g]] for g in GROUPS}
        return run_key(self.specs["source"].key, model_keys, self.inputs.tolist(), *parts)

    def folder(self) -> pathlib.Path:
        return paths.cache_dir() / "runs" / self.preset.name


def prepare(preset: presets.Preset, verbose: bool = True, store: zoo.Zoo | None = None,
            source: zoo.TrainSpec | None = None) -> Context:
    """Train (or load) the preset's zoo and pick the attack inputs. ``source``: see
    :func:`model_specs`."""
    models, specs, store = train_zoo(preset, store=store, verbose=verbose, source=source)
    dataset = store.dataset(specs["source"].dataset)
    inputs = attack_inputs(preset, dataset, models["source"], specs["source"])
    return Context(preset, dataset, models, specs, store, inputs)


def external_context(source: keras.Model, x: np.ndarray, y: np.ndarray, preset: presets.Preset, *,
                     test: tuple[np.ndarray, np.ndarray] | None = None, architecture: str = zoo.CLONE,
                     store: zoo.Zoo | None = None, verbose: bool = True) -> Context:
    """The context of :func:`prepare` for a model of your own instead of the preset's source.

    ``x``, ``y``: labelled images (uint8, or float32 in [0, 1]; integer labels), the
    pool that takes D1's and D2's place: a seeded random half trains the training
    models (surrogates distilled from ``source``, references on ``y``), the other half
    the testing models that calibrate θ. Ideally the source's own training data, as the
    paper's D1 is. ``test``: ``(x_test, y_test)`` for the zoo's test accuracies (else the
    pool's first 1,000 images stand in, training images: an optimistic accuracy). ``architecture``:
    ``"clone"`` trains every surrogate and reference with the source's architecture,
    freshly initialised; ``None`` keeps the preset's architectures. The preset gives
    the model counts, epochs and attack settings; its sizes shrink to the pool's.
    Everything is cached under the source's weight hash and the data's hash.
    """
    half = len(x) // 2
    store = store or zoo.Zoo(evaluate_on=preset.evaluate_on or None)
    spec = removal.external_source(source, x, store, preset=preset, architecture=architecture or zoo.CLONE,
                                   test=test, labels=y, split=(half, len(x) - half, preset.split_seed))
    # The pool fills D1 and D2: no images are left to take the source's natural mistakes from.
    preset = dataclasses.replace(preset, dataset=spec.dataset, defender_size=half, adversary_size=len(x) - half,
                                 training_subset=min(preset.training_subset, half), mistakes=0)
    if architecture is not None:
        preset = dataclasses.replace(preset, **{group: (architecture,) * len(getattr(preset, group))
                                                for group in GROUPS})
    return prepare(preset, verbose=verbose, store=store, source=spec)


def _predictions(context, x_adv):
    out = {"source_labels": scores.predict_labels([context.models["source"]], x_adv)[0]}
    for group in GROUPS:
        members = context.models[group]
        out[group] = scores.predict_labels(members, x_adv) if members else np.zeros((0, len(x_adv)), np.int64)
    return out


def _cached(path, compute, required=()):
    """Load the npz at ``path``, or compute the dict of arrays, save it atomically, return it.

    A cached file that cannot be read in full (empty, truncated, a flipped byte caught by
    the zip CRC, not an npz) or lacks one of the ``required`` arrays is recomputed and
    replaced, never used.
    """
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as arrays:
                cached = {name: arrays[name] for name in arrays.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            log.warning("recomputing unreadable %s (%s: %s)", path, type(err).__name__, err)
        else:
            missing = sorted(set(required) - set(cached))
            if not missing:
                return cached
            log.warning("recomputing %s: it lacks %s", path, ", ".join(missing))
    result = compute()
    paths.atomic_save(path, lambda tmp: np.savez(tmp, **result), suffix=".npz")
    return result


def cigm_ensemble(context: Context, dropout: float | None = None, aggregate: str = "mean",
                  members: str = "paper") -> keras.Model:
    """C-IGM's ensemble of the source and the training models (:func:`cae.ensemble.compose`).
    ``members="robust"`` also holds the adversarially trained surrogates and references
    of :func:`robust_models` (after the paper's, in each group; trained if not cached)."""
    preset = context.preset
    surrogates, references = context.models["train_surrogates"], context.models["train_references"]
    if _check_members(members) == "robust":
        _check_robust(preset, needed=True)
        robust_surrogates, robust_references = robust_models(context)
        surrogates, references = [*surrogates, *robust_surrogates], [*references, *robust_references]
    elif members == "snapshots":  # the training models retrained with their earlier selves kept
        surrogates, references = snapshot_models(context)
    return ensemble.compose(
        context.models["source"], surrogates, references,
        dropout=preset.dropout if dropout is None else dropout, seed=preset.split_seed, aggregate=aggregate,
    )


def run_attack(context: Context, method: str, eps: float, target: str = "most_conferrable",
               dropout: float | None = None, transform: str = "none", aggregate: str = "mean",
               members: str = "paper", eps_step: float | None = None, smooth: float = 0.0,
               ) -> dict[str, np.ndarray]:
    """Per-example results of ``method`` at ``eps`` on the attack inputs (cached).

    Returns arrays: ``x_adv``; ``success`` (the source's label changed, within the
    attack's ε rule); ``t`` (the source's label of the adversarial example: the key
    the fingerprint would use); for C-IGM ``target`` (the class it aimed for); and the
    labels of every group of models on ``x_adv``. ``transform``: C-IGM's
    (:class:`cae.attacks.CIGM`); ``"none"`` is the paper's attack; ``aggregate``: how the
    ensemble combines its members (:func:`cae.ensemble.compose`; ``"mean"`` is the paper's);
    ``members``: the ensemble's models (:func:`cigm_ensemble`): ``"paper"`` or ``"robust"``,
    the robust C-IGM, whose result also holds the labels of its adversarially trained
    members (``robust_surrogates``, ``robust_references``) and is cached under its own
    name and key (``cigm-robust-*.npz``; the paper's keeps its own). ``eps_step``: C-IGM's
    step size (None: the paper's IGM step, whose runs keep their key); the number of
    steps is the preset's ``attack_iterations``. ``smooth``: C-IGM's translation-invariant
    gradient blur in pixels (0, the paper's, keeps the key).
    """
    preset = context.preset
    entry = attacks.registered(method)
    rate = preset.dropout if dropout is None else dropout
    robust = _check_members(members, method) == "robust"
    if entry.on == "ensemble":  # C-IGM: the paper's transform and aggregate leave its key as it was
        params = (method, target, rate) + ((transform,) if transform != "none" else ()) \
            + (("aggregate", aggregate) if aggregate != "mean" else ())
        settings = {"target": target, "transform": transform, "verbose": True}
        if eps_step is not None and eps_step != attacks.ATTACKS["igm"].eps_step:
            checks.positive_number("eps_step", eps_step, upper=1.0)
            params += ("eps_step", float(eps_step))
            settings["eps_step"] = float(eps_step)
        if smooth:
            attacks.gradient_kernel(smooth)  # raises for a bad width
            params += ("smooth", float(smooth))
            settings["smooth"] = float(smooth)
    else:
        if eps_step is not None or smooth:
            raise ValueError(f"eps_step={eps_step!r}, smooth={smooth!r}: only C-IGM takes them; {method} uses "
                             "Table I's settings.")
        settings = dict(dict(preset.baseline_overrides).get(method, ()))
        params = (method, entry.attack.params, settings)
    if robust:  # named by its members' specs: another count or attack is another run
        _check_robust(preset, needed=True)
        robust_specs = robust_member_specs(preset, context.specs["source"])
        params += ("members", members, {g: [s.key for s in robust_specs[g]] for g in ROBUST_GROUPS})
    elif members == "snapshots":
        params += ("members", members, [s.key for group in snapshot_specs(preset, context.specs["source"]).values()
                                        for s in group])
    # Attacks whose ε only filters their output (or is ignored) run once, unbounded, for every ε.
    limit = dict(preset.baseline_inputs).get(method)
    key = context.key(*params, preset.attack_iterations, float(eps) if entry.eps_rule == "project" else None, limit)
    path = context.folder() / f"{method}{'' if members == 'paper' else '-' + members}-{key}.npz"
    x, y = context.x[:limit], context.y[:limit]

    def compute():
        log.info("attack %s at eps=%s on %d inputs", method, eps, len(x))
        model = cigm_ensemble(context, rate, aggregate, members) if entry.on == "ensemble" \
            else context.models["source"]
        attack = entry.attack(model, eps, max_iter=preset.attack_iterations, seed=preset.split_seed, **settings)
        x_adv = attack.generate(x, y)
        extra = {name: np.asarray(getattr(attack, attribute), dtype=np.int64) for name, attribute in entry.outputs}
        if robust:
            extra.update(zip(ROBUST_GROUPS, (scores.predict_labels(m, x_adv) for m in robust_models(context))))
        return {"x_adv": np.asarray(x_adv, np.float32), **extra, **_predictions(context, x_adv)}

    required = ("x_adv", "source_labels", *GROUPS, *(name for name, _ in entry.outputs)) \
        + (ROBUST_GROUPS if robust else ())
    result = dict(_cached(path, compute, required))
    within = attacks.perturbation_norm(x, result["x_adv"], entry.norm) <= eps * (1 + 1e-5) + 1e-6
    if entry.eps_rule == "none":
        within[:] = True
    result["success"] = (result["source_labels"] != y) & within
    result["t"] = result["source_labels"]
    result["y"] = y
    return result


def summarise(result: Mapping[str, np.ndarray], prefix: str = "test") -> dict[str, object]:
    """Mean transferability (over the group's references) and conferrability of the
    successful examples of one attack run (Section IV-C, Table II)."""
    ok = result["success"]
    t = result["t"][ok]
    row = {"examples": int(len(ok)), "successful": int(ok.sum()), "success_rate": float(ok.mean())}
    if ok.any():
        surrogates = result[f"{prefix}_surrogates"][:, ok]
        references = result[f"{prefix}_references"][:, ok]
        confer = scores.confer(surrogates, references, t)
        row["transferable"] = float(scores.transfer(references, t).mean())
        row["conferrable"] = float(confer.mean())
        # How far the mean over these few examples could move (bootstrap over examples).
        row["conferrable_ci"] = stats.bootstrap_mean_ci(confer)
        row["surrogate_transfer"] = float(scores.transfer(surrogates, t).mean())
    else:
        row.update(transferable=float("nan"), conferrable=float("nan"), surrogate_transfer=float("nan"),
                   conferrable_ci=(float("nan"), float("nan")))
    return row


# --------------------------------------------------------------------------- extract
def fingerprint_mask(result: Mapping[str, np.ndarray], tau: float) -> np.ndarray:
    """Alg. 2's filter on a C-IGM run (as :func:`cae.fingerprint.extract` applies it):
    successful examples with Confer(training surrogates, training references) >= τ."""
    return fingerprint.extract_mask(training_conferrability(result), tau, result["success"])


def training_conferrability(result: Mapping[str, np.ndarray]) -> np.ndarray:
    """Confer(training surrogates, training references) of every example of a C-IGM run."""
    return scores.confer(result["train_surrogates"], result["train_references"], result["t"])


def retentions(result: Mapping[str, np.ndarray], keep: np.ndarray, group: str) -> list[float]:
    """Each model of ``group``'s retention of the examples ``keep``: the fraction it
    labels like the source."""
    t = result["t"][keep]
    return [float(np.mean(labels[keep] == t)) for labels in result[group]]


def natural_mistakes(context: Context, n: int, stable: Sequence[tuple[str, float]] | None = None,
                     at_most: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images the source misclassifies (float32, and their indices into the
    training pool), from the pool's images in neither D1 nor D2: the defender's own
    held-out data, which no model of the zoo trained on. Drawn in a fixed seeded order.

    ``stable`` (the preset's ``mistakes_stable`` by default): input transformations
    ``(kind, strength)`` of :mod:`cae.preprocessing` behind which the source must make
    the same mistake, so that a thief cannot wash the key out by transforming every
    query for free (mirroring them costs a flip-trained model nothing, and 4 in 10 of
    the source's mistakes do not survive it). ``at_most``: return as many as there are,
    up to ``n``, instead of failing when there are fewer."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"mistakes={n!r} is not allowed; expected a positive number of images (0 turns them off).")
    stable = tuple(context.preset.mistakes_stable if stable is None else stable)
    dataset, spec = context.dataset, context.specs["source"]
    defender, adversary, seed = spec.split
    d1, d2 = data.split_indices(len(dataset.y_train), (defender, adversary), seed)
    pool = np.setdiff1d(np.arange(len(dataset.y_train)), np.concatenate([d1, d2]))
    pool = np.random.default_rng([seed, 2]).permutation(pool)
    source = context.models["source"]
    behind = [preprocessing.wrap(source, kind, strength) for kind, strength in stable]
    chosen = []
    for start in range(0, len(pool), 2048):
        batch = pool[start:start + 2048]
        x = data.to_float(dataset.x_train[batch])
        labels = zoo.predict(source, x).argmax(axis=1)
        keep = labels != dataset.y_train[batch]
        for model in behind:
            keep &= zoo.predict(model, x).argmax(axis=1) == labels
        chosen.extend(batch[keep])
        if len(chosen) >= n:
            break
    if len(chosen) < n and not at_most:
        what = f" (the same mistake behind {preprocessing.describe(stable)})" if stable else ""
        raise ValueError(f"only {len(chosen)} images outside D1 and D2 are misclassified by the source{what}; ask for "
                         f"at most {len(chosen)} mistakes (a preset whose D1 and D2 fill the pool has none).")
    chosen = np.asarray(chosen[:n], dtype=np.int64)
    return data.to_float(dataset.x_train[chosen]), chosen


def extract(context: Context, eps: float | None = None, tau: float | None = None, target: str = "most_conferrable",
            transform: str | None = None, mistakes: int | None = None,
            mistakes_stable: Sequence[tuple[str, float]] | None = None,
            smooth: float | None = None) -> fingerprint.Fingerprint:
    """Alg. 2 on the preset's zoo: C-IGM (``transform`` and ``smooth``, its gradient
    blur: the preset's by default) on the training models' ensemble, keep examples with
    Confer(training surrogates, training references) >= τ (:func:`cae.fingerprint.extract`),
    then calibrate verification (:func:`calibration_models`). Returns a calibrated
    Fingerprint.

    ``mistakes`` (beyond the paper; 0 is the paper's, None the preset's
    ``mistakes``): also key that many natural images the source misclassifies
    (:func:`natural_mistakes`) by its wrong label. A derived model tends to copy the
    source's mistakes, an independent one makes its own; they are calibrated like the
    adversarial keys. ``mistakes_stable`` (None: the preset's): the input
    transformations behind which the source must repeat each mistake
    (:func:`natural_mistakes`). The README's "Natural mistakes" section has the
    measurements."""
    preset = context.preset
    mistakes = preset.mistakes if mistakes is None else mistakes
    mistakes_stable = tuple(preset.mistakes_stable if mistakes_stable is None else mistakes_stable)
    eps = preset.epsilon if eps is None else eps
    tau = preset.tau if tau is None else tau
    transform = preset.transform if transform is None else transform
    smooth = preset.smooth if smooth is None else smooth
    result = run_attack(context, "cigm", eps, target=target, transform=transform, smooth=smooth)
    fp, keep = fingerprint.extract(
        context.models["source"], result["x_adv"], training_conferrability(result), tau=float(tau),
        success=result["success"],
        attack="C-IGM", epsilon=float(eps), dataset=context.specs["source"].dataset,
        source_model_hash=context.specs["source"].key, targets=result["target"], originals=context.x,
        created_with={"preset": preset.name, "target": target, "transform": transform, "smooth": float(smooth),
                      "dropout": preset.dropout,
                      "iterations": preset.attack_iterations, "inputs": int(len(context.inputs)),
                      "train_surrogates": len(context.specs["train_surrogates"]),
                      "train_references": len(context.specs["train_references"])},
    )
    log.info("extract: %d of %d adversarial examples have conferrability >= %.2f on the training models",
             int(keep.sum()), int(result["success"].sum()), tau)
    if mistakes:
        x_m, indices = natural_mistakes(context, mistakes, stable=mistakes_stable)
        keys_m = zoo.predict(context.models["source"], x_m).argmax(axis=1)
        created = {**fp.manifest["created_with"], "mistakes": int(len(x_m)),
                   "mistakes_stable": [[kind, float(strength)] for kind, strength in mistakes_stable],
                   "mistakes_pool_indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest()}
        fp = fingerprint.create(context.models["source"], np.concatenate([fp.x, x_m]), attack=fp.manifest["attack"],
                                epsilon=fp.manifest["epsilon"], tau=fp.manifest["tau"], dataset=fp.manifest["dataset"],
                                source_model_hash=fp.manifest["source_model_hash"], created_with=created,
                                targets=None if fp.targets is None else np.concatenate([fp.targets, keys_m]),
                                originals=None if fp.originals is None else np.concatenate([fp.originals, x_m]))
        # Mistakes first, in order of evidence (fingerprint.head serves a query budget).
        cigm = fp.n - len(x_m)
        order = [*(cigm + mistake_order(context, x_m, keys_m)).tolist(), *range(cigm)]
        fp = fingerprint.Fingerprint(x=fp.x, keys=fp.keys, targets=fp.targets, originals=fp.originals,
                                     manifest={**fp.manifest, "key_order": order})
    surrogates, references, described = calibration_models(context)
    transformations = affordable_transformations(context)
    described += (f"; references also behind {len(transformations)} input transformations that cost the source at "
                  f"most {MAX_ACCURACY_DROP:.0%} test accuracy" if transformations else "")
    return fp.with_calibration(fingerprint.calibrate(fp, surrogates, references, models=described,
                                                     transformations=transformations))


def mistake_order(context: Context, x: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Natural mistakes ``x`` keyed by the source's ``keys``, in order of evidence (indices
    into them): those the fewest training references repeat first, then those the most
    training surrogates repeat; ties in pool order. The training models judge, since the
    mistakes were not chosen against them (the validation models that calibrate must
    not, and the C-IGM keys cannot be ranked this way: the attack optimised against
    exactly these models). What a budget of the first N buys on held-out models:
    ``reproduce/verification.py``'s ``verification_keys`` table (README, "A query budget")."""
    def repeating(group):  # per mistake, how many of the group give the source's label
        return sum((zoo.predict(m, x).argmax(axis=1) == keys for m in context.models.get(group, [])),
                   np.zeros(len(keys), int))
    return np.lexsort((-repeating("train_surrogates"), repeating("train_references")))


# A derived model that lost more test accuracy than this is a failed theft (the paper's
# Table V discussion: an attack must keep the model useful); so is a transformation.
MAX_ACCURACY_DROP = 0.10


def affordable_transformations(context: Context, max_drop: float = MAX_ACCURACY_DROP) -> list[tuple[str, float]]:
    """The input transformations of :data:`cae.preprocessing.SWEEPS` that cost the source
    at most ``max_drop`` test accuracy (on the preset's evaluation images): those a thief
    could put in front of a stolen model for free. Verification is calibrated on the
    references behind each of them, so that none of them turns an independent model
    into an accused one."""
    pick = zoo.test_subset(context.dataset, context.preset.evaluate_on or None)
    source = context.models["source"]
    # The same source model (and weights), images and sweep give the same answer: measured
    # once a process (extract's calibration and the benchmarks each ask for it).
    memo = (cae_models.weights_sha256(source), context.dataset.name, hashlib.sha256(np.asarray(pick)).hexdigest(),
            float(max_drop), repr(preprocessing.SWEEPS))
    known = _AFFORDABLE.setdefault(source, {})
    if memo in known:
        return list(known[memo])
    x, y = data.to_float(context.dataset.x_test[pick]), context.dataset.y_test[pick]
    base = float(np.mean(zoo.predict(source, x).argmax(axis=1) == y))
    chosen = []
    for kind, strengths in preprocessing.SWEEPS.items():
        for strength in strengths:
            accuracy = float(np.mean(zoo.predict(preprocessing.wrap(source, kind, strength), x).argmax(axis=1) == y))
            if base - accuracy <= max_drop + 1e-12:
                chosen.append((kind, strength))
    log.info("affordable transformations (at most %.0f%% accuracy): %s", 100 * max_drop, chosen)
    known[memo] = tuple(chosen)
    return chosen


# Per source model (forgotten with it): its affordable transformations per setting.
_AFFORDABLE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def calibration_models(context: Context) -> tuple[list[keras.Model], list[keras.Model], str]:
    """The models verification is calibrated on: the preset's validation models (trained
    on D1, not in the ensemble), or, for a preset without them, its testing models
    (then the testing models' scores are in-sample). Returns (surrogates, references,
    description)."""
    if context.models.get("valid_surrogates") and context.models.get("valid_references"):
        group, what = "valid", "validation models (D1, not in the C-IGM ensemble)"
    else:
        group, what = "test", "testing models (the preset has no validation models: scores on them are in-sample)"
    surrogates, references = context.models[f"{group}_surrogates"], context.models[f"{group}_references"]
    return surrogates, references, f"{len(surrogates)} surrogates and {len(references)} references: {what}"


# Training recipes of the extra references, in turn: the testing references' own, SGD with
# momentum and label smoothing, and flips alone with a smaller Adam step. Independent
# models trained differently from the source are negatives a fingerprint must not flag.
EXTRA_RECIPES = (
    {},
    {"optimizer": "sgd", "learning_rate": 0.05, "options": (("label_smoothing", 0.1),)},
    {"augment": "flip", "learning_rate": 2e-3},
)


def extra_reference_specs(specs: Specs, n: int) -> list[zoo.TrainSpec]:
    """``n`` more independent references (D2, ground truth) with seeds no other model of
    ``specs`` uses: more negatives for verification than the preset's few. Model ``i``
    uses recipe ``i mod 3`` of :data:`EXTRA_RECIPES` and the testing references'
    architectures in turn, offset so that recipes and architectures combine."""
    import itertools

    if n < 0:
        raise ValueError(f"extra references: {n}; give a number of models, 0 or more.")
    base, used = specs["test_references"], {s.seed for s in all_specs(specs)}
    seeds = itertools.islice((seed for seed in itertools.count(base[0].seed) if seed not in used), n)
    out = []
    for i, seed in enumerate(seeds):
        recipe = EXTRA_RECIPES[i % len(EXTRA_RECIPES)]
        out.append(base[(i + i // len(EXTRA_RECIPES)) % len(base)].replace(seed=seed, **recipe))
    return out
