"""Success scores of targeted adversarial examples (Section IV-B, eqs. 12-14).

All functions are vectorised over models x examples. Predicted labels come as an int
array ``preds`` of shape (n_models, n_examples) (one row per model, see
:func:`predict_labels`) and target labels ``t`` of shape (n_examples,)::

    Adv(M, x)         = 1[M(x) = t]                                 (eq. 12)
    Transfer(M, x)    = mean over M in M of Adv(M, x)               (eq. 13)
    Confer(S, R, x)   = Transfer(S, x) · (1 - Transfer(R, x))       (eq. 14)

The paper computes transferability over the reference models only and
conferrability over the surrogates S and the references R.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from cae import checks, data

if TYPE_CHECKING:
    import keras


def _check_pair(preds, t, name="preds"):
    preds = checks.labels(name, preds, per_model=True)
    t = checks.labels("t", t)
    if preds.shape[1] != t.shape[0]:
        raise ValueError(
            f"{name} has {preds.shape[1]} examples per model but t has {t.shape[0]} targets; "
            "they must match."
        )
    if preds.shape[0] == 0:
        raise ValueError(f"{name} holds no models (shape {preds.shape}); give at least one.")
    return preds, t


def adv(preds: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Adv (eq. 12): bool (n_models, n_examples), True where model m predicts t."""
    preds, t = _check_pair(preds, t)
    return preds == t[None, :]


def transfer(preds: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Transfer (eq. 13): float (n_examples,), the fraction of models predicting t."""
    return adv(preds, t).mean(axis=0)


def confer(surrogate_preds: np.ndarray, reference_preds: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Confer (eq. 14): Transfer(S, x) · (1 - Transfer(R, x)), float (n_examples,)."""
    surrogate_preds, t = _check_pair(surrogate_preds, t, "surrogate_preds")
    reference_preds, _ = _check_pair(reference_preds, t, "reference_preds")
    return transfer(surrogate_preds, t) * (1.0 - transfer(reference_preds, t))


def predict_labels(models: Iterable[keras.Model], x: np.ndarray, batch_size: int = 256,
                   check_range: bool = True) -> np.ndarray:
    """Predicted classes of each model on ``x``: int64 array (n_models, n_examples).

    ``x`` must be a float batch, finite and (unless ``check_range`` is False, as for
    points off the image cube in a decision-space plot) in [0, 1].
    """
    models = list(models)
    if not models:
        raise ValueError("models is empty; give at least one model to predict with.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r}; expected a positive int.")
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x has shape {x.shape}; expected a batch (n_examples, ...).")
    if len(x) == 0:
        return np.zeros((len(models), 0), dtype=np.int64)
    x = data.check_images(x, shape=None, in_range=check_range)
    labels = np.empty((len(models), len(x)), dtype=np.int64)
    for i, model in enumerate(models):
        labels[i] = np.argmax(data.predict(model, x, int(batch_size)), axis=-1)
    return labels
