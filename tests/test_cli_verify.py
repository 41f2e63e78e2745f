"""`cae verify` (and `cae extract`'s settings) against hostile inputs: tampered, truncated and
or mismatched suspect models, remote suspects on loopback and query budgets.

Every refusal must be one line on stderr (``cae: error: ...``) that names the file or
the setting, a non-zero exit status (2 for bad inputs, 1 for remote failures) and no
traceback. Run with ``-s`` to see each message.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from keras import layers

import cae
from cae import cli, models
from cae import fingerprint as F
from helpers import noisy_copy, tiny_model
from model_server import serve

K = 10
N = 100
JSON_KEYS = {"retention", "threshold", "is_surrogate", "queries", "p_value", "verdict", "statistic", "score",
             "p_value_derived", "references", "threshold_source"}


@pytest.fixture(scope="module")
def suspects():
    """The source, a surrogate-like copy (slightly perturbed weights) and an independent
    reference-like model."""
    source = tiny_model(seed=0)
    return {"source": source, "surrogate": noisy_copy(source, 0.01, seed=1), "reference": tiny_model(seed=2)}


@pytest.fixture(scope="module")
def calibration_models(suspects):
    """Calibration models, none of them a suspect: surrogate-like copies of the source, and
    independent models that resemble one another (as models trained alike do)."""
    independent = tiny_model(seed=20)
    return ([noisy_copy(suspects["source"], 0.01, seed=10 + i) for i in range(3)],
            [noisy_copy(independent, 0.01, seed=20 + i) for i in range(3)])


@pytest.fixture(scope="module")
def fp(suspects, calibration_models):
    x = np.random.default_rng(0).random((N, 32, 32, 3), dtype=np.float32)
    fp = F.create(suspects["source"], x, attack="test", epsilon=0.1, tau=1.0, dataset="none")
    fp = fp.with_calibration(F.calibrate(fp, *calibration_models, models="test models"))
    assert len(set(fp.keys.tolist())) >= 3 and fp.keys.max() >= 2  # the lies below need this
    return fp


@pytest.fixture(scope="module")
def files(fp, suspects, tmp_path_factory):
    """The fingerprint and suspect models on disk (read-only: tests copy what they change)."""
    folder = tmp_path_factory.mktemp("files")
    F.save(fp, folder / "fp")
    for name, model in suspects.items():
        model.save(folder / f"{name}.keras")
    tiny_model(input_shape=(28, 28, 1)).save(folder / "gray28.keras")
    tiny_model(num_classes=5).save(folder / "five_classes.keras")
    keras.Sequential([keras.Input((32, 32, 3)), layers.Lambda(lambda x: x * 2.0), layers.Flatten(),
                      layers.Dense(K), layers.Softmax()]).save(folder / "lambda.keras")
    return folder


def run(argv, capsys):
    """``cae ARGV`` in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_refused(status, out, err, fragment, code=2):
    print(f"\n    exit {status}: {err.strip()}")
    assert status == code, err
    assert out == ""
    assert err.startswith("cae: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert fragment in err, err


# --------------------------------------------------------------------------- results
@pytest.mark.parametrize("statistic", ["retention", "lr"])
@pytest.mark.parametrize("suspect", ["source", "surrogate", "reference"])
def test_python_and_cli_give_the_same_verdict_and_numbers(files, fp, suspects, capsys, suspect, statistic):
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--model", files / f"{suspect}.keras",
                            "--statistic", statistic, "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert JSON_KEYS <= set(result)
    assert result == json.loads(json.dumps(F.verify(suspects[suspect], fp, statistic=statistic).to_dict()))
    assert result["queries"] == N and result["threshold_source"] == "calibration" and result["references"] == 3
    # The reference matches about as many keys as the calibration references: not accused.
    assert result["verdict"] == {"source": "surrogate", "surrogate": "surrogate", "reference": "inconclusive"}[suspect]
    assert 0.0 < result["p_value"] <= 1.0 and 0.0 < result["p_value_derived"] <= 1.0


def test_local_text_output_and_threshold_override(files, capsys):
    status, out, _ = run(["verify", "--fingerprint", files / "fp.json", "--model", files / "source.keras"],
                         capsys)
    assert status == 0 and out.startswith("SURROGATE: retention 1.000 vs threshold"), out
    assert f"(calibration); retention 1.000 ({N}/{N}); p-value" in out and "3 calibration references" in out
    status, out, _ = run(["verify", "--fingerprint", files / "fp.npz", "--model", files / "reference.keras",
                          "--threshold", "0", "--json"], capsys)
    result = json.loads(out)
    assert status == 0 and result["threshold"] == 0 and result["threshold_source"] == "argument"
    # θ = 0 alone is not evidence: the reference's p-value stands between it and an accusation.
    assert result["is_surrogate"] is False and result["p_value"] > 0.01


def test_the_strongest_evidence_has_a_small_p_value(fp, suspects):
    result = F.verify(suspects["source"], fp)
    assert result.retention == 1.0 and result.p_value < 1e-3 and result.verdict == "surrogate"


def test_without_a_calibration_the_default_is_used_and_said(fp, suspects, tmp_path, capsys):
    F.save(F.create(suspects["source"], fp.x, attack="test", epsilon=0.1, tau=1.0, dataset="none"), tmp_path / "fp")
    suspects["surrogate"].save(tmp_path / "surrogate.keras")
    status, out, err = run(["verify", "--fingerprint", tmp_path / "fp", "--model", tmp_path / "surrogate.keras",
                            "--json"], capsys)
    result = json.loads(out)
    assert status == 0, err
    assert result["threshold"] == F.DEFAULT_THRESHOLD and result["threshold_source"] == "default"
    assert result["p_value"] is None and result["calibrated"] is False  # no references, no null
    status, out, err = run(["verify", "--fingerprint", tmp_path / "fp", "--model", tmp_path / "surrogate.keras",
                            "--statistic", "lr"], capsys)
    assert_refused(status, out, err, "carries no calibration")


def test_a_reference_is_left_out_of_its_own_calibration(fp, suspects, calibration_models, tmp_path, capsys):
    for name in ("reference", "surrogate"):
        suspects[name].save(tmp_path / f"{name}.keras")
    surrogates, references = calibration_models
    own = fp.with_calibration(F.calibrate(fp, surrogates, [references[0], suspects["reference"]]))
    F.save(own, tmp_path / "fp")
    status, out, err = run(["verify", "--fingerprint", tmp_path / "fp", "--model", tmp_path / "reference.keras",
                            "--json"], capsys)
    result = json.loads(out)
    assert status == 0, err
    assert result["left_out"] == 1 and result["references"] == 1
    status, out, _ = run(["verify", "--fingerprint", tmp_path / "fp", "--model", tmp_path / "surrogate.keras",
                          "--json"], capsys)
    assert status == 0 and json.loads(out)["left_out"] is None and json.loads(out)["references"] == 2
    status, out, _ = run(["verify", "--fingerprint", tmp_path / "fp", "--model", tmp_path / "reference.keras"],
                         capsys)
    assert "the suspect is calibration reference 1, left out" in out


@pytest.fixture
def start():
    servers = []

    def _start(model, **options):
        server, url = serve(model, **options)
        servers.append(server)
        return server, url

    yield _start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("role, labels_only", [("surrogate", False), ("reference", True)])
def test_remote_verify(files, fp, suspects, start, capsys, role, labels_only):
    server, url = start(suspects[role], labels_only=labels_only)
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--url", url, "--json",
                            "--batch-size", 8, "--max-queries", N], capsys)
    assert status == 0, err
    result = json.loads(out)
    local = F.verify(suspects[role], fp)
    print(f"\n    {role} over HTTP: retention {result['retention']:.2f}, surrogate {result['is_surrogate']}, "
          f"queries {result['queries']}, p-value {result['p_value']:.3g}")
    assert result["retention"] == local.retention
    assert result["is_surrogate"] is (role == "surrogate")
    assert result["queries"] == N == server.instances_received and server.requests_received == -(-N // 8)


def test_remote_budget_smaller_than_fingerprint(files, suspects, start, capsys):
    server, url = start(suspects["surrogate"])
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--url", url, "--max-queries", N - 1],
                           capsys)
    assert_refused(status, out, err, f"{N} inputs requested but only {N - 1} of the {N - 1} queries are left", code=1)
    assert "nothing was sent" in err
    assert server.instances_received == 0 and server.requests_received == 0


