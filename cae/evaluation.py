"""Measurements of models, which the reports (:mod:`cae.reports`: Tables III–VI, the
verification figure, preprocessing) lay out, and the non-evasiveness game.

* :func:`test_accuracy`, :func:`fidelity_on_d1`, :class:`Meter` (test accuracy, fidelity
  and fingerprint retention with the shared samples loaded once).
* :func:`removal_models`: the models of the removal attacks, trained or loaded.
* :func:`detector_game` (Section V-A, non-evasiveness): can a small CNN tell C-IGM
  fingerprints from benign D1 inputs? (It trains its detector here; its rows are the
  game's only output.)

Fidelity follows the paper: the accuracy of a model on D1 inputs labelled by the source
(a fixed random sample of ``n`` D1 images, the same for every model). Test accuracy is
on the fixed test sample ``zoo.test_subset(dataset, preset.evaluate_on)``, the one the
zoo's metrics use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cae import data, experiments, fingerprint, models, removal, zoo

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

FIDELITY_SEED = 11


# --------------------------------------------------------------------------- measurements
def predicted_labels(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """``model``'s class of every image of ``x``."""
    return zoo.predict(model, x).argmax(axis=1)


def d1_sample(source: keras.Model, dataset: data.Dataset, spec: zoo.TrainSpec, n: int | None,
              seed: int = FIDELITY_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A fixed sample of ``n`` D1 images (float) and the source's labels on them."""
    d1 = zoo.split_of(dataset, spec)
    n = len(d1) if not n else min(int(n), len(d1))
    pick = np.sort(np.random.default_rng(seed).permutation(d1)[:n])
    x = data.to_float(dataset.x_train[pick])
    return x, predicted_labels(source, x)


def fidelity_on_d1(model: keras.Model, source: keras.Model, dataset: data.Dataset, spec: zoo.TrainSpec,
                   n: int | None) -> float:
    """Accuracy of ``model`` on ``n`` D1 inputs labelled by ``source`` (``spec`` is the
    source's spec, which fixes D1)."""
    x, labels = d1_sample(source, dataset, spec, n)
    return float(np.mean(predicted_labels(model, x) == labels))


def test_accuracy(model: keras.Model, dataset: data.Dataset, n: int | None = None) -> float:
    """Accuracy on the fixed test sample of ``n`` images (all when ``n`` is falsy)."""
    pick = zoo.test_subset(dataset, n or None)
    return float(np.mean(predicted_labels(model, data.to_float(dataset.x_test[pick])) == dataset.y_test[pick]))


class Meter:
    """Measures test accuracy, fidelity and retention, with the shared samples loaded once."""

    def __init__(self, context: experiments.Context, fp: fingerprint.Fingerprint) -> None:
        preset, dataset = context.preset, context.dataset
        self.fp = fp
        n = preset.evaluate_on or None
        self.x_d1, self.y_d1 = d1_sample(context.models["source"], dataset, context.specs["source"], n)
        pick = zoo.test_subset(dataset, n)
        self.x_test, self.y_test = data.to_float(dataset.x_test[pick]), dataset.y_test[pick]

    def __call__(self, model: keras.Model, mapping: np.ndarray | None = None) -> dict[str, object]:
        """``mapping``: for a model of another label set (transfer learning), the map of
        the source's classes to its own; labels, fidelity and keys are mapped first."""
        if mapping is None:
            result, mapped = fingerprint.verify(model, self.fp), (lambda labels: labels)
        else:
            result, mapped = removal.verify_transfer(model, self.fp, mapping), (lambda labels: mapping[labels])
        return {"test_accuracy": float(np.mean(predicted_labels(model, self.x_test) == mapped(self.y_test))),
                "fidelity": float(np.mean(predicted_labels(model, self.x_d1) == mapped(self.y_d1))),
                "retention": result.retention, "matches": result.matches}


# --------------------------------------------------------------------------- removal attacks
def removal_models(context: experiments.Context, attacks: Iterable[str] = removal.PAPER_ATTACKS,
                   verbose: bool = False) -> dict[str, keras.Model]:
    """``{attack: derived model}``, trained or loaded through ``context.store``
    (``attacks``: names of :data:`cae.removal.REMOVAL_ATTACKS`, by default the paper's)."""
    return {name: removal.remove(name, context.specs["source"], context.preset, context.store, verbose=verbose)
            for name in attacks}


# --------------------------------------------------------------------------- non-evasiveness
def detector_game(context: experiments.Context, eps_values: Sequence[float] = (0.05, 0.15, 0.25), steps: int = 400,
                  train_fraction: float = 0.7, seed: int = 0) -> list[dict[str, object]]:
    """Section V-A: train a small CNN to tell C-IGM fingerprints from benign D1 inputs.

    The detector trains for about ``steps`` batches of 32, however few the images:
    BatchNorm's moving statistics need a few hundred steps, and 25 steps left it at
    chance on its own training set.

    For each ε: the fingerprints (the C-IGM examples that Extract keeps, conferrability
    on the training models >= the preset's τ) and as many
    benign D1 images that were not attack inputs, split ``train_fraction`` / rest
    (stratified); returns one row per ε with the detector's held-out accuracy
    (0.5 = cannot tell them apart; 1.0 = the adversary can detect and evade queries).
    """
    import keras

    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction={train_fraction!r}; expected a number in (0, 1).")
    d1 = np.setdiff1d(zoo.split_of(context.dataset, context.specs["source"]), context.inputs)
    rows = []
    for eps in eps_values:
        result = experiments.run_attack(context, "cigm", eps)
        x_fp = result["x_adv"][experiments.fingerprint_mask(result, context.preset.tau)]  # Alg. 2's output
        k = len(x_fp)
        if k < 4:
            log.warning("detector game at eps=%s: only %d fingerprints; skipped", eps, k)
            rows.append({"eps": eps, "fingerprints": k, "train": 0, "held out": 0,
                         "held-out accuracy": float("nan"), "train accuracy": float("nan")})
            continue
        rng = np.random.default_rng(seed)
        benign = data.to_float(context.dataset.x_train[np.sort(rng.choice(d1, size=k, replace=False))])
        train, test = [], []
        for cls in (0, 1):  # stratified split
            order = rng.permutation(k)
            cut = max(1, int(round(train_fraction * k)))
            train += [(cls, i) for i in order[:cut]]
            test += [(cls, i) for i in order[cut:]]
        pools = (benign, x_fp)

        def stack(items):
            return (np.stack([pools[c][i] for c, i in items]).astype(np.float32),
                    np.eye(2, dtype=np.float32)[[c for c, _ in items]])

        (x_tr, y_tr), (x_te, y_te) = stack(train), stack(test)
        detector = models.build("cnn", 2, seed=seed)
        detector.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        epochs = max(1, int(np.ceil(int(steps) / np.ceil(len(x_tr) / 32))))
        detector.fit(x_tr, y_tr, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
        acc = lambda x, y: float(np.mean(predicted_labels(detector, x) == y.argmax(axis=1)))  # noqa: E731
        rows.append({"eps": eps, "fingerprints": k, "train": len(x_tr), "held out": len(x_te),
                     "held-out accuracy": acc(x_te, y_te), "train accuracy": acc(x_tr, y_tr)})
        log.info("detector game eps=%s: held-out accuracy %.3f on %d", eps, rows[-1]["held-out accuracy"], len(x_te))
    return rows
