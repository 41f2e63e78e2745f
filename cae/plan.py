"""What a preset's zoo costs before it is trained: models, parameters, FLOPs, wall time.

:func:`plan` lists every model of a preset (:func:`cae.experiments.preset_specs`) with its
architecture's parameters and multiply-accumulates (MACs) per image, counted from the
Keras model (the kernels of its ``Conv2D``, ``DepthwiseConv2D`` and ``Dense`` layers
times the output positions each is applied at; normalisation, activations, pooling and
additions are left out, a few percent at most), and the FLOPs of one epoch of its
training:

    6 x MACs x images        forward (2 FLOPs a MAC) and backward (twice the forward)
  + 2 x MACs(parent) x images  a child labelled by its parent has it answer every
                             augmented image of every epoch (cae.zoo.RELABEL)

Wall time is projected two ways:

* **this machine**: each architecture trains for a few seconds here on random images at
  the preset's batch size (:func:`measure`; Keras ``fit``, as the zoo trains), then
  ``predict``, ``save`` and a model's set-up (building it, tracing ``fit`` and
  ``predict``) are timed too. A model's time is its epochs' training images at that
  rate, plus its parent's answers, one checkpoint per epoch, the augmentation (NumPy,
  timed here as well), the test-set evaluation and its set-up. The measurements are
  cached per machine, backend, thread count, architecture and batch size in
  ``$CAE_CACHE_DIR/plan/throughput.json`` (``remeasure=True`` renews them); they are
  only as good as the machine's load while they ran.
* **a GPU** whose ResNet-20 training throughput (images/s at the preset's batch size) is
  given: other architectures scale by their MACs per image, prediction runs 3x faster
  than training, and checkpoints, augmentation and set-up cost what they cost here.
  MACs are a poor clock for small and depthwise layers on a GPU: this is the order of
  magnitude, not a measurement.

For ``workers`` > 1 the models are list-scheduled in order (:func:`cae.cluster.ordered`),
each on the worker free first and never before its parent has finished, as Ray runs
them. Not counted: loading the dataset, and a Ray task's fresh worker process importing
TensorFlow; N workers on one machine are taken to be as fast as N machines.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cae import cluster, data, experiments, models, paths, presets, zoo

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# What :func:`measure` returns for an architecture.
MEASURES = ("train_images_per_s", "predict_images_per_s", "save_seconds", "setup_seconds")
# The architecture a GPU throughput is given for.
REFERENCE_ARCHITECTURE = "resnet20"


# --------------------------------------------------------------------------- counting
def macs_per_image(model: keras.Model) -> int:
    """Multiply-accumulates of one forward pass of one image through ``model``'s
    ``Conv2D``, ``DepthwiseConv2D`` and ``Dense`` layers (see the module doc)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            height, width = layer.output.shape[1:3]
            total += int(np.prod(layer.kernel.shape)) * int(height) * int(width)
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total


def training_images(spec: zoo.TrainSpec, preset: presets.Preset) -> int:
    """Images in one epoch of ``spec``'s training set, from the preset's sizes alone:
    its subset or split; Papernot's round r doubles its seed set r times; adversarial
    training adds its adversarial examples."""
    images = spec.subset or (preset.defender_size if spec.data == "D1" else preset.adversary_size)
    parts = spec.option("parts")
    if parts:
        images = math.ceil(images / parts)
    if spec.labels == "papernot":
        images *= 2 ** int(spec.option("papernot_rounds", 0))
    return images + int(spec.option("adversarial_examples", 0))


# --------------------------------------------------------------------------- measuring
def _machine_key(batch_size, architecture):
    import keras

    threads = 0
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        threads = tf.config.threading.get_intra_op_parallelism_threads()
    return (f"{platform.node()}|{os.cpu_count()} cpus|{keras.backend.backend()}|threads {threads or 'default'}"
            f"|batch {batch_size}|{architecture}")