@pytest.mark.parametrize("options, fragment", [
    ({"garbage": "not_json"}, "something that is not JSON"),
    ({"garbage": "wrong_length"}, "predictions for"),
    ({"model": "five"}, "scores for 5 classes (the fingerprint has 10)"),
])
def test_remote_bad_answers(files, suspects, start, capsys, options, fragment):
    model = tiny_model(num_classes=5) if options.pop("model", None) else suspects["surrogate"]
    server, url = start(model, **options)
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--url", url], capsys)
    assert_refused(status, out, err, fragment, code=1)
    assert server.requests_received == 1  # malformed answers are not retried


# --------------------------------------------------------------------------- hostile fingerprints
def _flip(data, offset):
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1:]


def _document(folder):
    return json.loads((folder / "fp.json").read_text())


def _forge(folder, arrays=None, edit=None):
    """Rewrite the fingerprint in ``folder`` with new arrays and/or manifest, recomputing
    every checksum: a liar who knows the format."""
    document = _document(folder)
    if arrays is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        payload = buffer.getvalue()
        (folder / "fp.npz").write_bytes(payload)
        document["arrays"] = {name: {"dtype": a.dtype.str, "shape": list(a.shape)} for name, a in arrays.items()}
        document["sha256"] = F.content_hash(arrays)
        document["npz_sha256"] = hashlib.sha256(payload).hexdigest()
    if edit is not None:
        edit(document)
    document["manifest_sha256"] = F._manifest_digest(document)
    (folder / "fp.json").write_text(json.dumps(document))


