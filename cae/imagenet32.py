"""The paper's 100-class subset of downsampled ImageNet 32x32 (Chrabaszcz et al., 2017).

Files
-----
A folder (``$CAE_DATA_DIR/Imagenet32`` or an explicit path) holding the ten training
batches ``train_data_batch_1`` ... ``train_data_batch_10`` and the validation batch
``val_data``, each either

- ``<name>.npz`` (the ``Imagenet32_train_npz.zip`` / ``Imagenet32_val_npz.zip``
  downloads, unzipped), with arrays ``data`` (N x 3072 uint8) and ``labels``; or
- ``<name>`` without extension: the original pickled batches, dicts with ``'data'``
  and ``'labels'`` (and ``'mean'``, unused).

The files may sit directly in the folder or in sub-folders of it (as the zips unpack).
A row of ``data`` is channel-major (1024 red, 1024 green, 1024 blue values, each row
by row), so it becomes an image by ``reshape(3, 32, 32).transpose(1, 2, 0)``.

Label order (evidence)
----------------------
The labels in these files are 1-based and follow the ILSVRC ``map_clsloc.txt`` order
(``n02119789 1 kit_fox``, ``n02100735 2 English_setter``, ...), not the sorted-WordNet-id
order used by Keras, torchvision and TFDS ``imagenet2012`` (where ``n01440764`` tench is 0):

1. The authors' conversion script (github.com/PatrykChrabaszcz/Imagenet32_Scripts,
   ``image2numpy_imagenet_train.py`` and ``utils.py``) labels each class folder with
   ``int(tok[1])`` read from ``map_clsloc.txt``; validation labels come from
   ``ILSVRC2015_clsloc_validation_ground_truth.txt``, which uses the same ids. Its
   class histogram loop does ``count[i-1] += 1``: labels run 1..1000.
2. TFDS ``imagenet_resized`` (built from these very files) reads ``data['labels']``,
   subtracts 1 ("Labels in the original dataset are 1 indexed") and names the classes
   with ``tensorflow_datasets/image_classification/imagenet_resized_labels.txt``,
   whose lines are WordNet ids in map_clsloc order (first line ``n02119789``). Its
   catalog page warns that these integer labels "do not match those from the other
   ImageNet datasets provided by Tensorflow datasets" and links ``map_clsloc.txt``.
3. The paper's class list itself (appendix) is, with one swap (necklace 755 /
   sandal 751), in increasing map_clsloc order: kit fox 1, Persian cat 10,
   gazelle 12, porcupine 13, ... pole 923. The authors evidently picked the classes
   walking down the ImageNet32 label list.

So ImageNet32 label ``k`` is the WordNet id on line ``k`` of
``imagenet_resized_labels.txt``.

Class names
-----------
The paper names classes by the first synonym of the synset (the names Keras shows).
A name is resolved to the synset whose *first* synonym it is, using the 1000 synset
descriptions shipped with tensorflow-datasets (``datasets/siscore/labels.py``,
``IMAGENET_LABELS_LIST``, in the sorted-WordNet-id order of
``datasets/imagenet2012/labels.txt``). Every one of the 100 names is the first synonym
of exactly one synset. One name is ambiguous if any synonym counts: ``'missile'`` is
n03773504 ("missile") and also the second synonym of n04008634 ("projectile,
missile"); we take n03773504 (ImageNet32 label 251), the synset Keras calls
``missile`` (it calls the other one ``projectile``). ``'sunglass'`` is n04355933
("sunglass"), not n04356056 ("sunglasses, dark glasses, shades").

Sizes
-----
``x_train`` holds *all* training images of the 100 classes (up to 1,300 each; the
paper speaks of 128,000), ``x_test`` all their validation images (50 each, 5,000).
The caller draws the defender's D1 and the adversary's D2 (64,000 each, disjoint)
with :func:`cae.data.split_indices`. Labels are 0..99 in the order of the paper's
list, and ``class_names`` are the paper's names.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import os
import pathlib
import pickle
import zipfile

import numpy as np

from cae.errors import DataError

log = logging.getLogger(__name__)

# The appendix of the paper, in its order (label i of what read returns is CLASS_NAMES[i]).
CLASS_NAMES = (
    "kit fox", "Persian cat", "gazelle", "porcupine", "sea lion",
    "killer whale", "African elephant", "jaguar", "otterhound", "hyena",
    "sorrel", "dalmatian", "fox squirrel", "tiger", "zebra",
    "ram", "orangutan", "squirrel monkey", "komondor", "guinea pig",
    "golden retriever", "macaque", "pug", "water buffalo", "American black bear",
    "giant panda", "armadillo", "gibbon", "German shepherd", "koala",
    "umbrella", "soccer ball", "starfish", "grand piano", "laptop",
    "strawberry", "airliner", "balloon", "space shuttle", "aircraft carrier",
    "tank", "missile", "mountain bike", "steam locomotive", "cab",
    "snowplow", "bookcase", "toilet seat", "pool table", "orange",
    "lemon", "violin", "sax", "volcano", "coral reef",
    "lakeside", "hammer", "vulture", "hummingbird", "flamingo",
    "great white shark", "hammerhead", "stingray", "barracouta", "goldfish",
    "American chameleon", "green snake", "European fire salamander", "loudspeaker", "microphone",
    "digital clock", "sunglass", "combination lock", "nail", "altar",
    "mountain tent", "scoreboard", "mashed potato", "head cabbage", "cucumber",
    "plate", "necklace", "sandal", "ski mask", "teddy",
    "golf ball", "red wine", "sunscreen", "beer glass", "cup",
    "traffic light", "lipstick", "hotdog", "toilet tissue", "cassette",
    "lotion", "barrel", "basketball", "barbell", "pole",
)

NUM_LABELS = 1000
ROW_SIZE = 3 * 32 * 32
TRAIN_BATCHES = tuple(f"train_data_batch_{i}" for i in range(1, 11))
VAL_BATCH = "val_data"

# Files inside the installed tensorflow-datasets package (pinned in cae/pins.py).
_LABEL_ORDER_FILE = "image_classification/imagenet_resized_labels.txt"
_SORTED_WNIDS_FILE = "datasets/imagenet2012/labels.txt"
_SYNSET_NAMES_FILE = "datasets/siscore/labels.py"


# --------------------------------------------------------------------------- label map
def _tfds_file(relative):
    """A file shipped with tensorflow-datasets, found without importing the package."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or spec.origin is None:
        raise DataError(
            "tensorflow-datasets is not installed; cae reads the ImageNet label files it "
            "ships. Install the version pinned in cae/pins.py (pip install -e .)."
        )
    path = pathlib.Path(spec.origin).parent / relative
    if not path.is_file():
        raise DataError(
            f"{path} is missing from the installed tensorflow-datasets; install the version "
            "pinned in cae/pins.py."
        )
    return path


