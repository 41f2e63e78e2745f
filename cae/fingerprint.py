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

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import numbers
import os
import pathlib
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import cae
from cae import checks, data, paths, stats

# cae.models and cae.preprocessing import Keras: they are imported inside the functions that
# take Keras models, so that loading and checking a fingerprint (and importing cae.removal,
# which the zoo's training workers do before they set up Keras) does not start Keras.

log = logging.getLogger(__name__)

# What verification queries: a Keras model, an object with ``predict_labels(x, num_classes)``
# (cae.remote.TFServingClient), an ART classifier, or a callable x -> labels or class scores
# (see predict_labels).
Suspect = Any

FORMAT = "cae-fingerprint"
FORMAT_VERSION = 2  # 2: the manifest may hold a typed calibration (Calibration)
READABLE_VERSIONS = (1, 2)
IMAGE_SHAPE = data.IMAGE_SHAPE
ARRAY_ORDER = ("x", "keys", "targets", "originals")
MANIFEST_FIELDS = (
    "num_classes", "dataset", "epsilon", "tau", "source_model_hash", "attack",
    "cae_version", "created_with",
)
_DTYPES = {"x": np.dtype("<f4"), "originals": np.dtype("<f4"),
           "keys": np.dtype("<i8"), "targets": np.dtype("<i8")}

