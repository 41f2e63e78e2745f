"""Tests of cae.data and cae.imagenet32 on tiny archives built here, in every format.

Nothing is downloaded: ``urllib.request.urlopen`` fails the test if it is called, and
the download paths are tested with a fake ``urlopen`` or against 127.0.0.1.
"""

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import socket
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from cae import data, imagenet32
from cae.data import CIFAR10_CLASSES, DataError

# Read before the autouse fixture below points the variables into tmp_path.
REAL_DATA_DIR = os.environ.get("CAE_DATA_DIR")
REAL_CACHE_DIR = os.environ.get("CAE_CACHE_DIR")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Data and cache folders inside tmp_path, and no network."""
    monkeypatch.setenv("CAE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()

    def no_network(*args, **kwargs):
        raise AssertionError(f"a test tried to download: urlopen{args}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path


def with_archives(monkeypatch, name, *archives):
    """Read dataset ``name`` from ``archives`` for this test only."""
    monkeypatch.setitem(data.REGISTRY, name, dataclasses.replace(data.REGISTRY[name], archives=archives))


# --------------------------------------------------------------------------- builders
def pattern(cls, index):
    """A 32x32x3 image whose three channels encode (class, index) differently.

    Channel 0 is constant (class), channel 1 a constant (index), channel 2 a gradient
    along the rows, so swapped channels or a wrong transpose show in the pixels.
    """
    image = np.empty((32, 32, 3), dtype=np.uint8)
    image[..., 0] = 20 * cls + 5
    image[..., 1] = 7 * index + 3
    image[..., 2] = (np.arange(32, dtype=np.uint8) * 8)[:, None]
    return image


def encode(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def image_layout(splits, classes=CIFAR10_CLASSES):
    """``{split: {class: [image, ...]}}`` with ``splits`` = ``{split: images per class}``."""
    return {
        split: {name: [pattern(c, i) for i in range(count)] for c, name in enumerate(classes)}
        for split, count in splits.items()
    }


def write_image_tar(path, layout, fmt="PNG", prefix=""):
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    with tarfile.open(path, "w:gz") as tar:
        for split, per_class in layout.items():
            for cls, images in per_class.items():
                for i, image in enumerate(images):
                    payload = encode(image, fmt)
                    info = tarfile.TarInfo(f"{prefix}{split}/{cls}/{i:04d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    return path


def write_image_folder(root, layout, fmt="PNG"):
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    for split, per_class in layout.items():
        for cls, images in per_class.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                (root / split / cls / f"{i:04d}.{ext}").write_bytes(encode(image, fmt))
    return root


def cifar_batch(images, labels):
    """An official-style CIFAR-10 batch: channel-major rows, bytes keys."""
    rows = np.stack(images).transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b"data": rows, b"labels": list(labels), b"batch_label": b"x"})


def write_cifar_python(path, per_class_train=1, per_class_test=1, bad_label=None):
    """cifar-10-python.tar.gz layout: cifar-10-batches-py/data_batch_1..5, test_batch."""
    members = {}
    for b in range(1, 6):
        images = [pattern(c, b) for c in range(10) for _ in range(per_class_train)]
        labels = [c for c in range(10) for _ in range(per_class_train)]
        if bad_label is not None and b == 3:
            labels[0] = bad_label
        members[f"data_batch_{b}"] = cifar_batch(images, labels)
    images = [pattern(c, 9) for c in range(10) for _ in range(per_class_test)]
    members["test_batch"] = cifar_batch(images, [c for c in range(10) for _ in range(per_class_test)])
    members["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CIFAR10_CLASSES]})
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def imagenet_image(label, row):
    """A 32x32x3 image that encodes its 1-based ImageNet32 label and its row number."""
    image = np.empty((32, 32, 3), dtype=np.uint8)
    image[..., 0] = label % 256
    image[..., 1] = label // 256
    image[..., 2] = (np.arange(32, dtype=np.uint8) + row)[None, :]
    return image


def write_imagenet32(root, fmt="npz", subfolders=False, batch_labels=None, shape=None):
    """Ten train batches and val_data in ``fmt`` (npz or pickle).

    Each train batch holds 3 images of selected classes and 2 of other classes; the
    validation batch 4 selected and 2 other. Returns ``{"train": labels, "test": labels}``
    (1-based) of the selected images in file order.
    """
    selected = imagenet32.class_labels()
    others = np.setdiff1d(np.arange(1, 1001), selected)
    rng = np.random.default_rng(0)
    kept = {"train": [], "test": []}
    names = [(f"train_data_batch_{i}", "train", 3) for i in range(1, 11)] + [("val_data", "test", 4)]
    for name, split, count in names:
        labels = np.concatenate([rng.choice(selected, count), rng.choice(others, 2)])
        labels = rng.permutation(labels)
        if batch_labels and name in batch_labels:
            labels = np.asarray(batch_labels[name])
        images = np.stack([imagenet_image(int(lab), row) for row, lab in enumerate(labels)])
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
        if shape is not None and name == "train_data_batch_2":
            rows = np.zeros(shape, dtype=np.uint8)
        kept[split].extend(int(lab) for lab in labels if lab in selected)
        folder = root / ("Imagenet32_val_npz" if split == "test" else "Imagenet32_train_npz") if subfolders else root
        folder.mkdir(parents=True, exist_ok=True)
        if fmt == "npz":
            np.savez(folder / f"{name}.npz", data=rows, labels=labels)
        else:
            with open(folder / name, "wb") as handle:
                pickle.dump({"data": rows, "labels": labels.tolist(), "mean": rows.mean(0)}, handle, protocol=2)
    return kept


# --------------------------------------------------------------------------- CIFAR-10
def check_pattern_dataset(dataset, per_class, lossless=True):
    for split, (x, y) in {"train": (dataset.x_train, dataset.y_train),
                          "test": (dataset.x_test, dataset.y_test)}.items():
        assert x.dtype == np.uint8 and x.shape == (len(y), 32, 32, 3)
        assert y.dtype == np.int64
        assert np.bincount(y, minlength=dataset.num_classes).tolist() == [per_class[split]] * dataset.num_classes
        tolerance = 0 if lossless else 3
        for cls in range(dataset.num_classes):
            images = x[y == cls].astype(int)
            assert np.abs(images[..., 0] - (20 * cls + 5)).max() <= tolerance, (split, cls)
            gradient = (np.arange(32) * 8)[None, :, None]
            assert np.abs(images[..., 2] - gradient).max() <= tolerance + 2, (split, cls)


def test_cifar10_jpeg_tar(isolated):
    layout = image_layout({"train": 3, "test": 2})
    write_image_tar(isolated / "data" / "custom-cifar.tar.gz", layout, fmt="JPEG", prefix="cifar10/")
    dataset = data.load("cifar10", isolated / "data" / "custom-cifar.tar.gz")
    assert dataset.class_names == CIFAR10_CLASSES
    assert len(dataset.x_train) == 30 and len(dataset.x_test) == 20
    check_pattern_dataset(dataset, {"train": 3, "test": 2}, lossless=False)


def test_cifar10_python_tar_is_lossless_and_channel_major(isolated):
    path = write_cifar_python(isolated / "data" / "cifar-10-python-small.tar.gz", per_class_train=2)
    dataset = data.load("cifar10", path)
    assert dataset.x_train.shape == (5 * 10 * 2, 32, 32, 3) and dataset.x_test.shape == (10, 32, 32, 3)
    # batch b holds pattern(c, b): channel 1 tells the batch, exactly
    expected = np.repeat(np.arange(1, 6), 20) * 7 + 3
    assert (dataset.x_train[:, 0, 0, 1] == expected).all()
    check_pattern_dataset(dataset, {"train": 10, "test": 1})


def test_cifar10_found_in_data_dir_by_official_name(isolated, monkeypatch):
    path = write_cifar_python(isolated / "data" / "cifar-10-python.tar.gz")
    expected = {"cifar-10-python.tar.gz": data.sha256_file(path)}
    with_archives(monkeypatch, "cifar10", *(data.Archive(a.filename, a.url, expected.get(a.filename, a.sha256))
                                            for a in data.REGISTRY["cifar10"].archives))
    assert data.locate("cifar10") == path
    assert data.load("cifar10").num_classes == 10


# --------------------------------------------------------------------------- CINIC-10
CINIC_COUNTS = {"train": 2, "valid": 1, "test": 2}


@pytest.mark.parametrize("form", ["tar.gz", "folder"])
def test_cinic10_png_train_and_valid_form_the_training_pool(isolated, form):
    layout = image_layout(CINIC_COUNTS)
    if form == "tar.gz":
        path = write_image_tar(isolated / "data" / "CINIC-10-small.tar.gz", layout)
    else:
        path = write_image_folder(isolated / "data" / "CINIC-10", layout)
        # a macOS resource fork next to the images is skipped, not decoded
        (path / "train" / "cat" / "._0000.png").write_bytes(b"\x00\x05\x16\x07junk")
    dataset = data.load("cinic10", path)
    assert dataset.name == "cinic10" and dataset.class_names == CIFAR10_CLASSES
    check_pattern_dataset(dataset, {"train": 3, "test": 2})
    # within a class, the images come in a fixed order: train/0000, train/0001, valid/0000
    assert dataset.x_train[dataset.y_train == 4][:, 0, 0, 1].tolist() == [3, 10, 3]


def test_cinic10_folder_found_through_data_dir(isolated):
    write_image_folder(isolated / "data" / "CINIC-10", image_layout(CINIC_COUNTS))
    assert data.locate("cinic10") == isolated / "data" / "CINIC-10"
    assert len(data.load("cinic10").x_test) == 20


# --------------------------------------------------------------------------- ImageNet32
EXPECTED_IMAGENET32_LABELS = [
    1, 10, 12, 13, 14, 22, 24, 30, 31, 34, 39, 41, 53, 76, 80, 81, 83, 92, 97, 101,
    125, 138, 143, 162, 163, 169, 178, 185, 211, 213, 220, 222, 225, 227, 228, 229, 230, 233, 234, 246,
    250, 251, 255, 263, 267, 278, 300, 312, 314, 319, 320, 343, 355, 362, 365, 366, 375, 399, 415, 425,
    442, 444, 446, 447, 450, 465, 480, 494, 508, 509, 523, 574, 583, 585, 677, 728, 729, 734, 736, 743,
    754, 755, 751, 776, 786, 792, 798, 810, 811, 859, 861, 867, 885, 889, 890, 894, 905, 908, 916, 923,
]


def test_imagenet32_class_map():
    labels = imagenet32.class_labels()
    assert len(imagenet32.CLASS_NAMES) == 100 == len(set(imagenet32.CLASS_NAMES))
    assert labels.tolist() == EXPECTED_IMAGENET32_LABELS
    # map_clsloc order, not sorted WordNet ids (where kit fox n02119789 would be label 279)
    assert imagenet32.label_wnids()[0] == "n02119789" == imagenet32.wnid_for("kit fox")
    assert imagenet32.wnid_for("missile") == "n03773504"  # not n04008634 "projectile, missile"
    assert imagenet32.wnid_for("sunglass") == "n04355933"  # not "sunglasses"
    assert imagenet32.synsets()["n01440764"][0] == "tench"
    with pytest.raises(DataError, match="crane"):
        imagenet32.wnid_for("crane")  # two synsets are called crane


@pytest.mark.parametrize("fmt,subfolders", [("npz", False), ("npz", True), ("pickle", False)])
def test_imagenet32_reads_the_100_classes(isolated, fmt, subfolders):
    root = isolated / "data" / "Imagenet32"
    kept = write_imagenet32(root, fmt=fmt, subfolders=subfolders)
    dataset = data.load("imagenet32")
    assert dataset.class_names == imagenet32.CLASS_NAMES and dataset.num_classes == 100
    labels = imagenet32.class_labels()
    for split, x, y in (("train", dataset.x_train, dataset.y_train), ("test", dataset.x_test, dataset.y_test)):
        assert x.dtype == np.uint8 and x.shape == (len(kept[split]), 32, 32, 3)
        assert y.dtype == np.int64 and y.min() >= 0 and y.max() < 100
        # every image is back under its own class, and only the selected classes remain
        decoded = x[:, 0, 0, 0].astype(int) + 256 * x[:, 0, 0, 1].astype(int)
        assert decoded.tolist() == labels[y].tolist() == kept[split]
        # channel-major rows: channel 2 varies along the width
        assert (np.diff(x[:, 0, :, 2].astype(int), axis=1) == 1).all()
    assert len(dataset.x_train) == 30 and len(dataset.x_test) == 4


def test_imagenet32_missing_batch_names_the_file(isolated):
    root = isolated / "data" / "Imagenet32"
    write_imagenet32(root)
    (root / "train_data_batch_7.npz").unlink()
    with pytest.raises(DataError, match=r"train_data_batch_7\.npz.*missing"):
        data.load("imagenet32")


def test_imagenet32_wrong_shape(isolated):
    root = isolated / "data" / "Imagenet32"
    write_imagenet32(root, shape=(5, 3 * 64 * 64))
    with pytest.raises(DataError, match=r"train_data_batch_2.*\(5, 12288\).*64x64"):
        data.load("imagenet32")


@pytest.mark.parametrize("bad", [0, 1001])
def test_imagenet32_label_outside_1_to_1000(isolated, bad):
    root = isolated / "data" / "Imagenet32"
    write_imagenet32(root, batch_labels={"val_data": [1, bad, 10]})
    with pytest.raises(DataError, match=rf"val_data.*label {bad} is outside 1\.\.1000"):
        data.load("imagenet32")


def test_imagenet32_corrupt_batch(isolated):
    root = isolated / "data" / "Imagenet32"
    write_imagenet32(root, fmt="pickle")
    (root / "train_data_batch_4").write_bytes(b"\x80\x04 this is not a pickle")
    with pytest.raises(DataError, match="train_data_batch_4.*not a readable ImageNet32 batch"):
        data.load("imagenet32")


# --------------------------------------------------------------------------- cache
def test_decoding_is_cached(isolated, monkeypatch):
    path = write_image_tar(isolated / "data" / "tiny.tar.gz", image_layout({"train": 2, "test": 1}))
    first = data.load("cifar10", path)
    cached = list((isolated / "cache" / "datasets").glob("cifar10-*.npz"))
    assert len(cached) == 1

    def must_not_decode(source):
        raise AssertionError("decoded again although the cache holds this archive")

    monkeypatch.setitem(data.REGISTRY, "cifar10", dataclasses.replace(data.REGISTRY["cifar10"], read=must_not_decode))
    second = data.load("cifar10", path)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert second.class_names == first.class_names and second.sha256 == first.sha256


def test_cache_is_keyed_by_content(isolated):
    path = isolated / "data" / "tiny.tar.gz"
    write_image_tar(path, image_layout({"train": 2, "test": 1}))
    first = data.load("cifar10", path)
    write_image_tar(path, image_layout({"train": 3, "test": 1}))  # same name, new content
    second = data.load("cifar10", path)
    assert len(first.x_train) == 20 and len(second.x_train) == 30
    assert first.sha256 != second.sha256
    assert len(list((isolated / "cache" / "datasets").glob("cifar10-*.npz"))) == 2


def test_unreadable_cache_is_decoded_again(isolated):
    path = write_image_tar(isolated / "data" / "tiny.tar.gz", image_layout({"train": 1, "test": 1}))
    data.load("cifar10", path)
    (cached,) = (isolated / "cache" / "datasets").glob("cifar10-*.npz")
    cached.write_bytes(b"PK\x03\x04 broken")
    assert len(data.load("cifar10", path).x_train) == 10


# --------------------------------------------------------------------------- errors
def test_unknown_dataset():
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'.*cifar10, cinic10, imagenet32"):
        data.load("mnist")


def test_missing_file_names_file_folder_and_variable(isolated):
    with pytest.raises(DataError) as info:
        data.load("cifar10")
    message = str(info.value)
    assert "cifar10-jpeg.tar.gz" in message and "cifar-10-python.tar.gz" in message
    assert str(isolated / "data") in message and "CAE_DATA_DIR" in message
    assert "cae data fetch cifar10" in message


def test_missing_explicit_path(isolated):
    with pytest.raises(DataError, match="nothere.tar.gz does not exist"):
        data.load("cinic10", isolated / "nothere.tar.gz")


def test_checksum_mismatch_for_known_archive_name(isolated):
    write_image_tar(isolated / "data" / "cifar10-jpeg.tar.gz", image_layout({"train": 1, "test": 1}))
    with pytest.raises(DataError, match=r"cifar10-jpeg\.tar\.gz has SHA-256 .* expected e17cde64"):
        data.load("cifar10")
    assert not (isolated / "cache" / "datasets").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_archive(isolated, damage):
    path = write_image_tar(isolated / "data" / "cinic.tar.gz", image_layout({"train": 2, "valid": 1, "test": 1}))
    payload = path.read_bytes()
    if damage == "garbage":
        payload = b"this is not an archive at all" * 10
    elif damage == "truncated":
        payload = payload[: len(payload) // 2]
    else:  # valid gzip header, damaged deflate stream
        payload = payload[:40] + bytes(b ^ 0xFF for b in payload[40:200]) + payload[200:]
    path.write_bytes(payload)
    with pytest.raises(DataError, match="cinic.tar.gz"):
        data.load("cinic10", path)


def test_wrong_image_size(isolated):
    layout = image_layout({"train": 1, "valid": 1, "test": 1})
    layout["valid"]["dog"][0] = np.zeros((64, 64, 3), dtype=np.uint8)
    path = write_image_folder(isolated / "data" / "CINIC-10", layout)
    with pytest.raises(DataError, match=r"valid/dog/0000\.png: image is 64x64, expected 32x32"):
        data.load("cinic10", path)


def test_undecodable_image(isolated):
    path = write_image_folder(isolated / "data" / "CINIC-10", image_layout({"train": 1, "valid": 1, "test": 1}))
    (path / "test" / "ship" / "0000.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"test/ship/0000\.png: cannot decode image"):
        data.load("cinic10", path)


def test_unknown_class_folder(isolated):
    layout = image_layout({"train": 1, "test": 1})
    layout["train"]["unicorn"] = [pattern(0, 0)]
    path = write_image_tar(isolated / "data" / "c10.tar.gz", layout)
    with pytest.raises(DataError, match=r"unexpected class folder 'unicorn'.*airplane"):
        data.load("cifar10", path)


def test_pickled_label_outside_the_classes(isolated):
    path = write_cifar_python(isolated / "data" / "cifar-10-python-bad.tar.gz", bad_label=10)
    with pytest.raises(DataError, match="label 10 is outside the 10 classes"):
        data.load("cifar10", path)


def test_pickled_batch_missing(isolated):
    path = isolated / "data" / "cifar-10-python-partial.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        payload = cifar_batch([pattern(0, 0)], [0])
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match="data_batch_2 is missing"):
        data.load("cifar10", path)


def test_no_images_for_a_split(isolated):
    path = write_image_tar(isolated / "data" / "c10.tar.gz", image_layout({"train": 1}))
    with pytest.raises(DataError, match="no images for the test split"):
        data.load("cifar10", path)


# --------------------------------------------------------------------------- splits
def test_split_indices():
    d1, d2 = data.split_indices(100, (30, 50), seed=1)
    assert len(d1) == 30 and len(d2) == 50
    assert not set(d1.tolist()) & set(d2.tolist())
    assert all(0 <= i < 100 for i in np.concatenate([d1, d2]))
    again = data.split_indices(100, (30, 50), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((d1, d2), again))
    other = data.split_indices(100, (30, 50), seed=2)
    assert not np.array_equal(d1, other[0])
    full = data.split_indices(10, (4, 6), seed=0)
    assert sorted(np.concatenate(full).tolist()) == list(range(10))
    with pytest.raises(ValueError, match=r"sizes \(60, 50\) from 100"):
        data.split_indices(100, (60, 50), seed=0)


# --------------------------------------------------------------------------- floats
def test_to_float_and_check_images():
    x = np.full((2, 32, 32, 3), 255, dtype=np.uint8)
    assert data.to_float(x).dtype == np.float32 and data.to_float(x).max() == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        data.check_images(np.full((1, 32, 32, 3), 2.0))
    with pytest.raises(ValueError, match="channels last"):
        data.check_images(np.zeros((1, 3, 32, 32), np.float32))


# --------------------------------------------------------------------------- fetch
class FakeResponse(io.BytesIO):
    """What urlopen returns, enough for fetch: a readable context manager."""


def fake_urlopen(payload, calls):
    def urlopen(url, timeout=None):
        calls.append(url)
        return FakeResponse(payload)

    return urlopen


def test_fetch_checksum_mismatch_saves_nothing(isolated, monkeypatch):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(b"not the archive", calls))
    with pytest.raises(DataError, match=r"SHA-256 .* expected 6d958be0.*not saved"):
        data.fetch("cifar10")
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert list((isolated / "data").iterdir()) == []  # no file, no temp file


def test_fetch_verified_download(isolated, monkeypatch):
    payload = gzip.compress(b"pretend archive")
    archive = data.Archive("cifar-10-python.tar.gz", "https://example.org/c.tar.gz",
                           hashlib.sha256(payload).hexdigest())
    with_archives(monkeypatch, "cifar10", archive)
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen(payload, calls))
    target = data.fetch("cifar10", isolated / "elsewhere")
    assert target == isolated / "elsewhere" / "cifar-10-python.tar.gz"
    assert target.read_bytes() == payload and len(calls) == 1
    # a verified copy is not downloaded again
    assert data.fetch("cifar10", isolated / "elsewhere") == target and len(calls) == 1


def test_fetch_network_error(isolated, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not download .*cifar-10-python.tar.gz in"):
        data.fetch("cifar10")


def loopback_urlopen(url, timeout=None):
    """A real urlopen for 127.0.0.1 only, past no proxy: tests never reach another host."""
    assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", url
    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=timeout)


def fetch_from(monkeypatch, port):
    """Point cifar10's official download at ``http://127.0.0.1:<port>`` and fetch it."""
    archive = data.Archive("cifar-10-python.tar.gz", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz", "0" * 64)
    with_archives(monkeypatch, "cifar10", archive)
    monkeypatch.setattr(urllib.request, "urlopen", loopback_urlopen)
    started = time.monotonic()
    with pytest.raises(DataError) as info:
        data.fetch("cifar10")
    return str(info.value), time.monotonic() - started


def assert_says_where_to_put_it(message, folder):
    assert "could not download http://127.0.0.1:" in message
    assert f"put cifar-10-python.tar.gz in {folder}" in message and "CAE_DATA_DIR" in message
    assert list(folder.iterdir()) == []  # no file, no temp file


def test_fetch_unreachable_host_fails_at_once(isolated, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    message, seconds = fetch_from(monkeypatch, port)
    assert seconds < data.FETCH_TIMEOUT and "refused" in message
    assert_says_where_to_put_it(message, isolated / "data")


def test_fetch_silent_host_fails_within_the_timeout(isolated, monkeypatch):
    """A host that never answers: a loopback port that listens but whose accept queue is
    full, so that (on Linux) a further connection attempt is never answered."""
    assert data.FETCH_TIMEOUT <= 10  # offline, the main job fails within seconds
    with socket.create_server(("127.0.0.1", 0), backlog=0) as server:
        with socket.create_connection(server.getsockname()):  # fills the queue
            message, seconds = fetch_from(monkeypatch, server.getsockname()[1])
    assert data.FETCH_TIMEOUT - 0.5 < seconds < data.FETCH_TIMEOUT + 3 and "timed out" in message
    assert_says_where_to_put_it(message, isolated / "data")


def test_fetch_if_missing_keeps_any_accepted_file(isolated):
    """The repacked archive counts as present: nothing is downloaded (urlopen would fail
    the test), whatever is there is returned unread."""
    present = isolated / "data" / "cifar10-jpeg.tar.gz"
    present.write_bytes(b"whatever is there")
    assert data.fetch("cifar10", if_missing=True) == present
    with pytest.raises(AssertionError, match="tried to download"):
        data.fetch("cifar10")  # without if_missing, the official archive is still fetched


def test_fetch_without_official_download():
    with pytest.raises(DataError, match="imagenet32.*no official download"):
        data.fetch("imagenet32")
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        data.fetch("mnist")


# --------------------------------------------------------------------------- registry
def read_npz(source):
    """A reader of the fake dataset: its four arrays from one .npz file."""
    with np.load(source) as arrays:
        return tuple(arrays[k] for k in ("x_train", "y_train", "x_test", "y_test"))


@pytest.fixture
def fake_dataset(isolated):
    """A three-class dataset registered for one test, read from an .npz in the data
    folder, then unregistered: a new dataset needs nothing but its registration."""
    rng = np.random.default_rng(0)
    arrays = {f"x_{split}": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
              for split, n in (("train", 12), ("test", 6))}
    arrays.update(y_train=np.arange(12) % 3, y_test=np.arange(6) % 3)
    np.savez(isolated / "data" / "fake3.npz", **arrays)
    info = data.register(data.DatasetInfo("fake3", "Fake-3", ("red", "green", "blue"), 6,
                                           (data.Archive("fake3.npz"),), read_npz, overlaps=("cifar10",)))
    yield info, arrays
    data.unregister("fake3")
    assert "fake3" not in data.names()


def test_a_registered_dataset_flows_through_load_plan_and_titles(fake_dataset):
    from cae import cli, models, plan, presets

    info, arrays = fake_dataset
    assert data.names()[-1] == "fake3" and data.title("fake3") == "Fake-3"
    dataset = data.load("fake3")
    assert dataset.name == "fake3" and dataset.class_names == info.class_names and dataset.num_classes == 3
    np.testing.assert_array_equal(dataset.x_test, arrays["x_test"])
    assert cli.main(["data", "info", "fake3", "--json"]) == 0  # the CLI's choices come from the registry
    assert data.share_images("cifar10", "fake3") and not data.share_images("cinic10", "fake3")
    # A cost plan takes the class count and the test-set size from the registry.
    preset = dataclasses.replace(presets.get("smoke"), dataset="fake3", evaluate_on=0)
    measured = {"cnn": {"train_images_per_s": 1000.0, "predict_images_per_s": 4000.0, "save_seconds": 0.1},
                "augment_seconds_per_image": 1e-5}
    source = plan.plan(preset, measured=measured)["models"][0]
    assert source.parameters == models.build("cnn", 3).count_params()
    assert source.seconds == pytest.approx(3 * 2000 / 1000 + info.test_size / 4000 + 3 * (0.1 + 2000 * 1e-5))


def test_register_refuses_a_taken_name_and_unknown_names_are_named():
    with pytest.raises(ValueError, match="'cifar10' is empty or already registered"):
        data.register(data.REGISTRY["cifar10"])
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        data.unregister("mnist")
    assert data.title("mnist") == "mnist"


# --------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_cifar10(tmp_path, monkeypatch):
    """The real CIFAR-10 archive in $CAE_DATA_DIR (skipped when it is not there)."""
    if not REAL_DATA_DIR:
        pytest.skip("CAE_DATA_DIR is not set")
    monkeypatch.setenv("CAE_DATA_DIR", REAL_DATA_DIR)
    monkeypatch.setenv("CAE_CACHE_DIR", REAL_CACHE_DIR or str(tmp_path / "cache"))
    try:
        data.locate("cifar10")
    except DataError as err:
        pytest.skip(str(err))
    dataset = data.load("cifar10")
    assert dataset.x_train.shape == (50_000, 32, 32, 3) and dataset.x_test.shape == (10_000, 32, 32, 3)
    assert np.bincount(dataset.y_train).tolist() == [5_000] * 10
    assert np.bincount(dataset.y_test).tolist() == [1_000] * 10
    assert 100 < dataset.x_train.mean() < 150  # natural images, not blank