@functools.lru_cache(maxsize=None)
def label_wnids() -> tuple[str, ...]:
    """The 1000 WordNet ids in ImageNet32 label order: label ``k`` (1-based) is item ``k - 1``."""
    wnids = tuple(_tfds_file(_LABEL_ORDER_FILE).read_text().split())
    if len(wnids) != NUM_LABELS or len(set(wnids)) != NUM_LABELS:
        raise DataError(f"{_tfds_file(_LABEL_ORDER_FILE)} does not list 1000 distinct WordNet ids.")
    return wnids


@functools.lru_cache(maxsize=None)
def synsets() -> dict[str, tuple[str, ...]]:
    """``{wnid: (synonym, ...)}`` for the 1000 ILSVRC classes, from tensorflow-datasets' files."""
    wnids = _tfds_file(_SORTED_WNIDS_FILE).read_text().split()
    source = _tfds_file(_SYNSET_NAMES_FILE)
    descriptions = None
    for node in ast.parse(source.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "IMAGENET_LABELS_LIST"):
            descriptions = ast.literal_eval(node.value)
    if descriptions is None or len(descriptions) != NUM_LABELS or len(wnids) != NUM_LABELS:
        raise DataError(f"cannot read the 1000 ImageNet class descriptions from {source}.")
    return {
        wnid: tuple(name.strip() for name in text.split(","))
        for wnid, text in zip(wnids, descriptions)
    }


def wnid_for(name: str) -> str:
    """The WordNet id whose first synonym is ``name`` (see the module notes on ambiguity)."""
    matches = [wnid for wnid, synonyms in synsets().items() if synonyms[0] == name]
    if len(matches) != 1:
        also = sorted(wnid for wnid, synonyms in synsets().items() if name in synonyms[1:])
        raise DataError(
            f"ImageNet class name {name!r} is the first name of {len(matches)} synsets "
            f"{matches} (and a further name of {also}); expected exactly one."
        )
    return matches[0]


@functools.lru_cache(maxsize=None)
def class_labels(names: tuple[str, ...] = CLASS_NAMES) -> np.ndarray:
    """The 1-based ImageNet32 labels of ``names``, as an int64 array in the same order."""
    position = {wnid: k + 1 for k, wnid in enumerate(label_wnids())}
    labels = np.array([position[wnid_for(name)] for name in names], dtype=np.int64)
    if len(set(labels.tolist())) != len(labels):
        raise DataError(f"class names {names} do not name distinct ImageNet classes.")
    labels.setflags(write=False)
    return labels