__all__ = [
    "Calibration", "Fingerprint", "FingerprintError", "VerifyResult", "calibrate", "content_hash", "create",
    "extract", "extract_mask", "head", "key_groups", "key_order", "load", "predict_labels", "sample", "save", "subset",
    "verify",
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
    return _frozen(checks.labels(name, value, n, num_classes, classes_from="the manifest",
                                 error=FingerprintError).astype("<i8", copy=False))


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
    targets: np.ndarray | None = None
    originals: np.ndarray | None = None

    def __post_init__(self) -> None:
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
        if "calibration" in manifest:
            Calibration.from_dict(manifest["calibration"], n)  # refuses an inconsistent one
        if "key_order" in manifest:
            order = manifest["key_order"]
            if not isinstance(order, list) or not all(type(i) is int for i in order) \
                    or sorted(order) != list(range(n)):
                raise FingerprintError(f"manifest key_order must list each key index 0..{n - 1} once (the keys "
                                       "in order of evidence); re-create the fingerprint with cae extract, or "
                                       "delete the field to verify in stored order.")

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def calibration(self) -> Calibration | None:
        """The :class:`Calibration` stored with the fingerprint, or None (format 1 files,
        and fingerprints made without calibration models)."""
        stored = self.manifest.get("calibration")
        return None if stored is None else Calibration.from_dict(stored, self.n)

    def with_calibration(self, calibration: Calibration) -> Fingerprint:
        """The same fingerprint with ``calibration`` stored in its manifest."""
        if not isinstance(calibration, Calibration):
            raise TypeError(f"calibration must be a Calibration, got {type(calibration).__name__}.")
        calibration.check(self.n)
        return Fingerprint(x=self.x, keys=self.keys, targets=self.targets, originals=self.originals,
                           manifest={**self.manifest, "calibration": calibration.to_dict()})

    @property
    def num_classes(self) -> int:
        return self.manifest["num_classes"]

    @property
    def sha256(self) -> str:
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


def subset(fp: Fingerprint, keep: Sequence[int] | np.ndarray) -> Fingerprint:
    """The fingerprint of the keys at ``keep`` (distinct int indices, or a bool mask of
    length n), in the fingerprint's order: fewer queries to the suspect. Its calibration
    is restricted alike, so θ and the p-values are those the smaller fingerprint earns
    (fewer keys, weaker evidence); the manifest records the parent's sha256 and the
    indices under ``"subset_of"``."""
    if not isinstance(fp, Fingerprint):
        raise TypeError(f"fp must be a Fingerprint, got {type(fp).__name__}.")
    keep = np.asarray(keep)
    if keep.dtype == bool:
        if keep.shape != (fp.n,):
            raise ValueError(f"a bool mask of keys must have shape ({fp.n},), got {keep.shape}.")
        keep = np.flatnonzero(keep)
    if keep.ndim != 1 or not np.issubdtype(keep.dtype, np.integer) or not len(keep):
        raise ValueError("keep must be a non-empty 1-d array of key indices (ints) or a bool mask; "
                         f"got dtype {keep.dtype}, shape {keep.shape}.")
    if keep.min() < 0 or keep.max() >= fp.n or len(np.unique(keep)) != len(keep):
        raise ValueError(f"keep must hold distinct key indices in 0..{fp.n - 1}.")
    keep = np.sort(keep).astype(np.int64)
    manifest = {**fp.manifest, "subset_of": {"sha256": fp.sha256, "n": fp.n, "indices": keep.tolist()}}
    calibration = fp.calibration
    if calibration is not None:
        manifest["calibration"] = calibration.subset(keep).to_dict()
    if "key_order" in manifest:
        position = {int(k): i for i, k in enumerate(keep)}
        manifest["key_order"] = [position[k] for k in manifest["key_order"] if k in position]
    return Fingerprint(x=fp.x[keep], keys=fp.keys[keep], manifest=manifest,
                       targets=None if fp.targets is None else fp.targets[keep],
                       originals=None if fp.originals is None else fp.originals[keep])


def key_groups(fp: Fingerprint) -> dict[str, np.ndarray]:
    """The key indices by where the keys came from: the attack's examples (named after
    the manifest's ``attack``), then the natural mistakes :func:`cae.experiments.extract`
    appends after them (manifest ``created_with["mistakes"]``), when there are any."""
    mistakes = fp.manifest.get("created_with", {}).get("mistakes", 0)
    if not isinstance(mistakes, int) or isinstance(mistakes, bool) or not 0 <= mistakes <= fp.n:
        raise FingerprintError(f"manifest created_with.mistakes is {mistakes!r}; expected a count in 0..{fp.n}.")
    groups = {str(fp.manifest.get("attack") or "attack"): np.arange(fp.n - mistakes)}
    if mistakes:
        groups["natural mistakes"] = np.arange(fp.n - mistakes, fp.n)
    return {name: keys for name, keys in groups.items() if len(keys)}


def key_order(fp: Fingerprint) -> np.ndarray:
    """The key indices in order of evidence, as the extraction ranked them (manifest
    ``key_order``; :func:`cae.experiments.extract` ranks natural mistakes by its training
    models), else in stored order."""
    return np.asarray(fp.manifest.get("key_order", range(fp.n)), np.int64)


def head(fp: Fingerprint, n: int) -> Fingerprint:
    """:func:`subset` of the first ``n`` keys in order of evidence (:func:`key_order`):
    how a verifier with a budget of ``n`` queries uses a larger fingerprint."""
    _check_count(fp, n)
    return subset(fp, key_order(fp)[:int(n)])


def _check_count(fp, n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= fp.n:
        raise ValueError(f"n={n!r} keys is not allowed; the fingerprint has {fp.n}: give 1..{fp.n}.")


def sample(fp: Fingerprint, n: int, seed: int = 0) -> Fingerprint:
    """:func:`subset` of ``n`` keys drawn at random (seeded) without replacement: a
    query budget that ignores the order of evidence (to compare :func:`head` with)."""
    _check_count(fp, n)
    return subset(fp, np.random.default_rng([int(seed), 7]).choice(fp.n, size=int(n), replace=False))


def content_hash(arrays: Mapping[str, np.ndarray]) -> str:
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


def create(source: Suspect, x: np.ndarray, *, attack: str, epsilon: float, tau: float, dataset: str,
           source_model_hash: str | None = None, num_classes: int | None = None, targets: np.ndarray | None = None,
           originals: np.ndarray | None = None, created_with: Mapping[str, Any] | None = None,
           batch_size: int = 256) -> Fingerprint:
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


def extract_mask(conferrability: np.ndarray, tau: float, success: np.ndarray | None = None) -> np.ndarray:
    """Algorithm 2's filter: conferrability >= τ (with a float tolerance), and success
    where ``success`` is given."""
    keep = np.asarray(conferrability, np.float64) >= float(tau) - 1e-9
    return keep & np.asarray(success, bool) if success is not None else keep


def extract(source: Suspect, x: np.ndarray, conferrability: np.ndarray, *, tau: float,
            success: np.ndarray | None = None, **create_args: Any) -> tuple[Fingerprint, np.ndarray]:
    """Algorithm 2's last step: keep the adversarial examples ``x`` whose conferrability
    on the training models (Confer(S, R), eq. 14) is at least ``tau`` (and that
    succeeded, where ``success`` is given) and make them a :class:`Fingerprint` keyed
    by ``source``'s labels (:func:`create`; ``create_args`` go there). Returns the
    fingerprint and the bool mask of the kept examples.

    The attack itself (C-IGM on the ensemble of the source and the training models) is
    :class:`cae.attacks.CIGM`; :func:`cae.experiments.extract` runs the whole algorithm
    on a preset's zoo.
    """
    conferrability = np.asarray(conferrability, np.float64)
    if conferrability.shape != (len(x),):
        raise ValueError(f"conferrability has shape {conferrability.shape}; expected ({len(x)},), one per example.")
    keep = extract_mask(conferrability, tau, success)
    if not keep.any():
        raise ValueError(f"no adversarial example reached conferrability {tau} on the training models; "
                         "lower tau or raise eps.")
    targets = create_args.pop("targets", None)
    originals = create_args.pop("originals", None)
    fp = create(source, np.asarray(x)[keep], tau=float(tau), targets=None if targets is None else
                np.asarray(targets)[keep], originals=None if originals is None else np.asarray(originals)[keep],
                **create_args)
    return fp, keep


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


def save(fp: Fingerprint, path: str | os.PathLike) -> tuple[pathlib.Path, pathlib.Path]:
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


def load(path: str | os.PathLike) -> Fingerprint:
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
    if version not in READABLE_VERSIONS:
        raise FingerprintError(
            f"{json_path} has format_version {version!r}; this cae ({cae.__version__}) reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}: load it with the cae version that wrote it "
            "and save it again with this one."
        )
    if version == 1 and "calibration" in document.get("manifest", {}):
        raise FingerprintError(f"{json_path}: a format_version 1 file cannot hold a calibration; {_FIX}.")
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
    if version == 1:
        log.info("fingerprint %s is format version 1: it carries no calibration (θ defaults to %.2f, "
                 "no likelihood ratio); re-extract it for one", npz_path, DEFAULT_THRESHOLD)
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


def predict_labels(suspect: Suspect, x: np.ndarray, num_classes: int, batch_size: int = 256) -> tuple[np.ndarray, int]:
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
        output = data.predict(suspect, x, batch_size)
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


# --------------------------------------------------------------------------- statistics
@dataclasses.dataclass(frozen=True)
class Statistic:
    """A verification statistic: how a suspect's bool (n,) matches become the score
    compared with θ, and that score's p-value under the calibration references.

    ``name``: what :func:`verify` (``statistic=``) and ``cae verify --statistic`` take.
    ``title``: what prose calls it ("likelihood ratio"); ``label``: its short column label
    in tables (default: ``title``); ``unit``: what the score is counted per, if anything
    ("per fingerprint"); ``summary``: a few words for ``cae verify --help``.
    ``score(calibration, matches)``: the score (a float); ``calibration`` is None for a
    fingerprint without one, which only a statistic with ``calibrated=False`` is used on.
    ``p_value(calibration, matches, score, rates, spread)``: the probability that an
    independent model scores at least ``score``, keys independent given the model, with
    per-fingerprint match ``rates`` (:func:`cae.stats.match_rates`) and ``spread``
    (:func:`cae.stats.model_spread`), or what ``null`` gives. ``null(calibration,
    condition)``: the statistic's own ``(rates, spread)`` under a condition (None: the
    references' rates and spread, right for a count of matches; the likelihood ratio
    measures them on itself, :func:`cae.stats.lr_null`). ``fraction``: the score is a
    fraction of the n keys (θ in [0, 1], in steps of 1/n). ``calibrated``: the score depends on the calibration
    (a fingerprint without one has none, and a calibration reference is scored without
    itself). ``default_threshold``: θ when the calibration gives none (None: give one).
    Add one with :func:`register_statistic`.
    """

    name: str
    title: str
    score: Callable[[Calibration | None, np.ndarray], float]
    p_value: Callable[[Calibration | None, np.ndarray, float, np.ndarray, float], float]
    label: str | None = None
    unit: str = ""
    summary: str = ""
    fraction: bool = False
    calibrated: bool = True
    default_threshold: float | None = None
    null: Callable[[Calibration, str], tuple[np.ndarray, float]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"statistic name {self.name!r} is not allowed; expected an identifier such as 'lr' "
                             "(it becomes a suffix of JSON keys).")
        if self.label is None:
            object.__setattr__(self, "label", self.title)

    @property
    def description(self) -> str:
        """What ``cae verify``'s line calls the score ("likelihood ratio per fingerprint")."""
        return f"{self.title} {self.unit}".strip()

    @property
    def suffix(self) -> str:
        """What this statistic's keys in result dicts end with: "" for the default
        statistic, else ``_<name>`` (``auc_lr``)."""
        return "" if self.name == DEFAULT_STATISTIC else f"_{self.name}"

    def column(self, heading: str) -> str:
        """A table column of this statistic: ``heading`` for the default statistic, else
        ``heading (label)`` ("AUC (LR)")."""
        return heading if self.name == DEFAULT_STATISTIC else f"{heading} ({self.label})"


def _retention_p_value(calibration, matches, score, rates, spread):
    return stats.poisson_binomial_p_value(int(matches.sum()), rates, spread=spread)


def _lr_score(calibration, matches):
    return float(stats.likelihood_ratio(matches, *calibration.lr_rates)) / calibration.n


def _lr_null(calibration, condition):
    return stats.lr_null(calibration.surrogate_matches, calibration.reference_matches,
                         calibration.references_under(condition))


def _lr_p_value(calibration, matches, score, rates, spread):
    return stats.likelihood_ratio_p_value(score * calibration.n, *calibration.lr_rates, null=rates, spread=spread)


# The paper's statistic; verify's default, the one without a suffix in result keys and tables.
DEFAULT_STATISTIC = "retention"
# θ when nothing better is known (no calibration was stored with the fingerprint).
DEFAULT_THRESHOLD = 0.75
STATISTICS = {
    "retention": Statistic("retention", "retention", lambda calibration, matches: float(matches.mean()),
                           _retention_p_value, summary="the paper's", fraction=True, calibrated=False,
                           default_threshold=DEFAULT_THRESHOLD),
    "lr": Statistic("lr", "likelihood ratio", _lr_score, _lr_p_value, label="LR", unit="per fingerprint",
                    summary="per-fingerprint likelihood ratio from the calibration", null=_lr_null),
}


def register_statistic(statistic: Statistic) -> Statistic:
    """Add ``statistic`` (a :class:`Statistic`) to :data:`STATISTICS`: :func:`verify`,
    :class:`Calibration`, ``cae verify`` and the reports then offer it."""
    if not isinstance(statistic, Statistic):
        raise TypeError(f"statistic must be a Statistic, got {type(statistic).__name__}.")
    if statistic.name in STATISTICS:
        raise ValueError(f"statistic {statistic.name!r} is already registered; unregister_statistic it first.")
    STATISTICS[statistic.name] = statistic
    return statistic


def unregister_statistic(name: str) -> Statistic:
    """Remove the statistic ``name`` added by :func:`register_statistic`."""
    if name == DEFAULT_STATISTIC:
        raise ValueError(f"the default statistic {name!r} cannot be unregistered.")
    return STATISTICS.pop(get_statistic(name).name)


def get_statistic(name: str) -> Statistic:
    """The registered :class:`Statistic` called ``name``."""
    if name not in STATISTICS:
        raise ValueError(f"statistic={name!r}; choose one of {', '.join(STATISTICS)}.")
    return STATISTICS[name]


def available_statistics(calibration: Calibration | None) -> tuple[str, ...]:
    """The names of the statistics a fingerprint with ``calibration`` (or None) has."""
    return tuple(name for name, s in STATISTICS.items() if calibration is not None or not s.calibrated)


# --------------------------------------------------------------------------- calibration
VERDICTS = ("surrogate", "independent", "inconclusive")
# Largest p-value behind a "surrogate" verdict (and, under the surrogates' rates, behind
# an "independent" one).
DEFAULT_ALPHA = 0.01


def _bits(rows, name, n):
    try:
        array = np.asarray(rows, dtype=np.int64)
    except (TypeError, ValueError):
        raise FingerprintError(f"calibration {name} must be a list of 0/1 rows.") from None
    if array.ndim != 2 or array.shape[1] != n or array.shape[0] < 1 or not np.isin(array, (0, 1)).all():
        raise FingerprintError(f"calibration {name} has shape {array.shape}; expected (models >= 1, {n}) "
                               "of 0/1 (did the fingerprint change after calibration?).")
    return array.astype(bool)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """How suspects are judged, measured on calibration models: which fingerprints each
    calibration surrogate and reference reproduces.

    ``surrogate_matches`` / ``reference_matches``: bool (models, n). ``models``: what the
    calibration models are (they should be models the extraction never optimised
    against: the preset's validation models). ``reference_weights_sha256``: one per
    reference (a reference verified against the fingerprint is left out of its own
    null). ``alpha``: the false-positive rate θ is chosen for, and the largest p-value
    behind a verdict. Everything else is derived: smoothed per-fingerprint rates
    (:func:`cae.stats.match_rates`; retention's null), the likelihood ratio's weights
    (:attr:`lr_rates`) and its null (:func:`cae.stats.lr_null`), each reference's score,
    θ per statistic (:func:`cae.stats.choose_threshold`).
    """

    surrogate_matches: np.ndarray
    reference_matches: np.ndarray
    reference_weights_sha256: tuple[str, ...] = ()
    models: str = ""
    alpha: float = DEFAULT_ALPHA
    transformed_references: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        surrogate = np.asarray(self.surrogate_matches)
        n = surrogate.shape[-1] if surrogate.ndim == 2 else -1
        set_(self, "surrogate_matches", _frozen(_bits(surrogate, "surrogate_matches", n)))
        set_(self, "reference_matches", _frozen(_bits(self.reference_matches, "reference_matches", n)))
        if not isinstance(self.transformed_references, dict):
            raise FingerprintError("calibration transformed_references must map a transformation to 0/1 rows.")
        transformed = {}
        for name, rows in self.transformed_references.items():
            rows = _bits(rows, f"transformed_references[{name!r}]", n)
            if len(rows) != len(self.reference_matches):
                raise FingerprintError(f"calibration transformed_references[{name!r}] has {len(rows)} rows; "
                                       f"expected one per reference ({len(self.reference_matches)}).")
            transformed[str(name)] = _frozen(rows)
        set_(self, "transformed_references", transformed)
        hashes = tuple(self.reference_weights_sha256 or ())
        if hashes and (len(hashes) != len(self.reference_matches) or not all(isinstance(h, str) for h in hashes)):
            raise FingerprintError("calibration reference_weights_sha256 must hold one string per reference.")
        set_(self, "reference_weights_sha256", hashes)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, numbers.Real) or not 0 < self.alpha < 1:
            raise FingerprintError(f"calibration alpha is {self.alpha!r}; expected a probability in (0, 1).")
        if not isinstance(self.models, str):
            raise FingerprintError("calibration models must be a description (str).")

    @property
    def n(self) -> int:
        return self.surrogate_matches.shape[1]

    def check(self, n: int) -> Calibration:
        if self.n != n:
            raise FingerprintError(f"the calibration covers {self.n} fingerprints but the fingerprint has {n}.")
        return self

    @property
    def surrogate_rates(self) -> np.ndarray:
        return stats.match_rates(self.surrogate_matches)

    @property
    def reference_rates(self) -> np.ndarray:
        return stats.match_rates(self.reference_matches)

    @functools.cached_property
    def lr_rates(self) -> tuple[np.ndarray, np.ndarray]:
        """The likelihood ratio's per-fingerprint rates ``(p, q)``: shrunk toward each
        group's mean, and ``p >= q`` on every key (:func:`cae.stats.lr_rates`); computed
        once per calibration."""
        return stats.lr_rates(self.surrogate_matches, self.reference_matches)

    def score(self, matches: np.ndarray, statistic: str = DEFAULT_STATISTIC) -> float:
        """A suspect's score from its bool (n,) matches (:data:`STATISTICS`): retention,
        the likelihood ratio per fingerprint (:func:`cae.stats.likelihood_ratio` / n,
        with :attr:`lr_rates`) or any other registered statistic."""
        return get_statistic(statistic).score(self, np.asarray(matches, bool))

    @property
    def conditions(self) -> tuple[str, ...]:
        """``"none"`` (the references as they are), then each input transformation they
        were also measured behind (:mod:`cae.preprocessing`)."""
        return ("none", *self.transformed_references)

    def references_under(self, condition: str = "none") -> np.ndarray:
        """The calibration references' bool (references, n) matches under ``condition``
        (one of :attr:`conditions`)."""
        return self.reference_matches if condition == "none" else self.transformed_references[condition]

    def null_rates(self, condition: str = "none") -> np.ndarray:
        """Per-fingerprint match rates of the calibration references under ``condition``."""
        return self._null(condition)[0]

    def _null(self, condition, statistic=DEFAULT_STATISTIC):
        """``(rates, spread)`` of the references under ``condition`` for ``statistic``'s
        p-value (its :attr:`Statistic.null`, else the references' rates and spread),
        computed once per calibration (every p-value needs them; the spread takes a search
        per reference)."""
        spec = get_statistic(statistic)
        cache = self.__dict__.setdefault("_nulls", {})
        key = (condition, statistic if spec.null else None)
        if key not in cache:
            if spec.null:
                cache[key] = spec.null(self, condition)
            else:
                matches = self.references_under(condition)
                cache[key] = (stats.match_rates(matches), stats.model_spread(matches))
        return cache[key]

    def reference_scores(self, statistic: str = DEFAULT_STATISTIC, condition: str = "none") -> list[float]:
        """Each calibration reference's score under ``condition``; for a statistic that
        depends on the calibration (the likelihood ratio), with rates from the other
        references (out of sample, or θ would sit too low)."""
        matches = self.references_under(condition)
        if not get_statistic(statistic).calibrated or len(self.reference_matches) < 2:
            return [self.score(m, statistic) for m in matches]
        return [self.without_reference(i).score(m, statistic) for i, m in enumerate(matches)]

    def threshold(self, statistic: str = DEFAULT_STATISTIC) -> float | None:
        """θ for ``statistic``: just above all calibration references but a fraction
        ``alpha`` (:func:`cae.stats.choose_threshold`), under every condition (the highest
        θ over them); None if none exists."""
        cache = self.__dict__.setdefault("_thresholds", {})  # computed once per calibration and statistic
        if statistic not in cache:
            cache[statistic] = self._threshold(statistic)
        return cache[statistic]

    def _threshold(self, statistic):
        fraction = get_statistic(statistic).fraction  # θ in steps of 1/n
        chosen = []
        for condition in self.conditions:
            scores = self.reference_scores(statistic, condition)
            try:
                chosen.append(stats.choose_threshold(scores, alpha=self.alpha,
                                                     n=self.n if fraction else None).theta)
            except ValueError:
                return None
        return max(chosen)

    def p_value(self, matches: np.ndarray, statistic: str = DEFAULT_STATISTIC) -> float:
        """The probability that an independent model scores at least as high as a
        suspect with bool (n,) ``matches``: from the calibration references'
        per-fingerprint rates, keys independent given the model; the largest over the
        conditions. For retention the exact Poisson-binomial tail, for the likelihood
        ratio Chernoff's bound, its null measured on the statistic itself with each
        reference left out (:func:`cae.stats.lr_null`: its weights are chosen on the same
        references) (:mod:`cae.stats`; :attr:`Statistic.p_value`)."""
        spec = get_statistic(statistic)
        matches = np.asarray(matches, bool)
        score = spec.score(self, matches)
        return max(spec.p_value(self, matches, score, *self._null(condition, statistic))
                   for condition in self.conditions)

    def verdict(self, score: float, p_value: float, p_value_derived: float, threshold: float, alpha: float) -> str:
        """cae verify's rule: ``"surrogate"`` when ``score >= threshold`` and
        ``p_value <= alpha``; ``"independent"`` when ``score < threshold`` and
        ``p_value_derived <= alpha``; else ``"inconclusive"``."""
        if score >= threshold:
            return "surrogate" if p_value <= alpha else "inconclusive"
        return "independent" if p_value_derived <= alpha else "inconclusive"

    def judge(self, matches: np.ndarray, statistic: str = DEFAULT_STATISTIC) -> str | None:
        """The verdict on a suspect with bool (n,) ``matches`` at this calibration's θ and
        α (None when it has no θ for ``statistic``)."""
        return self.assess(matches, statistic)["verdict"]

    def assess(self, matches: np.ndarray, statistic: str = DEFAULT_STATISTIC) -> dict[str, Any]:
        """:meth:`judge` with its workings, each computed once: ``score``, ``threshold``,
        ``p_value`` and ``verdict`` (the last None without a θ)."""
        threshold = self.threshold(statistic)
        score, p_value = self.score(matches, statistic), self.p_value(matches, statistic)
        verdict = None if threshold is None else self.verdict(score, p_value, self.p_value_derived(matches),
                                                                threshold, self.alpha)
        return {"score": score, "threshold": threshold, "p_value": p_value, "verdict": verdict}

    def p_value_derived(self, matches: np.ndarray) -> float:
        """The probability that a derived model (the calibration surrogates' rates and
        spread) reproduces as few keys as bool (n,) ``matches``."""
        rates, spread = self._derived_null
        return stats.poisson_binomial_p_value(int(np.sum(matches)), rates, tail="lower", spread=spread)

    @functools.cached_property
    def _derived_null(self):
        """The calibration surrogates' rates and spread, computed once."""
        return self.surrogate_rates, stats.model_spread(self.surrogate_matches)

    def with_models(self, surrogates: Sequence[int] | None = None, references: Sequence[int] | None = None,
                    ) -> Calibration:
        """The calibration of the surrogates and references at int indices ``surrogates``
        and ``references`` (None: all of that group), with their weight hashes and
        matches behind every transformation: the calibration those models alone give."""
        changed = {}
        if surrogates is not None:
            changed["surrogate_matches"] = self.surrogate_matches[list(surrogates)]
        if references is not None:
            keep = list(references)
            changed.update(
                reference_matches=self.reference_matches[keep],
                reference_weights_sha256=tuple(self.reference_weights_sha256[j] for j in keep)
                if self.reference_weights_sha256 else (),
                transformed_references={c: m[keep] for c, m in self.transformed_references.items()})
        return dataclasses.replace(self, **changed)

    def without_reference(self, i: int) -> Calibration:
        """The calibration with reference ``i`` left out (a suspect that is that model)."""
        if len(self.reference_matches) < 2:
            raise FingerprintError("the calibration has one reference; it cannot leave it out.")
        return self.with_models(references=[j for j in range(len(self.reference_matches)) if j != i])

    def without_surrogate(self, i: int) -> Calibration:
        """The calibration with surrogate ``i`` left out."""
        if len(self.surrogate_matches) < 2:
            raise FingerprintError("the calibration has one surrogate; it cannot leave it out.")
        return self.with_models(surrogates=[j for j in range(len(self.surrogate_matches)) if j != i])

    def self_check(self, statistic: str = DEFAULT_STATISTIC) -> list[dict[str, Any]]:
        """What this calibration promises on its own models, leave-one-out: each
        calibration surrogate judged by the calibration without it, and each reference
        likewise (untransformed). The defender's forecast, before any suspect, of how
        often a derived model like the surrogates is flagged and whether an independent
        one like the references is accused (beyond the paper: the models calibrate, so
        they cannot score themselves in sample). One row per model: ``kind``
        ("surrogate" / "reference"), ``index``, ``score``, ``threshold``, ``p_value``,
        ``verdict`` (None without a θ). Needs at least two models in each group."""
        if len(self.surrogate_matches) < 2 or len(self.reference_matches) < 2:
            raise FingerprintError("a self-check needs at least two calibration surrogates and two references "
                                   f"(this one has {len(self.surrogate_matches)} and {len(self.reference_matches)}).")
        rows = []
        for kind, group, leave in (("surrogate", self.surrogate_matches, self.without_surrogate),
                                   ("reference", self.reference_matches, self.without_reference)):
            rows += [{"kind": kind, "index": i, **leave(i).assess(matches, statistic)}
                     for i, matches in enumerate(group)]
        return rows

    def subset(self, keep: np.ndarray) -> Calibration:
        """The calibration of the keys at int indices ``keep`` (:func:`subset`)."""
        return dataclasses.replace(self, surrogate_matches=self.surrogate_matches[:, keep],
                                   reference_matches=self.reference_matches[:, keep],
                                   transformed_references={c: m[:, keep] for c, m in self.transformed_references.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"surrogate_matches": self.surrogate_matches.astype(int).tolist(),
                "reference_matches": self.reference_matches.astype(int).tolist(),
                "reference_weights_sha256": list(self.reference_weights_sha256), "models": self.models,
                "alpha": float(self.alpha),
                "transformed_references": {c: m.astype(int).tolist() for c, m in self.transformed_references.items()},
                # For people reading the manifest; recomputed, never read back.
                **{f"threshold_{name}": self.threshold(name) for name in STATISTICS},
                "reference_retentions": self.reference_scores("retention")}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any], n: int | None = None) -> Calibration:
        if not isinstance(stored, dict):
            raise FingerprintError(f"manifest calibration is {type(stored).__name__}; expected a JSON object.")
        try:
            calibration = cls(surrogate_matches=stored["surrogate_matches"],
                              reference_matches=stored["reference_matches"],
                              reference_weights_sha256=tuple(stored.get("reference_weights_sha256", ())),
                              models=stored.get("models", ""), alpha=stored.get("alpha", DEFAULT_ALPHA),
                              transformed_references=stored.get("transformed_references", {}))
        except KeyError as err:
            raise FingerprintError(f"manifest calibration lacks {err}; re-create it with cae extract.") from None
        return calibration if n is None else calibration.check(n)


