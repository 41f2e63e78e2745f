"""The fingerprint artefact and its verification (Algorithm 1 of the paper).

A :class:`Fingerprint` is a set of inputs ``x`` (conferrable adversarial examples,
float32 in [0, 1]) and the *verification keys* ``keys = argmax source(x)``. A suspect
model is a surrogate of the source if it reproduces at least a fraction θ of the keys
(:func:`verify`); only the suspect's top-1 label is used.

Files
-----
:func:`save` writes two sibling files next to each other, ``<path>.npz`` and
``<path>.json`` (``path`` may be given with or without either suffix):

* ``<path>.npz`` holds only arrays (``np.savez``, no pickles): ``x`` float32
  (n, 32, 32, 3), ``keys`` int64 (n,), and optionally ``targets`` int64 (n,) and
  ``originals`` float32 (n, 32, 32, 3).
* ``<path>.json`` is the manifest::

      {"format": "cae-fingerprint", "format_version": 1, "n": ...,
       "arrays": {"x": {"dtype": "<f4", "shape": [n, 32, 32, 3]}, ...},
       "sha256": <content hash of the arrays>,
       "npz_sha256": <hash of the .npz file's bytes>,
       "manifest": {"num_classes": ..., "dataset": ..., "epsilon": ..., "tau": ...,
                    "source_model_hash": ..., "attack": ..., "cae_version": ...,
                    "created_with": {...}},
       "manifest_sha256": <hash of everything above>}

``sha256`` is the fingerprint's identity (:attr:`Fingerprint.sha256`): SHA-256 over,
for each array in the fixed order x, keys, targets, originals (those present), a JSON
line ``[name, dtype, shape]`` followed by the array's C-order bytes. It does not
depend on how the ``.npz`` was zipped. ``npz_sha256`` catches any change of the file
itself, and ``manifest_sha256`` any change of the manifest's content. :func:`load`
checks all three, then checks that the arrays and manifest are consistent, and
refuses anything else with a :class:`FingerprintError`.

These checksums detect corruption and editing; they do not stop a forger who
rewrites the checksums as well (that would need a signature).
"""

import dataclasses
import hashlib
import io
import json
import logging
import numbers
import pathlib
import zipfile
import zlib

import numpy as np

import cae
from cae import paths
from cae import stats

log = logging.getLogger(__name__)

FORMAT = "cae-fingerprint"
FORMAT_VERSION = 1
IMAGE_SHAPE = (32, 32, 3)
ARRAY_ORDER = ("x", "keys", "targets", "originals")
MANIFEST_FIELDS = (
    "num_classes", "dataset", "epsilon", "tau", "source_model_hash", "attack",
    "cae_version", "created_with",
)
_DTYPES = {"x": np.dtype("<f4"), "originals": np.dtype("<f4"),
           "keys": np.dtype("<i8"), "targets": np.dtype("<i8")}

__all__ = [
    "Fingerprint", "FingerprintError", "VerifyResult", "content_hash", "create", "load",
    "predict_labels", "save", "verify",
]


class FingerprintError(ValueError):
    """A fingerprint is missing, corrupt, tampered with, or inconsistent."""


# --------------------------------------------------------------------------- the artefact
def _image_array(name, value, n=None):
    array = np.asarray(value)
    if array.dtype != np.float32:
        raise FingerprintError(
            f"{name} has dtype {array.dtype}; fingerprints store float32 images in [0, 1] "
            f"(convert with {name}.astype('float32') if the values are right)."
        )
    if array.ndim != 4 or array.shape[1:] != IMAGE_SHAPE or (n is not None and len(array) != n):
        expected = f"({'n' if n is None else n}, 32, 32, 3)"
        raise FingerprintError(f"{name} has shape {array.shape}; expected {expected}.")
    if array.size and not np.all(np.isfinite(array)):
        raise FingerprintError(f"{name} contains NaN or infinite values.")
    if array.size and (array.min() < 0.0 or array.max() > 1.0):
        raise FingerprintError(
            f"{name} has values in [{array.min()}, {array.max()}]; images must lie in [0, 1]."
        )
    return _frozen(array.astype("<f4", copy=True))


