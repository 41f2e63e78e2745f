"""Argument checks shared by cae's modules: each raises a ValueError that names the
argument, the value given and what is allowed (the ART / Keras style of errors).

Array checks stay beside their data: images in :func:`cae.data.check_images`, a model's
interface in :func:`cae.models.check_interface`, and the label arrays of
:mod:`cae.attacks`, :mod:`cae.scores`, :mod:`cae.fingerprint` and :mod:`cae.removal`,
whose messages differ with what each accepts.
"""

import numbers

import numpy as np


def choice(name, value, allowed, verb="allowed"):
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not {verb}; choose one of {', '.join(map(repr, allowed))}.")


def number(name, value, low=None, high=None, low_open=False):
    """A finite number in [``low``, ``high``] (``low_open``: above ``low``); a bound of None is no bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name}={value!r} is not allowed; expected a finite number.")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name}={value!r} is not allowed; expected a number {'>' if low_open else '>='} {low}.")
    if high is not None and value > high:
        raise ValueError(f"{name}={value!r} is not allowed; expected a number <= {high}.")


def positive_number(name, value, upper=None):
    """A finite number above 0 (and at most ``upper``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and value > 0 and (upper is None or value <= upper)
    if not ok:
        bound = f" and at most {upper:.4g}" if upper is not None else ""
        raise ValueError(f"{name}={value!r} is not allowed; expected a number greater than 0{bound}.")


def fraction(name, value, upper=True):
    """A fraction in (0, 1] (``upper``) or (0, 1), returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) \
            or not (0 < value <= 1 if upper else 0 < value < 1):
        raise ValueError(f"{name}={value!r} is not allowed; expected a number in (0, 1{']' if upper else ')'}.")
    return float(value)


def integer(name, value, minimum=1, expected=None):
    """An int (Python's or NumPy's, not a bool) of at least ``minimum``; ``expected`` words
    what is allowed in the message (default: "an integer >= minimum")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed; expected {expected or f'an integer >= {minimum}'}.")