def calibrate(fp: Fingerprint, surrogates: Iterable[Suspect], references: Iterable[Suspect], *, models: str = "",
              alpha: float = DEFAULT_ALPHA, transformations: Sequence[tuple[str, float]] = (),
              batch_size: int = 256) -> Calibration:
    """A :class:`Calibration` of ``fp`` from calibration models (anything
    :func:`predict_labels` accepts; Keras models also give their weight hashes).

    ``transformations``: ``(kind, strength)`` pairs of :mod:`cae.preprocessing`; the
    references are also measured behind each (Keras models only), so that θ and the
    p-values hold for an independent model behind any of them (choose those that cost
    the source little accuracy: a thief would not pay more)."""
    def matches(group):
        return [predict_labels(m, fp.x, fp.num_classes, batch_size)[0] == fp.keys for m in group]

    surrogates, references = list(surrogates), list(references)
    if not surrogates or not references:
        raise ValueError("calibration needs at least one surrogate and one reference model.")
    hashes = ()
    if all(_is_keras_model(m) for m in references):
        from cae import models as models_lib

        hashes = tuple(models_lib.weights_sha256(m) for m in references)
    transformed = {}
    if transformations:
        from cae import preprocessing

        if not all(_is_keras_model(m) for m in references):
            raise ValueError("calibrating behind input transformations needs Keras reference models.")
        for kind, strength in transformations:
            behind = [preprocessing.wrap(m, kind, strength) for m in references]
            transformed[preprocessing.name(kind, strength)] = np.array(matches(behind))
    return Calibration(np.array(matches(surrogates)), np.array(matches(references)), hashes, models, alpha,
                       transformed)