def _label_array(name, value, n, num_classes):
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.integer):
        raise FingerprintError(
            f"{name} has dtype {array.dtype}; expected integer class indices (int64)."
        )
    if array.shape != (n,):
        raise FingerprintError(
            f"{name} has shape {array.shape} but x holds {n} images; expected ({n},)."
        )
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise FingerprintError(
            f"{name} holds classes in [{array.min()}, {array.max()}] but the manifest says "
            f"num_classes={num_classes}; labels must lie in [0, {num_classes - 1}]."
        )
    return _frozen(array.astype("<i8", copy=True))


def _frozen(array):
    array.flags.writeable = False
    return array


def _json_copy(obj, what):
    try:
        return json.loads(json.dumps(obj, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as err:
        raise FingerprintError(f"{what} must be JSON-serialisable without NaN: {err}") from None


@dataclasses.dataclass(frozen=True, eq=False)
class Fingerprint:
    """Fingerprint inputs, verification keys and what produced them.

    ``x``: float32 (n, 32, 32, 3) in [0, 1]. ``keys``: int64 (n,), the source model's
    labels on ``x`` (the verification keys vk). ``targets``: optional int64 (n,), the
    target classes of the attack (C-IGM). ``originals``: optional float32
    (n, 32, 32, 3), the clean inputs the examples were made from (for figures).
    ``manifest``: JSON-compatible dict with at least the keys in
    :data:`MANIFEST_FIELDS`; ``num_classes`` is checked against the labels.

    Arrays are stored as read-only copies; compare fingerprints with ``==`` (exact).
    Use :func:`create` to build one from a source model.
    """

    x: np.ndarray
    keys: np.ndarray
    manifest: dict
    targets: np.ndarray = None
    originals: np.ndarray = None

    def __post_init__(self):
        if not isinstance(self.manifest, dict):
            raise FingerprintError(f"manifest must be a dict, got {type(self.manifest).__name__}.")
        manifest = _json_copy(self.manifest, "manifest")
        missing = [field for field in MANIFEST_FIELDS if field not in manifest]
        if missing:
            raise FingerprintError(
                f"manifest lacks {', '.join(missing)}; a fingerprint manifest needs "
                f"{', '.join(MANIFEST_FIELDS)} (cae.fingerprint.create fills them)."
            )
        num_classes = manifest["num_classes"]
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise FingerprintError(
                f"manifest num_classes must be an integer >= 2, got {num_classes!r}."
            )
        x = _image_array("x", self.x)
        n = len(x)
        if n == 0:
            raise FingerprintError("a fingerprint needs at least one input; x is empty.")
        set_ = object.__setattr__
        set_(self, "x", x)
        set_(self, "keys", _label_array("keys", self.keys, n, num_classes))
        set_(self, "manifest", manifest)
        if self.targets is not None:
            set_(self, "targets", _label_array("targets", self.targets, n, num_classes))
        if self.originals is not None:
            set_(self, "originals", _image_array("originals", self.originals, n))

    @property
    def n(self):
        return len(self.keys)

    @property
    def num_classes(self):
        return self.manifest["num_classes"]

    @property
    def sha256(self):
        """Content hash of the arrays (see the module notes); the fingerprint's identity."""
        return content_hash(self._arrays())

    def _arrays(self):
        return {name: getattr(self, name) for name in ARRAY_ORDER
                if getattr(self, name) is not None}

    def __eq__(self, other):
        if not isinstance(other, Fingerprint):
            return NotImplemented
        mine, theirs = self._arrays(), other._arrays()
        return (
            self.manifest == other.manifest
            and mine.keys() == theirs.keys()
            and all(mine[k].dtype == theirs[k].dtype and np.array_equal(mine[k], theirs[k])
                    for k in mine)
        )

    __hash__ = None

    def __repr__(self):
        return (f"Fingerprint(n={self.n}, num_classes={self.num_classes}, "
                f"attack={self.manifest.get('attack')!r}, sha256={self.sha256[:12]}...)")


def content_hash(arrays):
    """SHA-256 over ``[name, dtype, shape]`` + bytes of each array, in :data:`ARRAY_ORDER`."""
    digest = hashlib.sha256()
    unknown = set(arrays) - set(ARRAY_ORDER)
    if unknown:
        raise FingerprintError(f"unknown fingerprint arrays {sorted(unknown)}.")
    for name in ARRAY_ORDER:
        if name not in arrays:
            continue
        array = np.ascontiguousarray(arrays[name])
        header = json.dumps([name, array.dtype.str, list(array.shape)]) + "\n"
        digest.update(header.encode())
        digest.update(array.tobytes(order="C"))
    return digest.hexdigest()


def create(source, x, *, attack, epsilon, tau, dataset, source_model_hash=None,
           num_classes=None, targets=None, originals=None, created_with=None,
           batch_size=256):
    """A :class:`Fingerprint` of ``x`` whose keys are the ``source`` model's labels.

    ``source``: anything :func:`verify` accepts as a suspect (normally the Keras
    source model; then ``num_classes`` is read from it). ``created_with``: the settings
    that produced ``x`` (attack parameters, seeds, ...), stored in the manifest.
    """
    if num_classes is None:
        num_classes = _declared_classes(source)
        if num_classes is None:
            raise ValueError(
                "num_classes is needed when the source is not a Keras model or ART classifier."
            )
    x = _image_array("x", x)
    keys, _ = predict_labels(source, x, int(num_classes), batch_size=batch_size)
    manifest = dict(
        num_classes=int(num_classes), dataset=dataset, epsilon=epsilon, tau=tau,
        source_model_hash=source_model_hash, attack=attack, cae_version=cae.__version__,
        created_with=dict(created_with or {}),
    )
    return Fingerprint(x=x, keys=keys, manifest=manifest, targets=targets, originals=originals)


# --------------------------------------------------------------------------- files
def _paths(path):
    path = pathlib.Path(path)
    if path.suffix in (".npz", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".npz"), path.with_name(path.name + ".json")


def _manifest_digest(document):
    body = {key: value for key, value in document.items() if key != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def save(fp, path):
    """Write ``fp`` to ``<path>.npz`` and ``<path>.json``; returns the two paths.

    Each file is written atomically (temp file + rename); the ``.npz`` first, so a
    reader that meets an old manifest next to a new ``.npz`` refuses it (checksum)
    instead of mixing the two.
    """
    if not isinstance(fp, Fingerprint):
        raise TypeError(f"save expects a Fingerprint, got {type(fp).__name__}.")
    npz_path, json_path = _paths(path)
    arrays = fp._arrays()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n": fp.n,
        "arrays": {name: {"dtype": a.dtype.str, "shape": list(a.shape)}
                   for name, a in arrays.items()},
        "sha256": content_hash(arrays),
        "npz_sha256": hashlib.sha256(payload).hexdigest(),
        "manifest": fp.manifest,
    }
    document["manifest_sha256"] = _manifest_digest(document)
    paths.atomic_write_bytes(npz_path, payload)
    paths.atomic_write_json(json_path, document)
    log.info("saved fingerprint of %d inputs to %s (sha256 %s)", fp.n, npz_path,
             document["sha256"][:12])
    return npz_path, json_path


_FIX = "re-create it with cae.fingerprint.save (or restore both files from a backup)"


def load(path):
    """Read a fingerprint written by :func:`save`, refusing anything inconsistent.

    Raises :class:`FingerprintError` naming the problem and the fix when a file is
    missing, the ``.npz`` is truncated or corrupt, a checksum does not match, a
    manifest field is missing or disagrees with the arrays, an array has the wrong
    dtype, shape or values outside [0, 1], or the format version is unknown.
    """
    npz_path, json_path = _paths(path)
    for file in (json_path, npz_path):
        if not file.is_file():
            raise FingerprintError(
                f"fingerprint file {file} is missing; a fingerprint is the pair {npz_path.name} "
                f"+ {json_path.name} in one folder: copy both, or {_FIX}."
            )
    try:
        document = json.loads(json_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FingerprintError(f"{json_path} is not valid JSON ({err}); {_FIX}.") from None
    if not isinstance(document, dict):
        raise FingerprintError(f"{json_path} does not hold a JSON object; {_FIX}.")
    if document.get("format") != FORMAT:
        raise FingerprintError(
            f"{json_path} is not a cae fingerprint manifest (format={document.get('format')!r}, "
            f"expected {FORMAT!r})."
        )
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise FingerprintError(
            f"{json_path} has format_version {version!r}; this cae ({cae.__version__}) reads "
            f"version {FORMAT_VERSION} only: load it with the cae version that wrote it "
            "and save it again with this one."
        )
    required = ("n", "arrays", "sha256", "npz_sha256", "manifest", "manifest_sha256")
    missing = [key for key in required if key not in document]
    if missing:
        raise FingerprintError(f"{json_path} lacks {', '.join(missing)}; {_FIX}.")
    try:
        digest = _manifest_digest(document)
    except ValueError as err:  # NaN / Infinity smuggled into the manifest
        raise FingerprintError(f"{json_path} holds non-finite numbers ({err}); {_FIX}.") from None
    if digest != document["manifest_sha256"]:
        raise FingerprintError(
            f"{json_path} was modified after it was written (manifest checksum mismatch); "
            f"{_FIX}."
        )
    payload = npz_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != document["npz_sha256"]:
        raise FingerprintError(
            f"{npz_path} does not match its manifest (file checksum mismatch: truncated, "
            f"corrupted or replaced; {len(payload)} bytes); {_FIX}."
        )
    arrays = _read_npz(payload, npz_path)
    _check_listing(document, arrays, json_path)
    if content_hash(arrays) != document["sha256"]:
        raise FingerprintError(f"{npz_path}: array content checksum mismatch; {_FIX}.")
    manifest = document["manifest"]
    if not isinstance(manifest, dict):
        raise FingerprintError(f"{json_path}: 'manifest' must be a JSON object; {_FIX}.")
    try:
        fp = Fingerprint(manifest=manifest, **arrays)
    except FingerprintError as err:
        raise FingerprintError(f"{npz_path.with_suffix('')}: {err}") from None
    if manifest.get("cae_version") != cae.__version__:
        log.info("fingerprint %s was made with cae %s (this is %s)", npz_path,
                 manifest.get("cae_version"), cae.__version__)
    return fp


def _read_npz(payload, npz_path):
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            names = set(archive.files)
            unknown = names - set(ARRAY_ORDER)
            if unknown or not {"x", "keys"} <= names:
                raise FingerprintError(
                    f"{npz_path} holds arrays {sorted(names)}; expected x, keys and optionally "
                    f"targets, originals; {_FIX}."
                )
            return {name: archive[name] for name in ARRAY_ORDER if name in names}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, KeyError, MemoryError) as err:
        raise FingerprintError(f"{npz_path} is not a readable .npz ({err}); {_FIX}.") from None
    except FingerprintError:
        raise
    except ValueError as err:  # pickled objects, bad .npy headers
        raise FingerprintError(f"{npz_path} is not a readable .npz ({err}); {_FIX}.") from None


def _check_listing(document, arrays, json_path):
    """The manifest's ``n`` and ``arrays`` entries must describe the arrays exactly."""
    n = document["n"]
    listing = document["arrays"]
    if not isinstance(listing, dict) or set(listing) != set(arrays):
        raise FingerprintError(
            f"{json_path} lists arrays {sorted(listing) if isinstance(listing, dict) else listing}"
            f" but the .npz holds {sorted(arrays)}; {_FIX}."
        )
    for name, array in arrays.items():
        entry = listing[name]
        expected_dtype = _DTYPES[name]
        if array.dtype != expected_dtype:
            raise FingerprintError(
                f"array {name} has dtype {array.dtype} ({array.dtype.str}); fingerprint files "
                f"store {expected_dtype.str}; {_FIX}."
            )
        if not isinstance(entry, dict) or entry.get("dtype") != array.dtype.str \
                or entry.get("shape") != list(array.shape):
            raise FingerprintError(
                f"{json_path} describes {name} as {entry} but the array is "
                f"{array.dtype.str} {list(array.shape)}; {_FIX}."
            )
        if len(array) != n:
            raise FingerprintError(
                f"{json_path} says n={n} but {name} has {len(array)} entries; {_FIX}."
            )


# --------------------------------------------------------------------------- suspects
def _is_keras_model(obj):
    try:
        import keras
    except ImportError:  # pragma: no cover - keras is a dependency
        return False
    return isinstance(obj, keras.Model)


def _declared_classes(suspect):
    if _is_keras_model(suspect):
        out = suspect.output_shape
        return out[-1] if isinstance(out, tuple) else None
    if hasattr(suspect, "nb_classes") and hasattr(suspect, "predict"):
        return int(suspect.nb_classes)
    return None


def _labels_from_output(output, count, num_classes, who):
    output = np.asarray(output)
    if output.ndim == 2 and output.shape[1] == 1:
        output = output[:, 0]
    if output.shape[:1] != (count,) or output.ndim not in (1, 2):
        raise ValueError(
            f"{who} returned an array of shape {output.shape} for {count} inputs; expected "
            f"({count},) labels or ({count}, {num_classes}) class scores."
        )
    if output.ndim == 2:
        if output.shape[1] != num_classes:
            raise ValueError(
                f"{who} predicts {output.shape[1]} classes but the fingerprint has "
                f"{num_classes}: it is not a model of the same task."
            )
        if not np.issubdtype(output.dtype, np.number) or not np.all(np.isfinite(output)):
            raise ValueError(f"{who} returned non-numeric or non-finite class scores.")
        return np.argmax(output, axis=1).astype(np.int64)
    if np.issubdtype(output.dtype, np.bool_) or not np.issubdtype(output.dtype, np.number):
        raise ValueError(f"{who} returned labels of dtype {output.dtype}; expected integers.")
    if not np.all(np.isfinite(output)) or not np.all(output == np.round(output)):
        raise ValueError(f"{who} returned non-integer labels.")
    labels = output.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{who} returned labels in [{labels.min()}, {labels.max()}]; the fingerprint has "
            f"classes 0..{num_classes - 1}."
        )
    return labels


def predict_labels(suspect, x, num_classes, batch_size=256):
    """Top-1 labels of ``suspect`` on ``x`` and the number of inputs it was sent.

    ``suspect`` may be:

    * a Keras model (checked with :func:`cae.models.check_interface`; argmax of its
      output);
    * an object with ``predict_labels(x, num_classes)`` returning int labels, such as
      :class:`cae.remote.TFServingClient` (its ``queries`` counter, when present,
      gives the number of inputs sent, retries included);
    * an ART classifier such as ``BlackBoxClassifier`` (``nb_classes`` and
      ``predict``; see :func:`cae.remote.blackbox_suspect`);
    * any callable ``f(x) -> labels (b,) or class scores (b, num_classes)``.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    batch_size = int(batch_size)
    count = len(x)
    if _is_keras_model(suspect):
        from cae import models

        models.check_interface(suspect, where="the suspect model", num_classes=num_classes)
        output = suspect.predict(x, batch_size=batch_size, verbose=0)
        return _labels_from_output(output, count, num_classes, "the suspect model"), count
    if hasattr(suspect, "predict_labels"):
        # The whole set at once: the client batches, and checks its query budget for
        # all of it before sending anything.
        before = getattr(suspect, "queries", None)
        labels = _labels_from_output(suspect.predict_labels(x, num_classes), count,
                                     num_classes, "the suspect")
        after = getattr(suspect, "queries", None)
        sent = after - before if isinstance(before, int) and isinstance(after, int) else count
        return labels, sent
    if hasattr(suspect, "nb_classes") and hasattr(suspect, "predict"):
        declared = int(suspect.nb_classes)
        shape = tuple(getattr(suspect, "input_shape", IMAGE_SHAPE) or IMAGE_SHAPE)
        if shape != IMAGE_SHAPE:
            raise ValueError(
                f"the suspect classifier takes inputs of shape {shape}; fingerprints are "
                f"{IMAGE_SHAPE} images in [0, 1]."
            )
        if declared != num_classes:
            raise ValueError(
                f"the suspect classifier predicts {declared} classes but the fingerprint has "
                f"{num_classes}: it is not a model of the same task."
            )
        output = suspect.predict(x, batch_size=batch_size)
        return _labels_from_output(output, count, num_classes, "the suspect classifier"), count
    if callable(suspect):
        parts = []
        for start in range(0, count, batch_size):
            batch = x[start:start + batch_size]
            try:
                output = suspect(batch)
            except Exception as err:
                raise ValueError(
                    f"the suspect callable failed on a batch of shape {batch.shape} "
                    f"(float32 images in [0, 1]): {type(err).__name__}: {err}"
                ) from err
            parts.append(_labels_from_output(output, len(batch), num_classes, "the suspect"))
        return np.concatenate(parts), count
    raise TypeError(
        f"cannot query a suspect of type {type(suspect).__name__}; pass a Keras model, an "
        "ART classifier, a cae.remote.TFServingClient or a callable x -> labels/scores."
    )


# --------------------------------------------------------------------------- verification
@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`.

    ``retention``: fraction of fingerprints on which the suspect's label equals the
    key; ``is_surrogate``: ``retention >= threshold``; ``queries``: inputs sent to the
    suspect; ``p_value``: the conservative p-value under the null "an independent
    model" (None when no null was given; see :mod:`cae.stats`), with its binomial and
    empirical parts and the ``p0`` used.
    """

    retention: float
    matches: int
    n: int
    threshold: float
    is_surrogate: bool
    queries: int
    p_value: float = None
    p_value_binomial: float = None
    p_value_empirical: float = None
    p0: float = None
    fingerprint_sha256: str = None

    def to_dict(self):
        return dataclasses.asdict(self)


def _p_values(null, matches, n):
    """``(p_value, binomial, empirical, p0)`` for the supported kinds of null."""
    if null is None:
        return None, None, None, None
    if isinstance(null, stats.Null):
        binomial, empirical = null.p_values(matches, n)
        return max(binomial, empirical), binomial, empirical, null.p0
    if isinstance(null, (float, int)) and not isinstance(null, bool):
        binomial = stats.binomial_p_value(matches, n, float(null))
        return binomial, binomial, None, float(null)
    return _p_values(stats.Null(tuple(np.asarray(null, dtype=float).ravel()), n), matches, n)


# θ when nothing better is known (no references were stored with the fingerprint).
DEFAULT_THRESHOLD = 0.75


def verify(suspect, fp, threshold=DEFAULT_THRESHOLD, batch_size=256, null=None):
    """Algorithm 1: is ``suspect`` a surrogate of the model that made ``fp``?

    Sends the fingerprint inputs to ``suspect`` (label-only access suffices; any kind
    :func:`predict_labels` accepts), counts the keys it reproduces and declares it a
    surrogate iff ``retention >= threshold``. ``threshold`` may be a number in [0, 1]
    or a :class:`cae.stats.Threshold`.

    ``null`` sets the p-value: None (no p-value), a float ``p0`` (binomial null), the
    retentions of reference models on this fingerprint (both nulls), or a
    :class:`cae.stats.Null`. With both nulls the reported ``p_value`` is the larger.
    ``batch_size``: inputs per call for Keras models, ART classifiers and callables;
    remote clients get the whole set and batch by their own ``batch_size``.
    Pure: nothing is modified except a remote client's query counter.
    """
    if not isinstance(fp, Fingerprint):
        raise TypeError(f"fp must be a Fingerprint (see cae.fingerprint.load), got "
                        f"{type(fp).__name__}.")
    threshold = getattr(threshold, "theta", threshold)
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real) \
            or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}.")
    threshold = float(threshold)
    labels, queries = predict_labels(suspect, fp.x, fp.num_classes, batch_size=batch_size)
    matches = int(np.sum(labels == fp.keys))
    retention = matches / fp.n
    p_value, binomial, empirical, p0 = _p_values(null, matches, fp.n)
    result = VerifyResult(
        retention=retention, matches=matches, n=fp.n, threshold=threshold,
        is_surrogate=bool(retention >= threshold), queries=int(queries), p_value=p_value,
        p_value_binomial=binomial, p_value_empirical=empirical, p0=p0,
        fingerprint_sha256=fp.sha256,
    )
    log.info("retention %.3f (%d/%d) vs threshold %.3f -> %s", retention, matches, fp.n,
             threshold, "surrogate" if result.is_surrogate else "independent")
    return result