def _arrays(folder):
    with np.load(folder / "fp.npz") as archive:
        return {name: archive[name] for name in archive.files}


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(document):
        target = document
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return edit


def _with_x(transform):
    def arrays(folder):
        out = _arrays(folder)
        out["x"] = transform(out["x"])
        return out
    return arrays


def _tamper(case, folder, fp):
    npz, js = folder / "fp.npz", folder / "fp.json"
    if case == "npz: one byte flipped":
        npz.write_bytes(_flip(npz.read_bytes(), npz.stat().st_size // 2))
    elif case == "json: one byte flipped (a digit)":
        text = js.read_text()
        js.write_text(text.replace('"epsilon": 0.1', '"epsilon": 0.3'))
    elif case == "json: one byte flipped (syntax)":
        js.write_bytes(_flip(js.read_bytes(), 0))
    elif case == "npz: truncated":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif case == "json: truncated":
        js.write_bytes(js.read_bytes()[: js.stat().st_size // 2])
    elif case == "npz: empty":
        npz.write_bytes(b"")
    elif case == "npz: missing":
        npz.unlink()
    elif case == "json: missing":
        js.unlink()
    elif case == "npz: another fingerprint's":
        manifest = {key: value for key, value in fp.manifest.items() if key != "calibration"}
        other = F.Fingerprint(x=fp.x[:5], keys=fp.keys[:5], manifest=manifest)
        F.save(other, folder / "other")
        shutil.copy(folder / "other.npz", npz)
    elif case == "lie: fewer classes than the keys use":
        _forge(folder, edit=_set("manifest", "num_classes", int(fp.keys.max())))
    elif case == "lie: more classes than the suspect has":
        _forge(folder, edit=_set("manifest", "num_classes", K + 2))
    elif case == "lie: wrong shape of x":
        _forge(folder, edit=_set("arrays", "x", "shape", [N, 28, 28, 3]))
    elif case == "lie: wrong n":
        _forge(folder, edit=_set("n", N + 1))
    elif case == "lie: format version 3":
        _forge(folder, edit=_set("format_version", 3))
    elif case == "lie: a format 1 file with a calibration":
        _forge(folder, edit=_set("format_version", 1))
    elif case == "lie: x stored as float64":
        _forge(folder, arrays=_with_x(lambda x: x.astype(np.float64))(folder))
    elif case == "lie: x holds NaN":
        _forge(folder, arrays=_with_x(lambda x: np.where(x > 0.99, np.nan, x).astype(np.float32))(folder))
    elif case == "lie: x in 0..255":
        _forge(folder, arrays=_with_x(lambda x: (x * 255).astype(np.float32))(folder))
    elif case == "lie: keys as floats":
        arrays = _arrays(folder)
        arrays["keys"] = arrays["keys"].astype(np.float64)
        _forge(folder, arrays=arrays)
    elif case == "lie: calibration not an object":
        _forge(folder, edit=_set("manifest", "calibration", "trust me"))
    elif case == "lie: calibration rows of the wrong length":
        _forge(folder, edit=_set("manifest", "calibration", "reference_matches", [[1, 0]]))
    elif case == "lie: calibration not 0/1":
        _forge(folder, edit=_set("manifest", "calibration", "surrogate_matches", [[2] * N]))
    elif case == "lie: calibration alpha above 1":
        _forge(folder, edit=_set("manifest", "calibration", "alpha", 1.5))
    elif case == "lie: one reference hash for three references":
        _forge(folder, edit=_set("manifest", "calibration", "reference_weights_sha256", ["0" * 64]))
    else:
        raise ValueError(case)


HOSTILE_FINGERPRINTS = {
    "npz: one byte flipped": "fp.npz does not match its manifest",
    "json: one byte flipped (a digit)": "fp.json was modified after it was written",
    "json: one byte flipped (syntax)": "fp.json is not valid JSON",
    "npz: truncated": "fp.npz does not match its manifest",
    "json: truncated": "fp.json is not valid JSON",
    "npz: empty": "fp.npz does not match its manifest",
    "npz: missing": "fp.npz is missing",
    "json: missing": "fp.json is missing",
    "npz: another fingerprint's": "fp.npz does not match its manifest",
    "lie: fewer classes than the keys use": "but the manifest says num_classes=",
    "lie: more classes than the suspect has": "source.keras predicts 10 classes but the fingerprint has 12",
    "lie: wrong shape of x": "describes x as",
    "lie: wrong n": f"says n={N + 1} but",
    "lie: format version 3": "format_version 3",
    "lie: a format 1 file with a calibration": "a format_version 1 file cannot hold a calibration",
    "lie: x stored as float64": "array x has dtype float64",
    "lie: x holds NaN": "x contains NaN",
    "lie: x in 0..255": "images must lie in [0, 1]",
    "lie: keys as floats": "array keys has dtype float64",
    "lie: calibration not an object": "manifest calibration is str; expected a JSON object",
    "lie: calibration rows of the wrong length": "calibration reference_matches has shape (1, 2)",
    "lie: calibration not 0/1": f"calibration surrogate_matches has shape (1, {N}); expected (models >= 1, {N}) of 0/1",
    "lie: calibration alpha above 1": "calibration alpha is 1.5",
    "lie: one reference hash for three references": "one string per reference",
}


@pytest.mark.parametrize("case", list(HOSTILE_FINGERPRINTS))
def test_hostile_fingerprint(case, files, fp, tmp_path, capsys):
    for name in ("fp.npz", "fp.json"):
        shutil.copy(files / name, tmp_path / name)
    _tamper(case, tmp_path, fp)
    status, out, err = run(["verify", "--fingerprint", tmp_path / "fp", "--model", files / "source.keras",
                            "--json"], capsys)
    assert_refused(status, out, err, HOSTILE_FINGERPRINTS[case])


# --------------------------------------------------------------------------- hostile suspects
def _corrupt_suspect(case, source, folder):
    raw = source.read_bytes()
    path = folder / "suspect.keras"
    if case == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "not a model":
        path.write_bytes(b"certainly not a zip archive\n" * 10)
    elif case == "one byte flipped":
        path.write_bytes(_flip(raw, raw.index(b"config.json") + 200))
    elif case in ("config.json missing", "unknown layer class", "weights missing"):
        with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as out:
            for name in original.namelist():
                content = original.read(name)
                if case == "config.json missing" and name == "config.json":
                    continue
                if case == "weights missing" and name.endswith(".weights.h5"):
                    continue
                if case == "unknown layer class" and name == "config.json":
                    content = json.dumps({"class_name": "Backdoor", "config": {}, "module": "evil"}).encode()
                out.writestr(name, content)
    elif case == "an h5 file that is not":
        path = folder / "suspect.h5"
        path.write_bytes(raw)
    elif case == "a folder":
        path = folder / "saved_model"
        path.mkdir()
    elif case == "missing":
        path = folder / "nothing.keras"
    else:
        raise ValueError(case)
    return path


HOSTILE_SUSPECTS = {
    "truncated": "is not a .keras archive",
    "empty": "is not a .keras archive",
    "not a model": "is not a .keras archive",
    "one byte flipped": "cannot load suspect model",
    "config.json missing": "cannot load suspect model",
    "unknown layer class": "cannot load suspect model",
    "weights missing": "cannot load suspect model",
    "an h5 file that is not": "cannot load suspect model",
    "a folder": "does not exist or is not a file",
    "missing": "does not exist or is not a file",
}


@pytest.mark.parametrize("case", list(HOSTILE_SUSPECTS))
def test_corrupt_suspect_file(case, files, tmp_path, capsys):
    path = _corrupt_suspect(case, files / "source.keras", tmp_path)
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--model", path], capsys)
    assert_refused(status, out, err, HOSTILE_SUSPECTS[case])
    assert str(path) in err and ".keras file" in err  # the file, and what to pass instead


@pytest.mark.parametrize("name, fragment", [
    ("gray28.keras", "takes inputs of shape (None, 28, 28, 1)"),
    ("five_classes.keras", "five_classes.keras predicts 5 classes but the fingerprint has 10"),
    ("lambda.keras", "Lambda"),  # safe_mode refuses to deserialise Python code
])
def test_mismatched_suspect_model(name, fragment, files, capsys):
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--model", files / name], capsys)
    assert_refused(status, out, err, fragment)


@pytest.mark.parametrize("argv, fragment", [
    (["--threshold", "1.5"], "threshold must be a number in [0, 1] (any finite number for the likelihood ratio), got 1.5"),
    (["--threshold", "nan"], "threshold must be a number in [0, 1] (any finite number for the likelihood ratio), got nan"),
    (["--batch-size", "0"], "batch_size must be a positive integer"),
])
def test_bad_local_options(argv, fragment, files, capsys):
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--model", files / "source.keras", *argv],
                           capsys)
    assert_refused(status, out, err, fragment)


def test_local_budget_smaller_than_fingerprint(files, capsys):
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--model", files / "source.keras",
                            "--max-queries", N - 1], capsys)
    assert_refused(status, out, err, f"verifying needs {N} queries (one per fingerprint) but --max-queries is {N - 1}")
    assert "nothing was sent" in err


def test_keys_verifies_with_the_first_keys_and_recomputes_the_calibration(files, fp, suspects, capsys):
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--model", files / "surrogate.keras",
                            "--keys", 30, "--max-queries", 30, "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    small = F.head(fp, 30)
    assert result["queries"] == 30 and result["n"] == 30
    assert result == json.loads(json.dumps(F.verify(suspects["surrogate"], small).to_dict()))
    assert result["fingerprint_sha256"] == small.sha256 != fp.sha256


@pytest.mark.parametrize("bad", [0, N + 1])
def test_keys_outside_the_fingerprint_are_refused(bad, files, capsys):
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--model", files / "surrogate.keras",
                            "--keys", bad], capsys)
    assert_refused(status, out, err, f"--keys is {bad}; the fingerprint has {N} keys: give 1..{N}")


