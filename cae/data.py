"""Datasets: CIFAR-10, CINIC-10 and the paper's 100-class ImageNet32 subset.

:data:`REGISTRY` is the one place a dataset is described (:class:`DatasetInfo`: its name
and title, classes, test-set size, files, reader, and the datasets it shares images
with); loading (:func:`load`, :func:`fetch`), cost plans (:mod:`cae.plan`), figure and
table titles (:func:`title`) and removal attacks (:func:`share_images`) read it. A new
dataset is one :func:`register` call with its reader.

Every loader returns a :class:`Dataset` of uint8 images of shape (N, 32, 32, 3) and
int64 labels. Images become float32 in [0, 1] only when fed to a model
(:func:`to_float`); normalisation lives inside the models.

Files are looked up as: an explicit ``path``, else ``$CAE_DATA_DIR``, else the
per-user cache (:func:`cae.paths.data_dir`). Nothing here downloads: a missing file is
reported at once with the file name and the folder to put it in. ``cae data fetch``
(:func:`fetch`) is the only code that touches the network.

Decoding is done once per archive: the decoded arrays are cached under
``$CAE_CACHE_DIR/datasets`` keyed by the archive's SHA-256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import pathlib
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cae import checks, imagenet32, paths
from cae.errors import DataError

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

IMAGE_SHAPE = (32, 32, 3)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A labelled image dataset with a training pool and a test split.

    ``x_train`` is the pool that is split into the defender's D1 and the adversary's D2
    (for CINIC-10 it is train + valid, as in the paper).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def info(self) -> dict:
        """Split sizes and images per class, as plain data (``cae data info``)."""
        def per_class(y):
            counts = np.bincount(y, minlength=self.num_classes)
            return {name: int(c) for name, c in zip(self.class_names, counts)}

        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "image_shape": list(self.x_train.shape[1:]),
            "train": int(len(self.y_train)),
            "test": int(len(self.y_test)),
            "train_per_class": per_class(self.y_train),
            "test_per_class": per_class(self.y_test),
            "sha256": self.sha256,
        }


@dataclasses.dataclass(frozen=True)
class Archive:
    """An official file a dataset can be read from."""

    filename: str
    url: str = ""
    sha256: str = ""


# A reader: the dataset's file or folder -> (x_train, y_train, x_test, y_test), uint8
# images (N, 32, 32, 3) and int64 labels 0..K-1 in the order of its class names.
Reader = Callable[[pathlib.Path], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Everything cae knows of a dataset before reading it.

    ``name``: how specs, presets and the command line name it. ``title``: its name in
    figures and tables. ``class_names``: label k is ``class_names[k]``. ``test_size``:
    images in its test split (a cost plan needs no data). ``archives``: the files or
    folders it may be read from, in the order they are tried. ``read``: the
    :data:`Reader`. ``overlaps``: datasets that share images with it (neither may be the
    other's Knockoff transfer set; :func:`share_images` looks both ways).
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    test_size: int
    archives: tuple[Archive, ...]
    read: Reader
    overlaps: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# Every dataset cae reads, by name, in the order they were registered (:func:`register`).
REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    """Add dataset ``info`` to :data:`REGISTRY` (a name may be registered once)."""
    if not isinstance(info, DatasetInfo):
        raise ValueError(f"info={info!r} is not allowed; expected a cae.data.DatasetInfo.")
    if not info.name or info.name in REGISTRY:
        raise ValueError(f"dataset name {info.name!r} is empty or already registered; choose another "
                         "(or cae.data.unregister the old one first).")
    checks.integer("num_classes", info.num_classes, 2, "at least 2 class names")
    checks.integer("test_size", info.test_size, 0)
    if not info.archives or not callable(info.read):
        raise ValueError(f"dataset {info.name!r} needs at least one archive and a callable reader.")
    REGISTRY[info.name] = info
    return info


def unregister(name: str) -> DatasetInfo:
    """Remove dataset ``name`` from :data:`REGISTRY` and return its entry."""
    return REGISTRY.pop(registered(name).name)


def registered(name: str) -> DatasetInfo:
    """The :data:`REGISTRY` entry of dataset ``name``, or a DataError naming the known ones."""
    if name not in REGISTRY:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(names())}.")
    return REGISTRY[name]


def title(name: str) -> str:
    """How dataset ``name`` is named in figures and tables (``name`` itself if unknown)."""
    return REGISTRY[name].title if name in REGISTRY else name


def share_images(first: str, second: str) -> bool:
    """Whether datasets ``first`` and ``second`` share images (either lists the other
    in :attr:`DatasetInfo.overlaps`)."""
    return any(one in REGISTRY and other in REGISTRY[one].overlaps
               for one, other in ((first, second), (second, first)))


def onehot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float32 (n, num_classes) one-hot rows of int ``labels``."""
    return np.eye(num_classes, dtype=np.float32)[labels]


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Outputs of a Keras ``model`` on float images, batched, as a NumPy array: the one
    predict helper of the package.

    On TensorFlow the batches go through ``model(batch, training=False)`` eagerly:
    ``Model.predict`` traces a graph for every model it meets, and the package predicts
    with many models once each (the zoo, wrapped suspects, calibration models), where
    the trace costs more than the prediction (0.1-0.5 s a model here, against no
    difference in the outputs). Other backends, and objects that only share Keras'
    ``predict`` signature, keep ``predict``."""
    import keras

    if keras.backend.backend() != "tensorflow" or not isinstance(model, keras.Model) or not len(x):
        return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    return np.concatenate([keras.ops.convert_to_numpy(model(x[start:start + batch_size], training=False))
                           for start in range(0, len(x), batch_size)])


def names() -> tuple[str, ...]:
    """The registered datasets' names."""
    return tuple(REGISTRY)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images -> float32 in [0, 1] (float input is checked and passed through)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return check_images(images)