def measure(architecture: str, batch_size: int, *, num_classes: int = 10, seconds: float = 3.0,
            ) -> dict[str, float]:
    """Time ``architecture`` here: training images/s (Keras ``fit`` on random images,
    after a first step that traces it, for at least ``seconds`` and two steps),
    prediction images/s, the seconds one checkpoint (``model.save``) takes, and the
    set-up a model costs once (building, compiling, the first ``fit`` and ``predict``
    calls, less what their images cost at the steady rates)."""
    import keras

    started = time.perf_counter()
    model = models.build(architecture, num_classes, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.CategoricalCrossentropy(),
                  jit_compile=models.jit_compile(architecture))  # as the zoo compiles it
    rng = np.random.default_rng(0)
    x = rng.random((8 * batch_size, 32, 32, 3), dtype=np.float32)
    y = data.onehot(rng.integers(0, num_classes, len(x)), num_classes)
    model.fit(x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0)
    first_fit = time.perf_counter() - started
    steps, spent, chunk = 0, 0.0, 2
    while spent < seconds or steps < 2:
        chunk = min(chunk, 8)
        started = time.perf_counter()
        model.fit(x[: chunk * batch_size], y[: chunk * batch_size], batch_size=batch_size, epochs=1,
                  shuffle=False, verbose=0)
        spent += time.perf_counter() - started
        steps += chunk
        chunk *= 2
    train = steps * batch_size / spent
    batch = x[:256]
    started = time.perf_counter()
    model.predict_on_batch(batch)
    first_predict = time.perf_counter() - started
    started = time.perf_counter()
    model.predict_on_batch(batch)
    predict = len(batch) / (time.perf_counter() - started)
    setup = max(0.0, first_fit - batch_size / train) + max(0.0, first_predict - len(batch) / predict)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        model.save(os.path.join(folder, "model.keras"))
        save = time.perf_counter() - started
    log.info("measured %s: train %.0f img/s, predict %.0f img/s, save %.2f s, set-up %.1f s", architecture, train,
             predict, save, setup)
    return {"train_images_per_s": train, "predict_images_per_s": predict, "save_seconds": save,
            "setup_seconds": setup}


def augmentation_seconds_per_image(kind: str = "crop+flip", n: int = 2048, repeats: int = 5) -> float:
    """Seconds per image of :func:`cae.zoo.augment_batch` here, the best of ``repeats``
    batches of ``n`` after one untimed (0 for ``"none"``)."""
    if kind == "none":
        return 0.0
    x = np.random.default_rng(0).random((n, 32, 32, 3), dtype=np.float32)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        zoo.augment_batch(x, np.random.default_rng(0), crop=kind == "crop+flip")
        times.append(time.perf_counter() - started)
    return min(times[1:]) / n


def throughput(architectures: Iterable[str], batch_size: int, augment: str = "none", *, seconds: float = 3.0,
               remeasure: bool = False) -> dict[str, dict[str, float] | float]:
    """:func:`measure` for each architecture and, under ``"augment_seconds_per_image"``,
    :func:`augmentation_seconds_per_image` of ``augment``; from the cache unless
    ``remeasure``. The logits layer (10 or 100 classes) is under 0.1 % of any
    architecture's work, so each is timed with 10 classes."""
    path = paths.cache_dir() / "plan" / "throughput.json"
    cache = json.loads(path.read_text()) if path.exists() else {}
    out = {}
    for architecture in architectures:
        # XLA or not is part of the key: a rate measured without it is not the zoo's.
        key = _machine_key(batch_size, architecture) + (" xla" if models.jit_compile(architecture) is True else "")
        if remeasure or set(MEASURES) - set(cache.get(key, {})):
            cache[key] = measure(architecture, batch_size, seconds=seconds)
            paths.atomic_write_json(path, cache)
        out[architecture] = cache[key]
    key = _machine_key(batch_size, f"augment {augment}")
    if remeasure or key not in cache:
        cache[key] = augmentation_seconds_per_image(augment)
        paths.atomic_write_json(path, cache)
    out["augment_seconds_per_image"] = cache[key]
    return out


# --------------------------------------------------------------------------- scheduling
def makespan(durations: Mapping[str, float], dependencies: Mapping[str, Sequence[str]], workers: int) -> float:
    """Wall time of tasks run in the given order on ``workers`` workers: each starts on
    the worker free first, not before the tasks it depends on have finished.
    ``durations``: {key: seconds} in order; ``dependencies``: {key: [keys]}."""
    free = [0.0] * max(1, int(workers))
    finished = {}
    for key, seconds in durations.items():
        worker = min(range(len(free)), key=free.__getitem__)
        start = max([free[worker]] + [finished[k] for k in dependencies.get(key, ()) if k in finished])
        finished[key] = free[worker] = start + seconds
    return max(finished.values(), default=0.0)