def test_local_budget_equal_to_fingerprint_is_enough(files, capsys):
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--model", files / "source.keras",
                            "--max-queries", N, "--json"], capsys)
    assert status == 0, err
    assert json.loads(out)["queries"] == N


@pytest.mark.parametrize("url, argv, fragment", [
    ("ftp://127.0.0.1/v1/models/m:predict", [], "url must be an http(s) URL"),
    ("http://127.0.0.1:9/v1/models/m:predict", ["--max-queries", "-1"], "--max-queries is -1; give a number"),
    ("http://127.0.0.1:9/v1/models/m:predict", ["--timeout", "0"], "timeout must be a positive float"),
])
def test_bad_remote_options(url, argv, fragment, files, capsys):
    status, out, err = run(["verify", "--fingerprint", files / "fp", "--url", url, *argv], capsys)
    assert_refused(status, out, err, fragment)


@pytest.mark.parametrize("argv, fragment", [
    (["--eps", "2"], "--eps 2.0 is not allowed; expected an L-inf bound in (0, 1]"),
    (["--eps", "nan"], "--eps nan is not allowed"),
    (["--tau", "1.5"], "--tau 1.5 is not allowed; expected a conferrability threshold in [0, 1]"),
    (["--target", "everything"], "--target 'everything' is not allowed; choose one of most_conferrable"),
    (["--mistakes", "-2"], "--mistakes -2 is not allowed; expected 0 or more"),
    (["--smooth", "5"], "--smooth 5.0 is not allowed; expected a gradient blur of 0 (the paper's) to 4 pixels"),
    (["--smooth", "nan"], "--smooth nan is not allowed"),
    (["--transform", "rotate"], "--transform='rotate' is not allowed; expected one of none, shift+flip"),
    (["--mistakes-stable", "mirror"], "--mistakes-stable 'mirror': 'mirror' is not a transformation"),
])
def test_extract_refuses_bad_settings_before_training(argv, fragment, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    status, out, err = run(["extract", "--out", tmp_path / "fp", *argv], capsys)
    assert_refused(status, out, err, fragment)
    assert not (tmp_path / "cache").exists() and not list(tmp_path.glob("fp*"))  # nothing trained


def test_exit_status_of_the_command(files, tmp_path):
    """The real entry point: status 2 and one line on stderr, no traceback."""
    for name in ("fp.npz", "fp.json"):
        shutil.copy(files / name, tmp_path / name)
    npz = tmp_path / "fp.npz"
    npz.write_bytes(_flip(npz.read_bytes(), 100))
    completed = subprocess.run(
        [sys.executable, "-m", "cae.cli", "verify", "--fingerprint", str(tmp_path / "fp"),
         "--model", str(files / "source.keras")],
        capture_output=True, text=True, timeout=120,
        # The cae under test, whatever copy is installed.
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(cae.__file__))},
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cae: error: ") and "does not match its manifest" in lines[0]