# --------------------------------------------------------------------------- verification
@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`.

    ``retention``: fraction of fingerprints on which the suspect's label equals the
    key. ``statistic`` / ``score``: what was compared with ``threshold`` (retention, the
    per-fingerprint likelihood ratio or another of :data:`STATISTICS`). ``verdict``:
    ``"surrogate"`` (score >= θ and p-value <= ``alpha``), ``"independent"`` (score < θ and the suspect matches so few
    keys that a derived model would do so with probability <= ``alpha``) or
    ``"inconclusive"``; ``is_surrogate`` is ``verdict == "surrogate"``. ``p_value``:
    the probability that an independent model scores this high, from the
    per-fingerprint match rates of ``references`` calibration references, averaged over
    how much one model's agreement strays from the others' (:func:`cae.stats.model_spread`;
    for the likelihood ratio :func:`cae.stats.lr_null`, which also corrects for its
    weights having been chosen on those references), and the largest over the input
    transformations the calibration covers; with ``p_value_empirical`` beside it (the
    references' own scores, never below 1 / (references + 1)).
    ``p_value_derived``: the probability that a derived model (the calibration
    surrogates' rates) matches this few keys. ``queries``: inputs sent to the suspect.
    """

    retention: float
    matches: int
    n: int
    threshold: float
    is_surrogate: bool
    queries: int
    p_value: float | None = None
    p_value_binomial: float | None = None
    p_value_empirical: float | None = None
    p0: float | None = None
    fingerprint_sha256: str | None = None
    statistic: str = "retention"
    score: float | None = None
    verdict: str = "inconclusive"
    p_value_derived: float | None = None
    references: int = 0
    surrogates: int = 0
    threshold_source: str = "default"
    left_out: int | None = None
    calibrated: bool = False

    def to_dict(self) -> dict[str, Any]:
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


def _left_out(calibration, suspect):
    """The calibration without the suspect itself when the suspect is one of its
    references (same weights): a model is not judged against its own matches."""
    if calibration is None or not calibration.reference_weights_sha256 or not _is_keras_model(suspect):
        return calibration, None
    from cae import models

    digest = models.weights_sha256(suspect)
    if digest not in calibration.reference_weights_sha256 or len(calibration.reference_matches) < 2:
        return calibration, None
    i = calibration.reference_weights_sha256.index(digest)
    return calibration.without_reference(i), i


def verify(suspect: Suspect, fp: Fingerprint, threshold: float | stats.Threshold | None = None, batch_size: int = 256,
           null: float | stats.Scores | stats.Null | None = None, *, statistic: str = DEFAULT_STATISTIC,
           alpha: float | None = None) -> VerifyResult:

    """Algorithm 1: is ``suspect`` a surrogate of the model that made ``fp``?

    Sends the fingerprint inputs to ``suspect`` (label-only access suffices; any kind
    :func:`predict_labels` accepts) and counts the keys it reproduces. ``statistic``:
    the name of one of :data:`STATISTICS`: ``"retention"`` (the paper's: the fraction of
    keys reproduced), ``"lr"`` (the per-fingerprint log-likelihood ratio of "derived"
    against "independent", from the fingerprint's :class:`Calibration`) or one added by
    :func:`register_statistic`. ``threshold``: θ (a number, or a
    :class:`cae.stats.Threshold`); by default the calibration's θ for the statistic,
    else the statistic's default (:data:`DEFAULT_THRESHOLD` for retention). ``alpha``: the
    largest p-value behind a verdict (default: the calibration's).

    With a calibration the p-values come from it (see :class:`VerifyResult`) and a
    suspect that is one of the calibration references is left out of it. ``null``
    (legacy; for a fingerprint without calibration) sets the p-value from reference
    retentions, a ``p0`` or a :class:`cae.stats.Null` (binomial and empirical; the
    larger is reported). Without either, there is no p-value and the verdict is the
    paper's rule alone: "surrogate" at or above θ, otherwise "inconclusive".
    Pure: nothing is modified except a remote client's query counter.
    """
    if not isinstance(fp, Fingerprint):
        raise TypeError(f"fp must be a Fingerprint (see cae.fingerprint.load), got "
                        f"{type(fp).__name__}.")
    spec = get_statistic(statistic)
    adjective = spec.title.replace(" ", "-")  # "likelihood-ratio"
    calibration, left_out = _left_out(fp.calibration, suspect)
    if spec.calibrated and calibration is None:
        raise ValueError(f"the {adjective} statistic needs a calibrated fingerprint (format 2, made by "
                         f"cae extract with calibration models); use statistic={DEFAULT_STATISTIC!r}.")
    alpha = (calibration.alpha if calibration else DEFAULT_ALPHA) if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a probability in (0, 1), got {alpha!r}.")
    source = "argument"
    if threshold is None:
        threshold = calibration.threshold(statistic) if calibration else None
        source = "calibration"
        if threshold is None:
            if spec.default_threshold is None:
                raise ValueError(f"the calibration has no {adjective} θ; give threshold=.")
            threshold, source = spec.default_threshold, "default"
    threshold = getattr(threshold, "theta", threshold)
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real) \
            or not np.isfinite(threshold) or (spec.fraction and not 0.0 <= float(threshold) <= 1.0):
        others = " or ".join(f"the {s.title}" for s in STATISTICS.values() if not s.fraction)
        others = f" (any finite number for {others})" if others else ""
        raise ValueError(f"threshold must be a number in [0, 1]{others}, got {threshold!r}.")
    threshold = float(threshold)
    labels, queries = predict_labels(suspect, fp.x, fp.num_classes, batch_size=batch_size)
    hits = labels == fp.keys
    matches = int(np.sum(hits))
    retention = matches / fp.n
    extra = {}
    if calibration is not None:
        score = calibration.score(hits, statistic)
        p_value = calibration.p_value(hits, statistic)
        derived = calibration.p_value_derived(hits)
        empirical = stats.empirical_p_value(score, [value for condition in calibration.conditions
                                                    for value in calibration.reference_scores(statistic, condition)])
        verdict = calibration.verdict(score, p_value, derived, threshold, alpha)
        extra = dict(p_value=p_value, p_value_empirical=empirical, p_value_derived=derived,
                     references=len(calibration.reference_matches), surrogates=len(calibration.surrogate_matches))
    else:
        score = spec.score(None, hits)
        p_value, binomial, empirical, p0 = _p_values(null, matches, fp.n)
        extra = dict(p_value=p_value, p_value_binomial=binomial, p_value_empirical=empirical, p0=p0)
        verdict = ("surrogate" if score >= threshold and (p_value is None or p_value <= alpha)
                   else "inconclusive")
    result = VerifyResult(
        retention=retention, matches=matches, n=fp.n, threshold=threshold, is_surrogate=verdict == "surrogate",
        queries=int(queries), fingerprint_sha256=fp.sha256, statistic=statistic, score=score, verdict=verdict,
        threshold_source=source, left_out=left_out, calibrated=calibration is not None, **extra,
    )
    log.info("%s %.3f (retention %d/%d) vs threshold %.3f -> %s", statistic, score, matches, fp.n,
             threshold, verdict)
    return result