def check_images(x: np.ndarray, name: str = "x", shape: tuple[int, ...] | None = IMAGE_SHAPE,
                 in_range: bool = True) -> np.ndarray:
    """Validate a float batch for a model: shape (N, 32, 32, 3), finite, in [0, 1].

    ``shape=None`` accepts any per-example shape; ``in_range=False`` accepts finite
    values outside [0, 1] (points off the image cube, as in a decision-space plot).
    """
    x = np.asarray(x)
    if shape is not None and (x.ndim != 4 or x.shape[1:] != shape):
        raise ValueError(
            f"{name} has shape {x.shape}; expected (N, 32, 32, 3) images "
            "(channels last). Reshape or resize the inputs."
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"{name} has dtype {x.dtype}; expected float32 in [0, 1] "
            "(convert uint8 images with cae.data.to_float)."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf values; inputs must be finite in [0, 1].")
    if in_range and x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(
            f"{name} has values in [{x.min():.3g}, {x.max():.3g}]; expected [0, 1]. "
            "Divide 0-255 images by 255; do not normalise them (models normalise inside)."
        )
    return x.astype(np.float32, copy=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _folder_digest(folder):
    """A cheap content key for an unpacked folder: relative names and sizes."""
    digest = hashlib.sha256()
    for item in sorted(p for p in pathlib.Path(folder).rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(folder)}:{item.stat().st_size}\n".encode())
    return digest.hexdigest()


def locate(name: str, path: str | os.PathLike | None = None) -> pathlib.Path:
    """The file or folder to read dataset ``name`` from, or a clear error."""
    archives = registered(name).archives
    if path is not None:
        path = pathlib.Path(path)
        if not path.exists():
            raise DataError(f"dataset file {path} does not exist.")
        return path
    folder = paths.data_dir()
    for archive in archives:
        candidate = folder / archive.filename
        if candidate.exists():
            return candidate
    wanted = " or ".join(a.filename for a in archives)
    fetchable = [a for a in archives if a.url]
    hint = f", or run `cae data fetch {name}` where the network allows" if fetchable else ""
    raise DataError(
        f"dataset {name!r} not found: put {wanted} in {folder} "
        f"(set CAE_DATA_DIR to the folder that holds it){hint}."
    )


def load(name: str, path: str | os.PathLike | None = None) -> Dataset:
    """Load dataset ``name`` (decoding once, then from the cache)."""
    info = registered(name)
    source = locate(name, path)
    if source.is_dir():
        key = _folder_digest(source)
    else:
        key = sha256_file(source)
        expected = {a.filename: a.sha256 for a in info.archives if a.sha256}
        if source.name in expected and key != expected[source.name]:
            raise DataError(
                f"{source} has SHA-256 {key}, expected {expected[source.name]}: the file "
                "is corrupt or not the official one. Download it again."
            )
    cached = paths.cache_dir() / "datasets" / f"{name}-{key[:16]}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as arrays:
                return Dataset(
                    name, arrays["x_train"], arrays["y_train"], arrays["x_test"],
                    arrays["y_test"], tuple(str(c) for c in arrays["class_names"]), key,
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("ignoring unreadable decoded cache %s (%s)", cached, err)
    log.info("decoding %s from %s (once; cached in %s)", name, source, cached)
    dataset = Dataset(name, *info.read(source), info.class_names, key)
    _validate(dataset, source)
    paths.atomic_save(
        cached,
        lambda tmp: np.savez(
            tmp, x_train=dataset.x_train, y_train=dataset.y_train, x_test=dataset.x_test,
            y_test=dataset.y_test, class_names=np.array(dataset.class_names),
        ),
        suffix=".npz",
    )
    return dataset


def _validate(dataset, source):
    for split in ("train", "test"):
        x = getattr(dataset, f"x_{split}")
        y = getattr(dataset, f"y_{split}")
        if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(
                f"{source}: {split} images have shape {x.shape[1:]} and dtype {x.dtype}; "
                "expected 32x32x3 uint8 images."
            )
        if len(x) != len(y):
            raise DataError(f"{source}: {len(x)} {split} images but {len(y)} labels.")
        if len(y) and (y.min() < 0 or y.max() >= dataset.num_classes):
            raise DataError(
                f"{source}: {split} label {int(y.max() if y.max() >= dataset.num_classes else y.min())} "
                f"is outside the {dataset.num_classes} classes."
            )


# --------------------------------------------------------------------------- readers
# What a broken or truncated (gzipped) tar archive raises while it is read.
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


def _is_image_name(name):
    """An image file name, not a macOS resource fork (``._name``) or hidden file."""
    base = pathlib.PurePosixPath(name).name
    return base.lower().endswith((".jpg", ".jpeg", ".png")) and not base.startswith(".")


def _decode_image(data, where):
    from PIL import Image

    try:
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.uint8)
    except Exception as err:  # PIL raises many types for broken files
        raise DataError(f"{where}: cannot decode image ({err}).") from err
    if image.shape != IMAGE_SHAPE:
        raise DataError(
            f"{where}: image is {image.shape[1]}x{image.shape[0]}, expected 32x32. "
            "cae reads 32x32 datasets only; resize the images first."
        )
    return image


def _image_folder_entries(source, splits):
    """Yield (split, class, name, bytes) from an archive or folder laid out as
    ``[prefix/]<split>/<class>/<image>``."""
    if source.is_dir():
        for item in sorted(source.rglob("*")):
            parts = item.relative_to(source).parts
            if _is_image_name(item.name) and len(parts) >= 3 and parts[-3] in splits:
                yield parts[-3], parts[-2], str(item), item.read_bytes()
        return
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                parts = pathlib.PurePosixPath(member.name).parts
                if (member.isfile() and _is_image_name(member.name)
                        and len(parts) >= 3 and parts[-3] in splits):
                    yield parts[-3], parts[-2], member.name, tar.extractfile(member).read()
    except _TAR_ERRORS as err:
        raise DataError(f"{source} is not a readable tar archive ({err}); download it again.") from err


def read_image_folder(source: pathlib.Path, split_map: Mapping[str, str], class_names: Sequence[str] | None = None,
                      ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], tuple[str, ...]]:
    """Read ``<split>/<class>/<image>`` data (CIFAR-10 JPEGs, CINIC-10).

    ``split_map`` maps folder names to ``"train"`` or ``"test"`` (CINIC-10 folds
    ``valid`` into the training pool). Classes are the sorted folder names unless
    given. Returns ``{"train": (x, y), "test": (x, y)}, class_names``.
    """
    from tqdm.auto import tqdm

    records = {"train": [], "test": []}
    for split, cls, where, data in tqdm(
        _image_folder_entries(source, tuple(split_map)), desc=f"decoding {source.name}",
        unit="img", mininterval=2.0,
    ):
        if class_names is not None and cls not in class_names:
            raise DataError(
                f"{where}: unexpected class folder {cls!r}; expected one of {list(class_names)}."
            )
        records[split_map[split]].append((cls, where, _decode_image(data, where)))
    found = sorted({cls for rec in records.values() for cls, _, _ in rec})
    if class_names is None:
        class_names = tuple(found)
    index = {c: i for i, c in enumerate(class_names)}
    out = {}
    for split, rec in records.items():
        if not rec:
            raise DataError(f"{source}: no images for the {split} split (folders {list(split_map)}).")
        rec.sort(key=lambda r: (index[r[0]], r[1]))
        x = np.stack([image for _, _, image in rec])
        y = np.array([index[cls] for cls, _, _ in rec], dtype=np.int64)
        out[split] = (x, y)
    return out, tuple(class_names)


def _read_cifar10(source):
    if source.name.startswith("cifar-10-python") or (source.is_dir() and (source / "data_batch_1").exists()):
        return _read_cifar10_python(source)
    splits, _ = read_image_folder(source, {"train": "train", "test": "test"}, CIFAR10_CLASSES)
    return (*splits["train"], *splits["test"])


# What unpickling a file that is not the expected pickle raises.
_PICKLE_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
    IndexError, KeyError,
)