# --------------------------------------------------------------------------- reading
def _find(source, name):
    """The file holding batch ``name`` (``name.npz`` or pickled ``name``) under ``source``."""
    for candidate in (f"{name}.npz", name):
        direct = source / candidate
        if direct.is_file():
            return direct
        found = sorted(p for p in source.rglob(candidate) if p.is_file())
        if len(found) > 1:
            raise DataError(
                f"{source}: {len(found)} files named {candidate} ({', '.join(map(str, found))}); "
                "keep one of them."
            )
        if found:
            return found[0]
    raise DataError(
        f"{source}: batch file {name}.npz (or the pickled {name}) is missing. The folder "
        f"needs {TRAIN_BATCHES[0]} ... {TRAIN_BATCHES[-1]} and {VAL_BATCH}: unzip "
        "Imagenet32_train_npz.zip and Imagenet32_val_npz.zip into it, or point CAE_DATA_DIR "
        "at the folder that holds Imagenet32/."
    )


def _read_batch(path):
    """``(data, labels)`` of one batch file, checked: (N, 3072) uint8 and N labels in 1..1000."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                data, labels = arrays["data"], arrays["labels"]
        else:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="latin1")
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
            data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    except KeyError as err:
        raise DataError(f"{path} has no {err} entry; expected 'data' and 'labels'.") from err
    except (OSError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError,
            pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise DataError(f"{path} is not a readable ImageNet32 batch ({err!r}); download it again.") from err
    if data.ndim != 2 or data.shape[1] != ROW_SIZE or data.dtype != np.uint8:
        hint = ""
        if data.ndim == 2 and data.shape[1] != ROW_SIZE and data.shape[1] % 3 == 0:
            side = int(round((data.shape[1] // 3) ** 0.5))
            hint = f" (rows of {data.shape[1]} values are {side}x{side} images: use the 32x32 files)"
        raise DataError(
            f"{path}: data is {data.dtype} of shape {data.shape}; expected uint8 of shape "
            f"(N, {ROW_SIZE}), one channel-major 32x32x3 image per row{hint}."
        )
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but labels of shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels have dtype {labels.dtype}; expected integers 1..1000.")
    if len(labels) and (labels.min() < 1 or labels.max() > NUM_LABELS):
        bad = int(labels.min() if labels.min() < 1 else labels.max())
        raise DataError(
            f"{path}: label {bad} is outside 1..{NUM_LABELS}; ImageNet32 labels are 1-based "
            "map_clsloc ids. Is this a 0-based re-export? Use the original files."
        )
    return data, labels.astype(np.int64)


def _select(paths, lookup):
    """Images (NHWC) and 0-based subset labels of the selected classes in ``paths``."""
    xs, ys = [], []
    for path in paths:
        data, labels = _read_batch(path)
        keep = lookup[labels] >= 0
        log.info("%s: %d of %d images are in the %d classes", path.name, int(keep.sum()),
                 len(labels), int((lookup >= 0).sum()))
        xs.append(data[keep].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(lookup[labels[keep]])
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def read(source: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the paper's 100 classes from the ImageNet32 folder ``source``: returns
    ``(x_train, y_train, x_test, y_test)`` (uint8 images, labels 0..99 in the order of
    :data:`CLASS_NAMES`); :func:`cae.data.load` makes them a ``Dataset``.

    Raises :class:`cae.data.DataError` for a missing batch file, a wrong array shape
    or a label outside 1..1000.
    """
    source = pathlib.Path(source)
    if not source.is_dir():
        raise DataError(
            f"{source} is not a folder; ImageNet32 is read from a folder holding "
            f"{TRAIN_BATCHES[0]}.npz ... {TRAIN_BATCHES[-1]}.npz and {VAL_BATCH}.npz."
        )
    train_files = [_find(source, name) for name in TRAIN_BATCHES]
    val_file = _find(source, VAL_BATCH)
    lookup = np.full(NUM_LABELS + 1, -1, dtype=np.int64)
    lookup[class_labels()] = np.arange(len(CLASS_NAMES))
    x_train, y_train = _select(train_files, lookup)
    x_test, y_test = _select([val_file], lookup)
    log.info("ImageNet32 subset: %d train and %d test images of %d classes",
             len(y_train), len(y_test), len(CLASS_NAMES))
    return x_train, y_train, x_test, y_test
