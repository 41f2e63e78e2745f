"""Argument checks shared by cae's modules: each raises a ValueError that names the
argument, the value given and what is allowed (the ART / Keras style of errors).

:func:`labels` is the one check of class-label arrays (the attacks' ``y``, the scores'
predictions and targets, a fingerprint's keys and targets, the removal attacks' labels).
Image batches are checked beside their data (:func:`cae.data.check_images`), a model's
interface in :func:`cae.models.check_interface`.
"""

from __future__ import annotations

import numbers

from collections.abc import Collection

import numpy as np


def choice(name: str, value: object, allowed: Collection, verb: str = "allowed") -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not {verb}; choose one of {', '.join(map(repr, allowed))}.")


def number(name: str, value: object, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> None:
    """A finite number in [``low``, ``high``] (``low_open``: above ``low``); a bound of None is no bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name}={value!r} is not allowed; expected a finite number.")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name}={value!r} is not allowed; expected a number {'>' if low_open else '>='} {low}.")
    if high is not None and value > high:
        raise ValueError(f"{name}={value!r} is not allowed; expected a number <= {high}.")


def positive_number(name: str, value: object, upper: float | None = None) -> None:
    """A finite number above 0 (and at most ``upper``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and value > 0 and (upper is None or value <= upper)
    if not ok:
        bound = f" and at most {upper:.4g}" if upper is not None else ""
        raise ValueError(f"{name}={value!r} is not allowed; expected a number greater than 0{bound}.")


def fraction(name: str, value: object, upper: bool = True) -> float:
    """A fraction in (0, 1] (``upper``) or (0, 1), returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or not (0 < value <= 1 if upper else 0 < value < 1):
        raise ValueError(f"{name}={value!r} is not allowed; expected a number in (0, 1{']' if upper else ')'}.")
    return float(value)


def integer(name: str, value: object, minimum: int = 1, expected: str | None = None) -> None:
    """An int (Python's or NumPy's, not a bool) of at least ``minimum``; ``expected`` words
    what is allowed in the message (default: "an integer >= minimum")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed; expected {expected or f'an integer >= {minimum}'}.")


def labels(name: str, value: object, n: int | None = None, num_classes: int | None = None, *,
           one_hot: bool = False, per_model: bool = False, classes_from: str | None = None,
           error: type[ValueError] = ValueError) -> np.ndarray:
    """Class labels: integer class indices of shape (``n``,), each in 0..``num_classes`` - 1.

    ``n`` None: any length; ``num_classes`` None: any label >= 0. ``one_hot``: rows of
    shape (n, num_classes) (one-hot or scores) are accepted too and become their argmax.
    ``per_model``: shape (n_models, n), one row of labels per model. ``classes_from``:
    what ``num_classes`` was read from (e.g. ``"the manifest"``), named when a label is
    out of range. ``error``: the ValueError (sub)class raised. Returns the labels as a
    new int64 array.
    """
    array = np.asarray(value)
    if one_hot and array.ndim == 2 and array.shape[1] == num_classes and (n is None or len(array) == n):
        array = np.argmax(array, axis=1)
    count = "n_examples" if n is None else n
    if array.ndim != (2 if per_model else 1) or (n is not None and array.shape[-1] != n):
        expected = f"(n_models, {count}), one row of labels per model" if per_model else f"({count},) class indices"
        if one_hot:
            expected += f" or ({count}, {num_classes}) one-hot rows"
        raise error(f"{name} has shape {array.shape}; expected {expected}.")
    if not np.issubdtype(array.dtype, np.integer):
        raise error(f"{name} has dtype {array.dtype}; expected integer class indices "
                    "(take the argmax of probability or one-hot rows first).")
    if array.size:
        low, high = array.min(), array.max()
        if low < 0 or (num_classes is not None and high >= num_classes):
            if num_classes is None:
                raise error(f"{name} holds labels in [{low}, {high}]; expected class indices 0 or more.")
            said = f" but {classes_from} says" if classes_from else ";"
            raise error(f"{name} holds labels in [{low}, {high}]{said} num_classes={num_classes}: expected class "
                        f"indices 0..{num_classes - 1}.")
    return array.astype(np.int64)
