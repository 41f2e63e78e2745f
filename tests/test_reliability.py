"""Reliability: runs that survive SIGKILL, results that do not depend on the process,
and clear errors for hostile arrays.

Kill points. A child process is SIGKILLed at each point below; a rerun then finishes
the work and its result is compared, bit for bit, with an uninterrupted run of the toy
preset (the module fixture ``toy``, computed in this process).

* T1: training the source, after the 2nd epoch's checkpoint is renamed into place and
  before progress.json names it.
* T2: training the source, while the 2nd epoch's checkpoint is half written (its
  temporary file, before the rename).
* T3: resuming T2's run, after model.keras is in place and before metrics.json (the
  completion mark) is written.
* E1: the C-IGM stage, while the attack's cache npz is half written.
* E2: the C-IGM stage at a random moment (a uniform delay after run_attack starts; the
  seed is printed and ``CAE_KILL_SEED`` repeats it).
* E3: ``cae extract`` between the fingerprint's .npz and .json writes, over an older
  fingerprint at the same path: ``cae verify`` must refuse the mixed pair.

Before the E1/E2 rerun a truncated npz is planted where the attack cache goes: it must
be detected and recomputed, not loaded. (tests/test_zoo.py kills training at one more
point: during the 3rd epoch, after progress.json of the 2nd.)

Children are forked from a ``multiprocessing`` forkserver that has imported Keras and
cae but run no TensorFlow op, so each starts a fresh TensorFlow runtime without paying
for the import again. Determinism is checked against a fresh interpreter (another
``PYTHONHASHSEED``, its own cache). Every child gets this process's oneDNN setting:
TensorFlow's oneDNN and plain kernels differ in the last bits.
"""

import dataclasses
import functools
import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import types
import zipfile

import keras
import numpy as np
import pytest
from keras import layers
from tqdm.auto import tqdm

import cae
from cae import attacks, data, ensemble, experiments, fingerprint, models, paths, presets, scores, zoo
from test_zoo import synthetic

TESTS = os.path.dirname(os.path.abspath(__file__))
# Children import the cae under test, not whatever copy is installed.
CAE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cae.__file__)))
PYTHONPATH = os.pathsep.join(filter(None, [TESTS, CAE_ROOT, os.environ.get("PYTHONPATH")]))
HANG_SECONDS = 600
WAIT_SECONDS = 240


# --------------------------------------------------------------------------- the toy preset
def _tiny_body(x):
    """A one-convolution network (with BatchNorm) for the toy zoo: cheap to trace."""
    x = layers.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    return layers.GlobalAveragePooling2D()(x)


def toy_preset():
    return dataclasses.replace(
        presets.get("quick"), name="toy", dataset="synthetic", defender_size=96, adversary_size=96,
        source_architecture="tiny", source_epochs=2, surrogate_epochs=1, reference_epochs=1,
        train_surrogates=("tiny",), train_references=("tiny",), test_surrogates=("tiny",),
        test_references=("tiny",), attack_inputs=8, attack_iterations=20, epsilon=0.25, tau=0.0,
        batch_size=32, learning_rate=0.01, augment="flip", evaluate_on=0, training_subset=0, mistakes=0,
    )


@functools.lru_cache(maxsize=None)
def toy_dataset():
    return synthetic(n_train=200, n_test=32, colour=True)


def toy_store(root):
    return zoo.Zoo(pathlib.Path(root) / "zoo", datasets={"synthetic": toy_dataset()})


def toy_context(root):
    """The toy preset's context on the cache ``root`` (``$CAE_CACHE_DIR`` must be ``root``)."""
    return experiments.prepare(toy_preset(), verbose=False, store=toy_store(root))


def pipeline(root):
    """Zoo, C-IGM and extraction of the toy preset in the cache ``root``; saves ``root/fp``."""
    models.ARCHITECTURES["tiny"] = _tiny_body
    os.environ["CAE_CACHE_DIR"] = str(root)
    fp = experiments.extract(toy_context(root))
    fingerprint.save(fp, pathlib.Path(root) / "fp")
    return fp