# --------------------------------------------------------------------------- the plan
@dataclasses.dataclass(frozen=True)
class ModelCost:
    """One model of a plan. Seconds are for one worker; ``gpu_seconds`` None without a
    GPU throughput."""

    key: str
    group: str
    role: str
    architecture: str
    parameters: int
    macs_per_image: int
    epochs: int
    images_per_epoch: int
    flops_per_epoch: float
    seconds: float
    gpu_seconds: float | None
    dependencies: tuple[str, ...]


def _groups(preset, extra_references=0):
    specs = experiments.model_specs(preset)
    names = {specs["source"].key: "source"}
    for group in experiments.GROUPS:
        names.update({spec.key: group for spec in specs[group]})
    names.update({spec.key: "extra_references" for spec in experiments.extra_reference_specs(specs, extra_references)})
    return names


def _seconds(epochs, images, evaluate, parent_images, rates, parent_rate, fixed, augment):
    """One model's seconds: its training images, the test evaluation, its parent's
    answers, per epoch a checkpoint and the augmentation, and its set-up once."""
    train_rate, predict_rate = rates
    return (epochs * images / train_rate + evaluate / predict_rate
            + (parent_images / parent_rate if parent_images else 0.0)
            + epochs * (fixed["save_seconds"] + images * augment) + fixed.get("setup_seconds", 0.0))


def plan(preset: presets.Preset, *, removal: bool | str | Iterable[str] | None = False,
         extra_references: int = 0, workers: int = 1, gpu_throughput: float | None = None,
         measured: Mapping[str, dict[str, float] | float] | None = None, seconds: float = 3.0,
         remeasure: bool = False) -> dict[str, object]:
    """The cost plan of ``preset``'s zoo (see the module doc); nothing is trained.

    ``removal``: include the removal attacks' models (:func:`cae.experiments.removal_specs`);
    ``extra_references``: that many extra references (:func:`cae.experiments.extra_reference_specs`).
    ``workers``: project for 1 and this many workers. ``gpu_throughput``: ResNet-20's
    training images/s on one GPU. ``measured``: {architecture: :func:`measure`'s dict,
    ``"augment_seconds_per_image"``: seconds} to use instead of measuring here.
    Returns a dict: ``models`` (a list of :class:`ModelCost`), ``totals`` (``seconds``
    and ``gpu_seconds``, by number of workers; ``training_flops``), ``machine`` and the
    settings.
    """
    import keras

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}; give a number of workers, 1 or more.")
    if gpu_throughput is not None and not gpu_throughput > 0:
        raise ValueError(f"gpu_throughput={gpu_throughput!r}; give ResNet-20's training images per second, > 0.")
    dataset = data.registered(preset.dataset)  # classes and test images, so a plan needs no data
    num_classes, test_images = dataset.num_classes, dataset.test_size
    specs = experiments.preset_specs(preset, removal=removal, extra_references=extra_references)
    by_key = {spec.key: spec for spec in specs}

    def architecture(spec):
        while spec.architecture == zoo.CLONE:
            spec = by_key[spec.parent]
        return spec.architecture

    used = sorted({architecture(spec) for spec in specs})
    counted = {}
    for name in sorted(set(used) | ({REFERENCE_ARCHITECTURE} if gpu_throughput else set())):
        model = models.build(name, num_classes, seed=0)
        counted[name] = (int(model.count_params()), macs_per_image(model))
        keras.backend.clear_session()
    if measured is None:
        measured = throughput(used, preset.batch_size, preset.augment, seconds=seconds, remeasure=remeasure)
    augment = float(measured.get("augment_seconds_per_image", 0.0)) if preset.augment != "none" else 0.0
    evaluate = preset.evaluate_on or test_images

    def gpu_rates(name):  # (training, prediction) images/s, scaled from ResNet-20's by MACs
        train = gpu_throughput * counted[REFERENCE_ARCHITECTURE][1] / counted[name][1]
        return train, 3 * train

    groups = _groups(preset, extra_references)
    rows = []
    for spec in specs:
        name = architecture(spec)
        parameters, macs = counted[name]
        images = training_images(spec, preset)
        parent = architecture(by_key[spec.parent]) if spec.parent in by_key else None
        relabel = spec.labels in zoo.RELABEL and spec.augment != "none" and parent is not None
        flops = 6.0 * macs * images + (2.0 * counted[parent][1] * images if relabel else 0.0)
        # Images the parent answers: every augmented image of every epoch when it relabels,
        # else the clean training images once; then the test images, for the fidelity.
        parent_images = 0
        if parent is not None:
            parent_images = (spec.epochs * images if relabel else images if spec.labels != "ground_truth" else 0)
            parent_images += evaluate
        common = (spec.epochs, images, evaluate, parent_images)
        here = measured[name]
        cpu = _seconds(*common, (here["train_images_per_s"], here["predict_images_per_s"]),
                       measured[parent]["predict_images_per_s"] if parent else 1.0, here, augment)
        gpu = None
        if gpu_throughput:
            gpu = _seconds(*common, gpu_rates(name), gpu_rates(parent)[1] if parent else 1.0, here, augment)
        rows.append(ModelCost(spec.key, groups.get(spec.key, spec.role), spec.role, name, parameters, macs,
                              spec.epochs, images, flops, cpu, gpu, tuple(cluster.dependencies(spec))))
    dependencies = {row.key: row.dependencies for row in rows}
    counts = sorted({1, workers})
    totals = {"models": len(rows), "training_flops": sum(r.flops_per_epoch * r.epochs for r in rows),
              "seconds": {n: makespan({r.key: r.seconds for r in rows}, dependencies, n) for n in counts}}
    if gpu_throughput:
        totals["gpu_seconds"] = {n: makespan({r.key: r.gpu_seconds for r in rows}, dependencies, n) for n in counts}
    return {"preset": preset.name, "removal": removal, "workers": workers, "gpu_throughput": gpu_throughput,
            "batch_size": preset.batch_size, "models": rows, "totals": totals,
            "machine": {"node": platform.node(), "cpus": os.cpu_count(), "backend": keras.backend.backend(),
                        "measured": dict(measured)}}