def _read_cifar10_python(source):
    batches = {}
    try:
        if source.is_dir():
            for item in source.iterdir():
                batches[item.name] = item.read_bytes()
        else:
            with tarfile.open(source, "r:*") as tar:
                for member in tar:
                    if member.isfile():
                        batches[pathlib.PurePosixPath(member.name).name] = tar.extractfile(member).read()
    except _TAR_ERRORS as err:
        raise DataError(f"{source} is not a readable tar archive ({err}); download it again.") from err

    def read(names):
        xs, ys = [], []
        for batch_name in names:
            if batch_name not in batches:
                raise DataError(f"{source}: batch {batch_name} is missing; the archive is incomplete.")
            try:
                batch = pickle.loads(batches[batch_name], encoding="bytes")
                data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
            except _PICKLE_ERRORS as err:
                raise DataError(f"{source}: batch {batch_name} is not a CIFAR-10 pickle ({err!r}).") from err
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
                raise DataError(
                    f"{source}: batch {batch_name} holds {data.dtype} data of shape {data.shape}; "
                    "expected uint8 rows of 3072 values (32x32x3 images, channel-major)."
                )
            if labels.shape != (len(data),):
                raise DataError(
                    f"{source}: batch {batch_name} has {len(data)} images but {labels.size} labels."
                )
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(labels.astype(np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    train = read([f"data_batch_{i}" for i in range(1, 6)])
    test = read(["test_batch"])
    return (*train, *test)


def _read_cinic10(source):
    splits, _ = read_image_folder(source, {"train": "train", "valid": "train", "test": "test"}, CIFAR10_CLASSES)
    return (*splits["train"], *splits["test"])


register(DatasetInfo(
    "cifar10", "CIFAR-10", CIFAR10_CLASSES, 10_000,
    (
        Archive(
            "cifar10-jpeg.tar.gz",
            sha256="e17cde64cefa02a740a26d8441a63197cd8af95434ccef67c850b1673d19ff69",
        ),
        Archive(
            "cifar-10-python.tar.gz",
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    ),
    _read_cifar10,
))
# CINIC-10's training pool is its train + valid folders (as in the paper); it holds all
# 60,000 CIFAR-10 images, the test ones included.
register(DatasetInfo(
    "cinic10", "CINIC-10", CIFAR10_CLASSES, 90_000,
    (
        Archive(
            "CINIC-10.tar.gz",
            url="https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz",
            sha256="31b095acf6d75e25a9e028bae82a07a0f94ff6b00671be2802d34ac4efa81a9e",
        ),
        Archive("CINIC-10"),
    ),
    _read_cinic10,
    overlaps=("cifar10",),
))
register(DatasetInfo(
    "imagenet32", "ImageNet32", imagenet32.CLASS_NAMES, 5_000,
    (Archive("Imagenet32"), Archive("imagenet32")),
    imagenet32.read,
))


# --------------------------------------------------------------------------- splits
def split_indices(n: int, sizes: Sequence[int], seed: int) -> tuple[np.ndarray, ...]:
    """Disjoint, seeded index sets of the given sizes drawn from ``range(n)``.

    ``split_indices(len(pool), (85_000, 95_000), seed)`` gives the paper's D1 and D2.
    """
    sizes = tuple(int(s) for s in sizes)
    if any(s < 0 for s in sizes) or sum(sizes) > n:
        raise ValueError(f"cannot draw disjoint subsets of sizes {sizes} from {n} examples.")
    order = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for size in sizes:
        out.append(np.sort(order[start:start + size]))
        start += size
    return tuple(out)


# --------------------------------------------------------------------------- fetch
# Seconds a download waits to connect and for each read: offline, fetch fails at once.
FETCH_TIMEOUT = 5


def fetch(name: str, folder: str | os.PathLike | None = None, timeout: float = FETCH_TIMEOUT,
          if_missing: bool = False) -> pathlib.Path:
    """Download ``name``'s official archive into the data folder and verify its SHA-256.

    The download is streamed to a temporary file next to the target and renamed onto
    it only when the checksum matches; a mismatch leaves nothing behind. Returns the
    archive's path (at once, without downloading, when a verified copy is there).
    ``timeout`` (seconds) bounds connecting and every read, so that a machine without
    network fails within seconds. With ``if_missing``, a folder that already holds any
    file the dataset is read from (:attr:`DatasetInfo.archives`) is left as it is and that file
    returned.
    """
    import urllib.request

    known = registered(name).archives
    archives = [a for a in known if a.url]
    folder = pathlib.Path(folder) if folder else paths.data_dir()
    present = [folder / a.filename for a in known if (folder / a.filename).exists()]
    if if_missing and present:
        log.info("%s is already there", present[0])
        return present[0]
    if not archives:
        wanted = " or ".join(a.filename for a in known)
        raise DataError(
            f"dataset {name!r} has no official download cae can verify; put {wanted} "
            f"in {folder} yourself (set CAE_DATA_DIR to the folder that holds it)."
        )
    archive = archives[0]
    target = folder / archive.filename
    if target.exists() and sha256_file(target) == archive.sha256:
        log.info("%s is already there and verified", target)
        return target
    log.info("downloading %s to %s", archive.url, target)

    def download(tmp):
        digest = hashlib.sha256()
        with urllib.request.urlopen(archive.url, timeout=timeout) as response, open(tmp, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != archive.sha256:
            raise DataError(
                f"{archive.url} has SHA-256 {digest.hexdigest()}, expected {archive.sha256}; "
                f"not saved. Try again, or fetch it elsewhere and put {archive.filename} in {folder}."
            )

    try:
        paths.atomic_save(target, download)
    except OSError as err:  # urllib's URLError and socket timeouts are OSErrors
        raise DataError(
            f"could not download {archive.url} ({err}). Fetch it elsewhere and put "
            f"{archive.filename} in {folder} (set CAE_DATA_DIR to the folder that holds it)."
        ) from err
    return target
