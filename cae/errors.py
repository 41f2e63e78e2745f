"""Errors raised by more than one of cae's data modules (:mod:`cae.data`, :mod:`cae.imagenet32`).

Kept apart so that both can raise them and :mod:`cae.data` can use
:mod:`cae.imagenet32`'s reader without the reader importing it back.
"""


class DataError(ValueError):
    """A dataset file is missing, corrupt or not what it claims to be."""