# --------------------------------------------------------------------------- inspect
def test_inspect_reports_the_keys_the_calibration_and_its_self_check(files, fp, tmp_path, capsys):
    status, out, err = run(["inspect", "--fingerprint", files / "fp", "--json"], capsys)
    assert status == 0, err
    result = json.loads(out)
    assert result["keys"] == N and result["key_groups"] == {"test": N} and result["sha256"] == fp.sha256
    calibration = result["calibration"]
    assert calibration["surrogates"] == 3 and calibration["references"] == 3
    assert calibration["threshold"]["retention"] == pytest.approx(fp.calibration.threshold("retention"))
    check = calibration["self_check"]["retention"]
    rows = fp.calibration.self_check("retention")
    assert [r["p_value"] for r in check["models"]] == pytest.approx([r["p_value"] for r in rows])
    assert check["surrogates_flagged"] == sum(r["verdict"] == "surrogate" for r in rows[:3])
    status, out, _ = run(["inspect", "--fingerprint", files / "fp"], capsys)
    assert status == 0 and f"{N} keys ({N} test)" in out and "self-check, leave-one-out" in out
    F.save(F.Fingerprint(x=fp.x, keys=fp.keys, manifest={k: v for k, v in fp.manifest.items() if k != "calibration"}),
           tmp_path / "bare")
    status, out, _ = run(["inspect", "--fingerprint", tmp_path / "bare"], capsys)
    assert status == 0 and "no calibration" in out
    status, out, err = run(["inspect", "--fingerprint", tmp_path / "missing"], capsys)
    assert_refused(status, out, err, "is missing")


def test_key_group_shifts_place_each_model_against_the_calibration_references(fp, suspects):
    from cae import reports

    rows, spread = reports.key_group_shifts(fp, {"surrogate": suspects["surrogate"]}, {"reference": suspects["reference"]})
    kinds = [r["kind"] for r in rows]
    assert kinds == ["calibration reference"] * 3 + ["calibration surrogate"] * 3 + ["derived", "reference"]
    source_like = rows[-2]
    assert source_like["retention (test)"] == pytest.approx(F.verify(suspects["surrogate"], fp).retention)
    assert source_like["shift (test)"] > rows[-1]["shift (test)"]  # the copy agrees more than the independent model
    assert set(spread) == {"test"} and spread["test"] >= 0
    with pytest.raises(ValueError, match="calibrated fingerprint"):
        reports.key_group_shifts(F.Fingerprint(x=fp.x, keys=fp.keys, manifest={
            k: v for k, v in fp.manifest.items() if k != "calibration"}), {}, {})