def onednn():
    """Whether this process's TensorFlow runs its oneDNN kernels ("1") or not ("0").

    TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it is imported (``cae``
    sets it only if it is imported first), and the two settings give different
    bits. Child processes are given this process's setting.
    """
    from tensorflow.python.util import _pywrap_util_port

    return "1" if _pywrap_util_port.IsMklEnabled() else "0"


@pytest.fixture(scope="module", autouse=True)
def tiny_architecture():
    mp = pytest.MonkeyPatch()
    mp.setitem(models.ARCHITECTURES, "tiny", _tiny_body)
    yield
    mp.undo()


_FRESH = textwrap.dedent(
    """
    import cae, test_reliability
    assert cae.__file__ == {cae!r}, cae.__file__
    assert test_reliability.onednn() == {onednn!r}, "TF_ENABLE_ONEDNN_OPTS was not honoured"
    test_reliability.pipeline({root!r})
    """
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The uninterrupted toy run, in this process; and the same in a fresh interpreter
    (another hash seed, its own cache), started first so that the two run side by side."""
    base = tmp_path_factory.mktemp("toy")
    fresh_root = base / "fresh"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "CAE_CACHE_DIR": str(fresh_root),
           "TF_ENABLE_ONEDNN_OPTS": onednn(), "PYTHONPATH": PYTHONPATH}
    script = _FRESH.format(cae=cae.__file__, root=str(fresh_root), onednn=onednn())
    fresh = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        _ensure_forkserver()  # imports Keras there while this process trains
        root = base / "reference"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CAE_CACHE_DIR", str(root))
            began = time.time()
            fp = pipeline(root)
            seconds = time.time() - began
        (npz,) = (root / "runs" / "toy").glob("cigm-*.npz")
        yield types.SimpleNamespace(root=root, fp=fp, npz=npz, seconds=seconds, fresh=fresh,
                                    fresh_root=fresh_root)
    finally:
        if fresh.poll() is None:
            fresh.kill()
            fresh.wait()


def _source_key():
    return experiments.source_spec(toy_preset()).key


def _arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _assert_same_arrays(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name


def _same_weights(model_a, model_b):
    """True when every weight of the two models is equal, bit for bit."""
    weights_a, weights_b = model_a.get_weights(), model_b.get_weights()
    assert len(weights_a) == len(weights_b)
    return all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b))


def _copy_zoo(toy, root, runs=False):
    shutil.copytree(toy.root / "zoo", root / "zoo")
    if runs:
        shutil.copytree(toy.root / "runs", root / "runs")


# --------------------------------------------------------------------------- killable children
def _mark(cache, name):
    """Tell the parent that the child reached ``name``."""
    paths.atomic_write_bytes(pathlib.Path(cache) / f"{name}.reached", str(time.time()).encode())


def _hang(cache, name):
    """Mark ``name`` as reached and wait to be killed."""
    _mark(cache, name)
    time.sleep(HANG_SECONDS)
    raise SystemExit(f"{name}: not killed within {HANG_SECONDS} s")


def _child(scenario, cache, expected):
    """The body of a killable child process (runs in a forkserver child)."""
    if cae.__file__ != expected["cae"]:
        raise SystemExit(f"the child imported {cae.__file__}, the test process {expected['cae']}")
    if onednn() != expected["onednn"]:
        raise SystemExit(f"the forkserver's TensorFlow has oneDNN {onednn()}, the test process "
                         f"{expected['onednn']}: results would differ in the last bits")
    models.ARCHITECTURES["tiny"] = _tiny_body
    os.environ["CAE_CACHE_DIR"] = cache
    logging.basicConfig(level=logging.WARNING)
    # tqdm's default lock is a multiprocessing semaphore, which a killed child would leak.
    tqdm.set_lock(threading.RLock())
    runs = {"T1": _train_until_killed, "T2": _train_until_killed, "T3": _train_until_killed,
            "E1": _attack_until_killed, "E2": _attack_until_killed, "E3": _extract_until_killed}
    runs[scenario](scenario, cache)


def _train_until_killed(scenario, cache):
    """Train the toy source; hang at the scenario's point (T1, T2, T3)."""
    original_json, original_save = paths.atomic_write_json, paths.atomic_save
    checkpoints = []

    def write_json(path, obj):
        name = pathlib.Path(path).name
        if scenario == "T1" and name == "progress.json" and obj["epoch"] == 2:
            _hang(cache, scenario)  # the checkpoint of epoch 2 is already in place
        if scenario == "T3" and name == "metrics.json":
            _hang(cache, scenario)  # model.keras is already in place
        original_json(path, obj)

    def half_written(writer):
        def write(tmp):
            writer(tmp)
            os.truncate(tmp, os.path.getsize(tmp) // 2)
            _hang(cache, scenario)
        return write

    def save(path, writer, suffix=""):
        if scenario == "T2" and pathlib.Path(path).name.startswith("checkpoint-"):
            checkpoints.append(path)
            if len(checkpoints) == 2:
                writer = half_written(writer)
        return original_save(path, writer, suffix)

    paths.atomic_write_json, paths.atomic_save = write_json, save
    toy_store(cache).get(experiments.source_spec(toy_preset()), verbose=False)


def _attack_until_killed(scenario, cache):
    """Run the toy pipeline on a trained zoo; E1 hangs with the attack's npz half written,
    E2 runs on (the parent kills it at a random moment)."""
    original_run, original_savez = experiments.run_attack, np.savez

    def run_attack(*args, **kwargs):
        _mark(cache, f"{scenario}-attack-started")
        return original_run(*args, **kwargs)

    def savez(file, **arrays):
        original_savez(file, **arrays)
        if scenario == "E1":
            os.truncate(file, os.path.getsize(file) // 2)
            _hang(cache, scenario)

    experiments.run_attack, np.savez = run_attack, savez
    pipeline(cache)


def _extract_until_killed(scenario, cache):
    """``cae extract`` on a trained zoo and cached attack; hangs between fp.npz and fp.json."""
    from cae import cli

    original_json = paths.atomic_write_json

    def write_json(path, obj):
        if pathlib.Path(path).name == "fp.json":
            _hang(cache, scenario)  # fp.npz is already in place
        original_json(path, obj)

    paths.atomic_write_json = write_json
    _patch_for_cli(_Setter())
    raise SystemExit(cli.main(["extract", "--preset", "toy", "--out", str(pathlib.Path(cache) / "fp")]))


class _Setter:
    """``setitem`` / ``setattr`` without undo, for child processes."""

    @staticmethod
    def setitem(mapping, key, value):
        mapping[key] = value

    @staticmethod
    def setattr(obj, name, value):
        setattr(obj, name, value)


def _patch_for_cli(mp):
    """Make ``cae extract --preset toy`` find the toy preset and dataset."""
    original = data.load
    mp.setitem(presets.PRESETS, "toy", toy_preset())
    mp.setattr(data, "load", lambda name, *a, **k: toy_dataset() if name == "synthetic" else original(name, *a, **k))


def _ensure_forkserver():
    """Start the forkserver (if this session has none yet) with Keras and cae imported,
    hash seed 1 and this process's oneDNN setting; children check the latter."""
    from multiprocessing import forkserver

    # Used only when the server starts. Python 3.11's forkserver ignores the sys.path it is
    # given, so PYTHONPATH carries this folder and cae's; an import that fails there is
    # skipped silently, and each child would then import Keras itself.
    forkserver.set_forkserver_preload(["keras", "cae.cli", "cae.experiments", "cae.attacks", __name__])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TF_ENABLE_ONEDNN_OPTS", onednn())
        mp.setenv("PYTHONHASHSEED", "1")
        mp.setenv("PYTHONPATH", PYTHONPATH)
        forkserver.ensure_running()


def _start(scenario, cache):
    _ensure_forkserver()
    context = multiprocessing.get_context("forkserver")
    expected = {"cae": cae.__file__, "onednn": onednn()}
    process = context.Process(target=_child, args=(scenario, str(cache), expected), daemon=True,
                              name=f"cae-kill-{scenario}")
    process.start()
    return process


def _wait(process, marker):
    deadline = time.time() + WAIT_SECONDS
    while not marker.exists():
        assert process.exitcode is None, f"{process.name} ended with {process.exitcode} before {marker.name}"
        assert time.time() < deadline, f"{process.name} did not reach {marker.name} in {WAIT_SECONDS} s"
        time.sleep(0.05)
    return time.time()


def _kill(process):
    if process.exitcode is None:
        process.kill()  # SIGKILL: no handler, no finally, no atexit runs
    process.join(30)
    return process.exitcode


def _kill_at(scenario, cache):
    process = _start(scenario, cache)
    _wait(process, pathlib.Path(cache) / f"{scenario}.reached")
    assert _kill(process) == -9
    return process


# --------------------------------------------------------------------------- training
def test_kill_between_checkpoint_and_progress(toy, tmp_path):
    _kill_at("T1", tmp_path)
    spec = experiments.source_spec(toy_preset())
    folder = tmp_path / "zoo" / spec.key
    # The newer checkpoint is there, but progress.json still names epoch 1's.
    assert json.loads((folder / "progress.json").read_text())["epoch"] == 1
    assert (folder / "checkpoint-2.keras").exists() and not (folder / "metrics.json").exists()
    store = toy_store(tmp_path)
    resumed = store.get(spec, verbose=False)
    assert store.metrics(spec)["resumed_from_epoch"] == 1
    assert _same_weights(resumed, toy_store(toy.root).load(spec))


def test_kill_during_checkpoint_write_then_before_completion_mark(toy, tmp_path):
    spec = experiments.source_spec(toy_preset())
    folder = tmp_path / "zoo" / spec.key
    _kill_at("T2", tmp_path)
    # The half-written checkpoint is a temporary file; the one in place is epoch 1's.
    assert json.loads((folder / "progress.json").read_text())["epoch"] == 1
    partial = list(folder.glob(".checkpoint-2.*.tmp.keras"))
    assert len(partial) == 1 and partial[0].stat().st_size < (folder / "checkpoint-1.keras").stat().st_size
    assert not (folder / "model.keras").exists()

    _kill_at("T3", tmp_path)  # resumes from epoch 1, dies before metrics.json
    assert (folder / "model.keras").exists() and not (folder / "metrics.json").exists()
    assert not toy_store(tmp_path).complete(spec)

    store = toy_store(tmp_path)
    resumed = store.get(spec, verbose=False)
    assert store.metrics(spec)["resumed_from_epoch"] == 2  # nothing left to train
    assert _same_weights(resumed, toy_store(toy.root).load(spec))
    assert not list(folder.glob("checkpoint-*.keras")) and not (folder / "progress.json").exists()


# --------------------------------------------------------------------------- extraction
def test_kill_during_attack_then_rerun_is_identical(toy, tmp_path, monkeypatch, caplog):
    _copy_zoo(toy, tmp_path)
    final = tmp_path / "runs" / "toy" / toy.npz.name

    # E1: killed while the npz is half written.
    process = _start("E1", tmp_path)
    started = _wait(process, tmp_path / "E1-attack-started.reached")
    reached = _wait(process, tmp_path / "E1.reached")
    assert _kill(process) == -9
    attack_seconds = reached - started
    assert not final.exists()  # never a partial file under the final name
    (partial,) = final.parent.glob(f".{final.stem}.*.tmp.npz")
    with pytest.raises(zipfile.BadZipFile):
        _arrays(partial)

    # E2: killed at a random moment of the attack stage (or after it, if it was quick).
    seed = int(os.environ.get("CAE_KILL_SEED", np.random.SeedSequence().entropy % 2**32))
    delay = np.random.default_rng(seed).uniform(0.0, 1.25 * attack_seconds)
    process = _start("E2", tmp_path)
    _wait(process, tmp_path / "E2-attack-started.reached")
    time.sleep(delay)
    exitcode = _kill(process)
    state = "complete" if final.exists() else "absent"
    print(f"E2: CAE_KILL_SEED={seed}, killed {delay:.2f} s into a {attack_seconds:.2f} s attack stage "
          f"(exit code {exitcode}); cache npz {state}")
    if final.exists():  # written completely, or not at all
        _assert_same_arrays(_arrays(final), _arrays(toy.npz))

    # A truncated npz where the cache goes is detected and recomputed, not loaded.
    final.parent.mkdir(parents=True, exist_ok=True)
    final.write_bytes(toy.npz.read_bytes()[: toy.npz.stat().st_size // 2])
    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="cae.experiments"):
        fp = experiments.extract(toy_context(tmp_path))
    assert "recomputing unreadable" in caplog.text
    assert fp == toy.fp and fp.sha256 == toy.fp.sha256
    _assert_same_arrays(_arrays(final), _arrays(toy.npz))


def test_kill_between_fingerprint_files_is_refused_then_rerun_is_identical(toy, tmp_path, monkeypatch, capsys):
    from cae import cli

    _copy_zoo(toy, tmp_path, runs=True)
    attack_npz = tmp_path / "runs" / "toy" / toy.npz.name
    mtime = attack_npz.stat().st_mtime_ns
    older = fingerprint.Fingerprint(x=(toy.fp.x * 0.5).astype(np.float32), keys=toy.fp.keys,
                                    manifest=toy.fp.manifest)
    fingerprint.save(older, tmp_path / "fp")
    _kill_at("E3", tmp_path)

    suspect = tmp_path / "zoo" / _source_key() / "model.keras"
    status = cli.main(["verify", "--fingerprint", str(tmp_path / "fp"), "--model", str(suspect)])
    err = capsys.readouterr().err
    assert status == 2 and "does not match its manifest" in err and "Traceback" not in err

    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path))
    _patch_for_cli(monkeypatch)
    assert cli.main(["extract", "--preset", "toy", "--out", str(tmp_path / "fp")]) == 0
    assert fingerprint.load(tmp_path / "fp") == toy.fp
    assert attack_npz.stat().st_mtime_ns == mtime  # the attack was not run again


# --------------------------------------------------------------------------- determinism
def test_fresh_process_gives_identical_fingerprint(toy):
    """Another interpreter (other hash seed, own cache) trains the same zoo and extracts
    the same fingerprint, byte for byte in every array."""
    try:
        _, stderr = toy.fresh.communicate(timeout=WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        toy.fresh.kill()
        raise
    assert toy.fresh.returncode == 0, stderr.decode()[-3000:]
    other = fingerprint.load(toy.fresh_root / "fp")
    assert other.sha256 == toy.fp.sha256
    assert other == toy.fp  # every array bit for bit, and the manifest
    (npz,) = (toy.fresh_root / "runs" / "toy").glob("cigm-*.npz")
    assert npz.name == toy.npz.name
    _assert_same_arrays(_arrays(npz), _arrays(toy.npz))
    for spec in experiments.all_specs(experiments.model_specs(toy_preset())):
        assert _same_weights(toy_store(toy.fresh_root).load(spec), toy_store(toy.root).load(spec)), spec


def test_toy_fingerprint_is_a_real_extraction(toy):
    """The runs compared above are not empty: C-IGM changed the source's label within eps."""
    fp = toy.fp
    assert fp.n >= 1 and fp.manifest["epsilon"] == 0.25
    assert np.abs(fp.x - fp.originals).max() <= 0.25 + 1e-6
    labels = toy_store(toy.root).load(_source_key()).predict(fp.originals, verbose=0).argmax(axis=1)
    assert np.all(fp.keys != labels)
    print(f"toy run: {fp.n} fingerprints of 8 inputs in {toy.seconds:.1f} s")


# --------------------------------------------------------------------------- the attack cache
def _cache_variants(good):
    with_missing = pathlib.Path(str(good) + ".missing.npz")
    arrays = _arrays(good)
    arrays.pop("b")
    np.savez(with_missing, **arrays)
    raw = good.read_bytes()
    return {
        "empty": b"",
        "truncated": raw[: len(raw) // 2],
        "last byte cut": raw[:-1],
        "flipped byte": raw[:100] + bytes([raw[100] ^ 0x01]) + raw[101:],
        "not an npz": b"PK\x03\x04 but nothing else",
        "pickle": b"\x80\x04\x95" + b"\x00" * 40,
        "missing array": with_missing.read_bytes(),
    }


@pytest.mark.parametrize("kind", ["empty", "truncated", "last byte cut", "flipped byte", "not an npz",
                                  "pickle", "missing array"])
def test_unreadable_cache_is_recomputed(tmp_path, kind, caplog):
    good = tmp_path / "good.npz"
    expected = {"a": np.arange(64, dtype=np.float32), "b": np.ones((2, 3), np.int64)}
    np.savez(good, **expected)
    path = tmp_path / "runs" / "cached.npz"
    path.parent.mkdir()
    path.write_bytes(_cache_variants(good)[kind])
    calls = []

    def compute():
        calls.append(1)
        return expected

    with caplog.at_level(logging.WARNING, logger="cae.experiments"):
        result = experiments._cached(path, compute, required=("a", "b"))
    assert calls == [1] and "recomputing" in caplog.text
    _assert_same_arrays(result, expected)
    _assert_same_arrays(_arrays(path), expected)
    assert experiments._cached(path, compute, required=("a", "b")) and calls == [1]  # now reused


# --------------------------------------------------------------------------- hostile arrays
K = 3


@pytest.fixture(scope="module")
def small():
    """A cae-interface model (Dense 'logits' -> softmax), its C-IGM ensemble, images, labels."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 4, strides=4)(inputs))
    outputs = layers.Activation("softmax")(layers.Dense(K, name="logits")(x))
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    fp = fingerprint.create(model, images, attack="test", epsilon=0.1, tau=1.0, dataset="none")
    return {"model": model, "ensemble": ensemble.compose(model, [], []), "x": images, "fp": fp,
            "y": np.array([0, 1, 2, 0])}


def _bad_images(kind, x):
    return {
        "nan": np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x).astype(np.float32),
        "inf": np.where(np.arange(x.size).reshape(x.shape) == 7, np.inf, x).astype(np.float32),
        "uint8": (x * 255).astype(np.uint8),
        "0-255 floats": x * 255.0,
        "negative": x - 0.5,
        "wrong shape": x[:, :28, :28, :1],
    }[kind]


IMAGE_KINDS = ("nan", "inf", "uint8", "0-255 floats", "negative", "wrong shape")


def _call(target, small, bad):
    m, x, y = small["model"], small["x"], small["y"]
    calls = {
        "CIGM.generate": lambda: attacks.CIGM(small["ensemble"], 0.1, max_iter=1).generate(bad, y),
        "baseline(igm)": lambda: attacks.baseline("igm", m, bad, 0.1, y=y, max_iter=1),
        "fingerprint.create": lambda: fingerprint.create(m, bad, attack="t", epsilon=0.1, tau=1.0,
                                                         dataset="none"),
        "scores.predict_labels": lambda: scores.predict_labels([m], bad),
    }
    return calls[target]()


@pytest.mark.parametrize("kind", IMAGE_KINDS)
@pytest.mark.parametrize("target", ["CIGM.generate", "baseline(igm)", "fingerprint.create"])
def test_hostile_images_raise_value_error(small, target, kind):
    with pytest.raises(ValueError, match=r"\S"):
        _call(target, small, _bad_images(kind, small["x"]))


@pytest.mark.parametrize("kind", ["nan", "0-255 floats"])
def test_predict_labels_checks_images(small, kind):
    with pytest.raises(ValueError, match="NaN or inf|expected \\[0, 1\\]"):
        _call("scores.predict_labels", small, _bad_images(kind, small["x"]))


@pytest.mark.parametrize("output, match", [
    (lambda n: np.full((n, K), np.nan, np.float32), "non-finite"),
    (lambda n: np.full((n, K), np.inf, np.float32), "non-finite"),
    (lambda n: np.full(n, 1.5), "non-integer"),
    (lambda n: np.full(n, K), "labels in"),
    (lambda n: np.full(n, -1), "labels in"),
    (lambda n: np.zeros((n, K + 1), np.float32), f"{K + 1} classes"),
    (lambda n: np.zeros(n + 1, np.int64), "shape"),
    (lambda n: np.array(["a"] * n), "dtype"),
    (lambda n: np.zeros(n, bool), "dtype"),
])
def test_hostile_suspect_outputs_raise_value_error(small, output, match):
    with pytest.raises(ValueError, match=match):
        fingerprint.verify(lambda batch: output(len(batch)), small["fp"])


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -0.1, 1.5, True, "0.5"])
def test_verify_refuses_bad_thresholds(small, threshold):
    with pytest.raises(ValueError, match="threshold"):
        fingerprint.verify(small["model"], small["fp"], threshold=threshold)


def test_verify_without_a_threshold_uses_the_calibration_or_the_default(small):
    # None asks for the fingerprint's calibrated θ; this one has no calibration.
    result = fingerprint.verify(small["model"], small["fp"], threshold=None)
    assert result.threshold == fingerprint.DEFAULT_THRESHOLD and result.threshold_source == "default"


@pytest.mark.parametrize("null", [float("nan"), float("inf"), 1.5, [0.1, float("nan")], [0.2, 2.0]])
def test_verify_refuses_bad_nulls(small, null):
    with pytest.raises(ValueError):
        fingerprint.verify(small["model"], small["fp"], null=null)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), 0.0, -0.1, True, "0.1", None])
def test_attacks_refuse_bad_eps(small, eps):
    with pytest.raises(ValueError, match="eps"):
        attacks.CIGM(small["ensemble"], eps)
    with pytest.raises(ValueError, match="eps"):
        attacks.baseline("igm", small["model"], small["x"], eps, max_iter=1)


def test_cigm_refuses_eps_above_one(small):
    with pytest.raises(ValueError, match="at most 1"):
        attacks.CIGM(small["ensemble"], 1.5)


@pytest.mark.parametrize("method, eps, bound", [("igm", 1.5, "at most 1"), ("deepfool", 2.0, "at most 1"),
                                                ("pgd", 60.0, "at most 55.43"), ("cw", 56.0, "at most 55.43")])
def test_baselines_refuse_eps_beyond_the_image_cube(small, method, eps, bound):
    """ε beyond the largest distance between two images in [0, 1] (1 in L-inf, sqrt(3072)
    in L2) is a unit mistake (0-255 pixels), not a bound."""
    with pytest.raises(ValueError, match=bound):
        attacks.baseline(method, small["model"], small["x"], eps, max_iter=1)


def test_baseline_accepts_l2_eps_above_one(small):
    x_adv, success = attacks.baseline("pgd", small["model"], small["x"], 2.0, max_iter=1)
    assert x_adv.shape == small["x"].shape and success.dtype == bool


@pytest.mark.parametrize("y", [np.array([0, 1, 2, 3]), np.array([0, 1, -1, 0]), np.array([0.0, 1.0, 2.0, 0.5]),
                               np.array([0, 1, 2]), np.array([0, 1, 2, 0])[:, None]])
def test_attacks_refuse_bad_labels(small, y):
    with pytest.raises(ValueError, match="y "):
        attacks.CIGM(small["ensemble"], 0.1, max_iter=1).generate(small["x"], y)
    with pytest.raises(ValueError, match="y "):
        attacks.baseline("igm", small["model"], small["x"], 0.1, y=y, max_iter=1)


@pytest.mark.parametrize("preds, t", [
    (np.array([[0.0, np.nan]]), np.array([0, 1])),
    (np.array([[0, 1]]), np.array([0.0, np.inf])),
    (np.array([[True, False]]), np.array([0, 1])),
    (np.array([[0, 1]]), np.array([0, 1, 2])),
    (np.array([0, 1]), np.array([0, 1])),
    (np.zeros((0, 2), np.int64), np.array([0, 1])),
    (np.array([[0, -1]]), np.array([0, 1])),
    (np.array([[0, 1]]), np.array([-3, 1])),
])
def test_scores_refuse_bad_labels(preds, t):
    for function in (scores.adv, scores.transfer):
        with pytest.raises(ValueError):
            function(preds, t)
    with pytest.raises(ValueError):
        scores.confer(preds, np.zeros_like(preds) if preds.size else preds, t)