def _duration(seconds):
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def describe(result: Mapping[str, object]) -> str:
    """The plan as text: one row per group and architecture, then the totals."""
    rows = {}
    for model in result["models"]:
        rows.setdefault((model.group, model.architecture), []).append(model)
    gpu = result["gpu_throughput"]
    lines = [f"plan for preset {result['preset']}" + (" with removal attacks" if result["removal"] else "")
             + f": {result['totals']['models']} models, batch {result['batch_size']}",
             "| group | architecture | models | parameters | MFLOPs/image (train) | epochs | images/epoch "
             "| TFLOPs/epoch | here, each |" + (" GPU, each |" if gpu else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else "")]
    for (group, name), members in rows.items():
        first = members[0]
        here = _duration(sum(m.seconds for m in members) / len(members))
        there = f" {_duration(sum(m.gpu_seconds for m in members) / len(members))} |" if gpu else ""
        lines.append(
            f"| {group} | {name} | {len(members)} | {first.parameters / 1e6:.2f} M "
            f"| {6 * first.macs_per_image / 1e6:.0f} | {first.epochs} | {first.images_per_epoch:,} "
            f"| {first.flops_per_epoch / 1e12:.2f} | {here} |{there}")
    totals, workers = result["totals"], result["workers"]
    flops = totals["training_flops"]
    lines.append(f"training: {flops / 1e15:.2f} PFLOPs in all" if flops >= 1e15 else
                 f"training: {flops / 1e12:.2f} TFLOPs in all")
    here = " / ".join(f"{n} worker{'s' * (n > 1)} {_duration(s)}" for n, s in totals["seconds"].items())
    lines.append(f"this machine ({result['machine']['node']}, {result['machine']['cpus']} CPUs, "
                 f"{result['machine']['backend']}): {here}")
    if gpu:
        there = " / ".join(f"{n} GPU{'s' * (n > 1)} {_duration(s)}" for n, s in totals["gpu_seconds"].items())
        lines.append(f"GPU at {gpu:,.0f} ResNet-20 training images/s: {there}")
    measured = result["machine"]["measured"]
    rates = ", ".join(f"{name} {values['train_images_per_s']:.0f}" for name, values in sorted(measured.items())
                      if isinstance(values, dict))
    lines.append(f"measured here (training images/s): {rates}")
    return "\n".join(lines)


def to_json(result: Mapping[str, object]) -> dict[str, object]:
    """The plan as plain data (``cae zoo plan --json``)."""
    out = dict(result, models=[dataclasses.asdict(m) for m in result["models"]])
    out["totals"] = {k: ({str(n): s for n, s in v.items()} if isinstance(v, dict) else v)
                     for k, v in result["totals"].items()}
    return out
