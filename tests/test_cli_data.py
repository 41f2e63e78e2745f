"""Tests of ``cae data info`` and ``cae data fetch`` (in-process, plus one real subprocess)."""

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request

import numpy as np
import pytest
from PIL import Image

from cae import cli, data
from cae.data import CIFAR10_CLASSES


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


def png_images(per_class):
    """``(<split>/<class>/<n>.png, bytes)`` with ``per_class = {split: count}`` images per class."""
    for split, count in per_class.items():
        for c, cls in enumerate(CIFAR10_CLASSES):
            for i in range(count):
                buffer = io.BytesIO()
                Image.fromarray(np.full((32, 32, 3), 10 * c + i, np.uint8)).save(buffer, "PNG")
                yield f"{split}/{cls}/{i}.png", buffer.getvalue()


def write_png_tar(path, per_class):
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in png_images(per_class):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def write_png_folder(root, per_class):
    for name, payload in png_images(per_class):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)
    return root


def run(argv, capsys):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_info_table(isolated, capsys):
    path = write_png_tar(isolated / "cinic.tar.gz", {"train": 2, "valid": 1, "test": 3})
    status, out, err = run(["data", "info", "cinic10", "--path", str(path)], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("cinic10: 10 classes, images 32x32x3, from ") and str(path) in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert set(rows) == set(CIFAR10_CLASSES) | {"total"}
    assert rows["horse"] == ["3", "3"]  # train 2 + valid 1, test 3
    assert rows["total"] == ["30", "30"]


def test_info_json_through_data_dir(isolated, capsys):
    folder = write_png_folder(isolated / "data" / "CINIC-10", {"train": 4, "valid": 0, "test": 1})
    status, out, err = run(["data", "info", "cinic10", "--json"], capsys)
    assert status == 0, err
    info = json.loads(out)
    assert info["name"] == "cinic10" and info["num_classes"] == 10
    assert info["train"] == 40 and info["test"] == 10
    assert info["train_per_class"] == {c: 4 for c in CIFAR10_CLASSES}
    assert info["test_per_class"]["truck"] == 1
    assert info["source"] == str(folder) and info["image_shape"] == [32, 32, 3]


def test_info_missing_dataset_is_one_clear_line(isolated, capsys):
    status, out, err = run(["data", "info", "cifar10"], capsys)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("cae: error: dataset 'cifar10' not found")
    assert str(isolated / "data") in err and "CAE_DATA_DIR" in err


def test_info_corrupt_archive(isolated, capsys):
    path = isolated / "broken.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00 not really gzip")
    status, _, err = run(["data", "info", "cifar10", "--path", str(path)], capsys)
    assert status == 2 and "broken.tar.gz is not a readable tar archive" in err


def test_unknown_dataset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["data", "info", "mnist"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'mnist'" in capsys.readouterr().err


def test_group_and_command_are_required(capsys):
    for argv in ([], ["data"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 2
    capsys.readouterr()


def test_fetch_checksum_mismatch(isolated, monkeypatch, capsys):
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"wrong bytes"))
    status, out, err = run(["data", "fetch", "cifar10", "--dir", str(isolated / "dl")], capsys)
    assert status == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "expected 6d958be0" in err and "not saved" in err
    assert not (isolated / "dl" / "cifar-10-python.tar.gz").exists()


def test_fetch_verified(isolated, monkeypatch, capsys):
    payload = b"pretend archive bytes"
    archive = data.Archive("cifar-10-python.tar.gz", "https://example.org/c.tar.gz",
                           hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(data.REGISTRY, "cifar10", dataclasses.replace(data.REGISTRY["cifar10"], archives=(archive,)))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(payload))
    status, out, err = run(["data", "fetch", "cifar10"], capsys)
    assert status == 0, err
    target = isolated / "data" / "cifar-10-python.tar.gz"
    assert out.strip() == str(target) and target.read_bytes() == payload


def test_fetch_if_missing_and_timeout(isolated, monkeypatch, capsys):
    """--if-missing leaves a folder that holds the dataset alone; --timeout reaches urlopen."""
    present = isolated / "data" / "cifar10-jpeg.tar.gz"
    present.write_bytes(b"already here")
    status, out, err = run(["data", "fetch", "cifar10", "--if-missing"], capsys)
    assert status == 0 and out.strip() == str(present), err
    timeouts = []
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: timeouts.append(timeout) or io.BytesIO(b"wrong bytes"))
    status, _, err = run(["data", "fetch", "cifar10", "--timeout", "2.5"], capsys)
    assert status == 2 and "not saved" in err and timeouts == [2.5]
    run(["data", "fetch", "cifar10"], capsys)
    assert timeouts == [2.5, data.FETCH_TIMEOUT]


def test_fetch_without_download(capsys):
    status, _, err = run(["data", "fetch", "imagenet32"], capsys)
    assert status == 2 and "no official download" in err


def test_console_entry_point_exit_status(isolated):
    """The real process: status 2 and one line on stderr, no traceback."""
    env = {**os.environ, "CAE_DATA_DIR": str(isolated / "data"), "CAE_CACHE_DIR": str(isolated / "cache")}
    result = subprocess.run(
        [sys.executable, "-m", "cae.cli", "data", "info", "cinic10"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "CINIC-10.tar.gz or CINIC-10" in result.stderr
