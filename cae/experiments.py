"""The experiment runner: from a preset to trained models, attacks and per-example results.

Expensive stages (training, attacks) write their outputs to the cache, named by the
hash of everything that determines them; cheap stages (tables, figures) only read them.
"""

import dataclasses
import hashlib
import json
import logging
import subprocess

import numpy as np

from cae import data, paths, presets, zoo

log = logging.getLogger(__name__)

GROUPS = ("train_surrogates", "train_references", "test_surrogates", "test_references")


def git_revision():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=paths.pathlib.Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def source_spec(preset):
    return zoo.TrainSpec(
        architecture=preset.source_architecture, dataset=preset.dataset,
        split=(preset.defender_size, preset.adversary_size, preset.split_seed),
        data="D1", labels="ground_truth", role="source", seed=0, epochs=preset.source_epochs,
        batch_size=preset.batch_size, learning_rate=preset.learning_rate, optimizer=preset.optimizer,
    )


def model_specs(preset):
    """Specs of every model of the preset: ``{"source": spec, group: [spec, ...]}``.

    Training models (used to build the ensemble) learn from the defender's D1; testing
    models (used only to score) from the adversary's D2. Surrogates are distilled from
    the source at T = 1 (Retraining); references learn the ground truth. Seeds differ
    per group and per model, so no two models share a spec.
    """
    source = source_spec(preset)
    specs = {"source": source}
    layout = {
        "train_surrogates": ("D1", "distill", "surrogate", preset.surrogate_epochs, 1000),
        "train_references": ("D1", "ground_truth", "reference", preset.reference_epochs, 2000),
        "test_surrogates": ("D2", "distill", "surrogate", preset.surrogate_epochs, 3000),
        "test_references": ("D2", "ground_truth", "reference", preset.reference_epochs, 4000),
    }
    for group, (split, labels, role, epochs, seed0) in layout.items():
        specs[group] = [
            source.replace(
                architecture=arch, data=split, labels=labels, role=role, epochs=epochs, seed=seed0 + i,
                parent=source.key if labels == "distill" else "",
            )
            for i, arch in enumerate(getattr(preset, group))
        ]
    return specs


def all_specs(specs):
    yield specs["source"]
    for group in GROUPS:
        yield from specs[group]


def train_zoo(preset, store=None, verbose=True):
    """Train (or reuse) every model of the preset; returns ``{name: model(s)}``."""
    store = store or zoo.Zoo(evaluate_on=preset.evaluate_on or None)
    specs = model_specs(preset)
    todo = [s for s in all_specs(specs) if not store.complete(s)]
    log.info("zoo: %d models, %d to train", sum(1 for _ in all_specs(specs)), len(todo))
    models = {"source": store.get(specs["source"], verbose=verbose)}
    for group in GROUPS:
        models[group] = [store.get(s, verbose=verbose) for s in specs[group]]
    return models, specs, store


def attack_inputs(preset, dataset, source):
    """Indices into the training pool of ``preset.attack_inputs`` D1 images that the
    source classifies correctly, drawn with a fixed seed (Alg. 2, line 5)."""
    spec = source_spec(preset)
    d1 = zoo.split_of(dataset, spec)
    order = np.random.default_rng(preset.split_seed + 7).permutation(d1)
    chosen = []
    for start in range(0, len(order), 1024):
        batch = order[start:start + 1024]
        pred = zoo.predict(source, data.to_float(dataset.x_train[batch])).argmax(axis=1)
        chosen.extend(batch[pred == dataset.y_train[batch]].tolist())
        if len(chosen) >= preset.attack_inputs:
            break
    return np.array(chosen[: preset.attack_inputs])


def run_key(*parts):
    """A short hash naming an expensive stage's output by everything that determines it."""
    text = json.dumps([p if not dataclasses.is_dataclass(p) else dataclasses.asdict(p) for p in parts],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
