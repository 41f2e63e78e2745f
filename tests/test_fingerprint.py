"""The fingerprint file format (tamper evidence, refusal of lies) and Algorithm 1 (verify)."""

import hashlib
import io
import json
import pathlib
import tempfile

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers

import cae
from cae import fingerprint as F
from cae import stats
from helpers import tiny_model

K = 10
N = 40


@pytest.fixture(scope="module")
def source():
    return tiny_model()


@pytest.fixture(scope="module")
def fp(source):
    rng = np.random.default_rng(0)
    x = rng.random((N, 32, 32, 3), dtype=np.float32)
    return F.create(
        source, x, attack="cigm", epsilon=0.15, tau=1.0, dataset="cifar10",
        source_model_hash="abc123", targets=rng.integers(0, K, N),
        originals=rng.random((N, 32, 32, 3), dtype=np.float32),
        created_with={"steps": 100, "alpha": 0.01, "seed": 0},
    )


@pytest.fixture(scope="module")
def balanced():
    """Keys 0..K-1 each N/K times (not a real model's keys: for exact chance rates)."""
    x = np.random.default_rng(1).random((N, 32, 32, 3), dtype=np.float32)
    manifest = dict(num_classes=K, dataset="none", epsilon=0.1, tau=1.0, source_model_hash=None,
                    attack="none", cae_version=cae.__version__, created_with={})
    return F.Fingerprint(x=x, keys=np.arange(N) % K, manifest=manifest)


class Saved(tuple):
    """(npz bytes, json bytes) with a short repr for hypothesis reports."""

    def __repr__(self):
        return f"Saved(npz={len(self[0])} bytes, json={len(self[1])} bytes)"


@pytest.fixture(scope="module")
def saved(fp, tmp_path_factory):
    """The bytes of a saved fingerprint (npz, json)."""
    npz, js = F.save(fp, tmp_path_factory.mktemp("saved") / "fp")
    return Saved((npz.read_bytes(), js.read_bytes()))


def write(directory, npz_bytes, json_bytes):
    directory = pathlib.Path(directory)
    (directory / "fp.npz").write_bytes(npz_bytes)
    (directory / "fp.json").write_bytes(json_bytes)
    return directory / "fp"


def forge(directory, arrays, edit=lambda document: None, base_json=None):
    """Write arrays + a manifest whose checksums are all consistent (a careful liar), so that
    the semantic checks behind the checksums are what is tested."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    document = json.loads(base_json)
    document["arrays"] = {name: {"dtype": np.asarray(a).dtype.str, "shape": list(np.shape(a))}
                          for name, a in arrays.items()}
    document["npz_sha256"] = hashlib.sha256(payload).hexdigest()
    try:
        document["sha256"] = F.content_hash(arrays)
    except F.FingerprintError:
        pass
    edit(document)
    document["manifest_sha256"] = F._manifest_digest(document)
    return write(directory, payload, json.dumps(document).encode())


def arrays_of(fp):
    return {"x": np.array(fp.x), "keys": np.array(fp.keys), "targets": np.array(fp.targets),
            "originals": np.array(fp.originals)}


# --------------------------------------------------------------------------- artefact
def test_create_records_keys_and_manifest(fp, source):
    assert fp.n == N and fp.num_classes == K
    np.testing.assert_array_equal(fp.keys, np.argmax(source.predict(fp.x, verbose=0), axis=1))
    assert fp.keys.dtype == np.int64 and fp.x.dtype == np.float32
    assert fp.manifest["cae_version"] == cae.__version__
    assert fp.manifest["created_with"] == {"steps": 100, "alpha": 0.01, "seed": 0}
    assert set(F.MANIFEST_FIELDS) <= set(fp.manifest)
    with pytest.raises(ValueError):
        fp.x[0, 0, 0, 0] = 0.5  # read-only
    assert len(fp.sha256) == 64


def test_save_load_round_trip_exact(fp, tmp_path):
    npz, js = F.save(fp, tmp_path / "sub" / "fp")
    assert (npz.name, js.name) == ("fp.npz", "fp.json")
    for name in (tmp_path / "sub" / "fp", npz, js):  # any of the three spellings
        loaded = F.load(name)
        assert loaded == fp
        for array in ("x", "keys", "targets", "originals"):
            a, b = getattr(loaded, array), getattr(fp, array)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        assert loaded.manifest == fp.manifest and loaded.sha256 == fp.sha256
    document = json.loads(js.read_text())
    assert document["sha256"] == fp.sha256 and document["format_version"] == F.FORMAT_VERSION
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temp files


def test_round_trip_without_optional_arrays(balanced, tmp_path):
    F.save(balanced, tmp_path / "b")
    loaded = F.load(tmp_path / "b")
    assert loaded == balanced and loaded.targets is None and loaded.originals is None


def test_equality_is_exact(fp):
    x = np.array(fp.x)
    x[0, 0, 0, 0] = np.nextafter(x[0, 0, 0, 0], np.float32(1))
    other = F.Fingerprint(x=x, keys=fp.keys, manifest=fp.manifest, targets=fp.targets,
                          originals=fp.originals)
    assert other != fp and other.sha256 != fp.sha256


def test_constructor_copies_inputs(fp):
    x = np.array(fp.x)
    made = F.Fingerprint(x=x, keys=fp.keys, manifest=fp.manifest)
    x[:] = 0
    assert made.x.max() > 0


@pytest.mark.parametrize("change, match", [
    (dict(x=np.zeros((N, 32, 32, 3))), "float32"),
    (dict(x=np.zeros((N, 28, 28, 3), np.float32)), "shape"),
    (dict(x=np.full((N, 32, 32, 3), np.nan, np.float32)), "NaN"),
    (dict(x=np.full((N, 32, 32, 3), 1.5, np.float32)), r"\[0, 1\]"),
    (dict(keys=np.zeros(N - 1, np.int64)), "shape"),
    (dict(keys=np.zeros(N)), "integer"),
    (dict(keys=np.full(N, K)), "num_classes"),
    (dict(targets=np.full(N, -1)), "num_classes"),
    (dict(manifest={"num_classes": K}), "lacks"),
])
def test_constructor_refuses(fp, change, match):
    kwargs = dict(x=fp.x, keys=fp.keys, manifest=fp.manifest)
    kwargs.update(change)
    with pytest.raises(F.FingerprintError, match=match):
        F.Fingerprint(**kwargs)


def test_create_needs_num_classes_for_callables(fp):
    with pytest.raises(ValueError, match="num_classes"):
        F.create(lambda x: np.zeros(len(x), int), fp.x, attack="a", epsilon=0.1, tau=1.0,
                 dataset="d")


# --------------------------------------------------------------------------- refusals
def test_missing_files(saved, tmp_path):
    path = write(tmp_path, *saved)
    (tmp_path / "fp.json").unlink()
    with pytest.raises(F.FingerprintError, match="missing.*copy both"):
        F.load(path)
    path = write(tmp_path, *saved)
    (tmp_path / "fp.npz").unlink()
    with pytest.raises(F.FingerprintError, match="fp.npz is missing"):
        F.load(path)


def test_flipped_byte_in_npz_data(saved, tmp_path):
    npz, js = bytearray(saved[0]), saved[1]
    npz[len(npz) // 2] ^= 0x01  # inside x
    with pytest.raises(F.FingerprintError, match="checksum"):
        F.load(write(tmp_path, bytes(npz), js))


def test_flipped_byte_in_manifest_value(saved, tmp_path):
    text = saved[1].decode()
    start = text.index('"epsilon": 0.15') + len('"epsilon": 0.1')
    tampered = text[:start] + "6" + text[start + 1:]  # 0.15 -> 0.16, still valid JSON
    assert json.loads(tampered)["manifest"]["epsilon"] == 0.16
    with pytest.raises(F.FingerprintError, match="modified"):
        F.load(write(tmp_path, saved[0], tampered.encode()))


def test_truncated_npz(saved, tmp_path):
    with pytest.raises(F.FingerprintError, match="checksum"):
        F.load(write(tmp_path, saved[0][:-100], saved[1]))


def test_corrupt_npz_with_matching_checksum(saved, tmp_path):
    """A truncated file whose manifest checksum was also updated still cannot load."""
    payload = saved[0][: len(saved[0]) // 3]
    document = json.loads(saved[1])
    document["npz_sha256"] = hashlib.sha256(payload).hexdigest()
    document["manifest_sha256"] = F._manifest_digest(document)
    with pytest.raises(F.FingerprintError, match="not a readable .npz"):
        F.load(write(tmp_path, payload, json.dumps(document).encode()))


def test_not_json(saved, tmp_path):
    with pytest.raises(F.FingerprintError, match="not valid JSON"):
        F.load(write(tmp_path, saved[0], saved[1][:-10]))


def test_unsupported_format_version(saved, tmp_path):
    document = json.loads(saved[1])
    document["format_version"] = 99
    with pytest.raises(F.FingerprintError, match="format_version 99"):
        F.load(write(tmp_path, saved[0], json.dumps(document).encode()))


def lie(field, value):
    def edit(document):
        if field in ("n", "sha256"):
            document[field] = value
        elif field == "x_shape":
            document["arrays"]["x"]["shape"] = value
        else:
            document["manifest"][field] = value
    return edit


@pytest.mark.parametrize("edit, match", [
    (lie("num_classes", 3), "num_classes=3"),
    (lie("num_classes", "ten"), "num_classes must be an integer"),
    (lie("n", N + 1), "n=41"),
    (lie("x_shape", [N, 32, 32, 1]), "describes x"),
    (lie("sha256", "0" * 64), "content checksum"),
    (lambda d: d["manifest"].pop("tau"), "lacks tau"),
])
def test_lying_manifest_refused(fp, saved, tmp_path, edit, match):
    if match == "num_classes=3":
        assert fp.keys.max() >= 3  # the lie is detectable on this fingerprint
    path = forge(tmp_path, arrays_of(fp), edit, base_json=saved[1])
    with pytest.raises(F.FingerprintError, match=match):
        F.load(path)


@pytest.mark.parametrize("change, match", [
    (lambda a: a.update(x=a["x"].astype(np.float64)), "dtype float64"),
    (lambda a: a.update(keys=a["keys"].astype(np.int32)), "dtype int32"),
    (lambda a: a["x"].__setitem__((0, 0, 0, 0), np.nan), "NaN"),
    (lambda a: a["originals"].__setitem__((1, 2, 3, 0), 2.0), r"\[0, 1\]"),
    (lambda a: a.update(keys=a["keys"][:-1]), "keys has 39 entries"),
    (lambda a: a.update(x=a["x"][..., :1]), "x has shape|describes x|shape"),
    (lambda a: a.update(extra=np.zeros(3)), "holds arrays"),
    (lambda a: a.update(keys=np.array([object()] * N)), "not a readable .npz"),
])
def test_forged_arrays_refused(fp, saved, tmp_path, change, match):
    arrays = arrays_of(fp)
    change(arrays)
    path = forge(tmp_path, arrays, base_json=saved[1])
    with pytest.raises(F.FingerprintError, match=match):
        F.load(path)


FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.data())
def test_fuzz_npz_flips_and_truncations_never_load(saved, data):
    npz = bytearray(saved[0])
    if data.draw(st.booleans(), label="truncate"):
        npz = npz[: data.draw(st.integers(0, len(npz) - 1), label="length")]
    else:
        positions = data.draw(st.sets(st.integers(0, len(npz) - 1), min_size=1, max_size=3),
                              label="positions")
        for position in positions:
            npz[position] ^= data.draw(st.integers(1, 255), label="xor")
    with tempfile.TemporaryDirectory() as directory:
        with pytest.raises(F.FingerprintError):
            F.load(write(directory, bytes(npz), saved[1]))


@FUZZ
@given(st.data())
def test_fuzz_manifest_flips_never_load_a_different_fingerprint(fp, saved, data):
    js = bytearray(saved[1])
    if data.draw(st.booleans(), label="truncate"):
        js = js[: data.draw(st.integers(0, len(js) - 1), label="length")]
    else:
        position = data.draw(st.integers(0, len(js) - 1), label="position")
        js[position] ^= data.draw(st.integers(1, 255), label="xor")
    with tempfile.TemporaryDirectory() as directory:
        try:
            loaded = F.load(write(directory, saved[0], bytes(js)))
        except F.FingerprintError:
            return
    assert loaded == fp  # only formatting changed (e.g. whitespace)


# --------------------------------------------------------------------------- verify
def test_source_retains_everything(fp, source):
    result = F.verify(source, fp)
    assert (result.retention, result.matches, result.n) == (1.0, N, N)
    assert result.is_surrogate and result.queries == N and result.p_value is None
    assert result.fingerprint_sha256 == fp.sha256


def test_key_copying_callable_and_constant_model(balanced):
    lookup = {balanced.x[i].tobytes(): int(balanced.keys[i]) for i in range(N)}
    copier = F.verify(lambda x: np.array([lookup[image.tobytes()] for image in x]), balanced,
                      batch_size=7)
    assert copier.retention == 1.0 and copier.is_surrogate
    for constant in (0, 3):
        result = F.verify(lambda x, c=constant: np.eye(K)[np.full(len(x), c)], balanced)
        assert result.retention == pytest.approx(1 / K) and not result.is_surrogate


def test_constant_keras_model(fp):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    logits = layers.Dense(K, kernel_initializer="zeros",
                          bias_initializer=keras.initializers.Constant(np.eye(K)[2] * 5))(
        layers.Flatten()(inputs))
    constant = keras.Model(inputs, layers.Softmax()(logits))
    assert F.verify(constant, fp).retention == pytest.approx(np.mean(fp.keys == 2))


def test_threshold_is_inclusive(balanced):
    def half(x):  # right on even positions, class 0 (wrong for odd positions) elsewhere
        index = np.arange(len(x))
        return np.where(index % 2 == 0, index % K, 0)

    exact = F.verify(half, balanced, threshold=0.5, batch_size=N)
    assert exact.retention == 0.5 and exact.is_surrogate
    assert not F.verify(half, balanced, threshold=0.5 + 1e-9, batch_size=N).is_surrogate
    theta = stats.Threshold(theta=0.5, alpha=0.01, empirical_fpr=0.0, empirical_fpr_upper=0.1,
                            n_references=20)
    assert F.verify(half, balanced, threshold=theta, batch_size=N).threshold == 0.5


def test_p_values_from_nulls(fp, source):
    refs = [0.2, 0.3, 0.25, 0.4]
    result = F.verify(source, fp, null=refs)
    null = stats.Null(tuple(refs), N)
    assert result.p_value_empirical == 1 / 5
    assert result.p_value_binomial == pytest.approx(null.p0 ** N)
    assert result.p_value == max(result.p_value_binomial, result.p_value_empirical)
    binomial_only = F.verify(source, fp, null=0.1)
    assert binomial_only.p_value == pytest.approx(0.1 ** N) and binomial_only.p0 == 0.1
    record = json.loads(json.dumps(result.to_dict()))
    assert {"retention", "threshold", "is_surrogate", "queries", "p_value"} <= set(record)
    assert record["retention"] == 1.0


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_threshold(fp, source, threshold):
    with pytest.raises(ValueError, match="threshold"):
        F.verify(source, fp, threshold=threshold)


def test_wrong_input_shape_keras_model(fp):
    with pytest.raises(ValueError, match=r"inputs of shape \(None, 28, 28, 1\)"):
        F.verify(tiny_model(input_shape=(28, 28, 1)), fp)


def test_wrong_class_count_keras_model(fp):
    with pytest.raises(ValueError, match="predicts 5 classes but the fingerprint has 10"):
        F.verify(tiny_model(num_classes=5), fp)


def test_wrong_class_count_callable(fp):
    with pytest.raises(ValueError, match="predicts 4 classes"):
        F.verify(lambda x: np.ones((len(x), 4)) / 4, fp)


def test_callable_rejecting_the_input_shape(fp):
    def mnist_model(x):
        if x.shape[1:] != (28, 28, 1):
            raise ValueError("expected 28x28x1")
        return np.zeros(len(x), int)

    with pytest.raises(ValueError, match=r"suspect callable failed on a batch of shape"):
        F.verify(mnist_model, fp)


@pytest.mark.parametrize("answer, match", [
    (lambda x: np.full(len(x), K), "labels in"),
    (lambda x: np.zeros(len(x) + 1, int), "shape"),
    (lambda x: np.full(len(x), 0.5), "non-integer"),
    (lambda x: np.full((len(x), K), np.nan), "non-finite"),
])
def test_bad_suspect_answers(fp, answer, match):
    with pytest.raises(ValueError, match=match):
        F.verify(answer, fp)


def test_unknown_suspect_type(fp):
    with pytest.raises(TypeError, match="cannot query"):
        F.verify(object(), fp)


# --------------------------------------------------------------------------- calibration (format 2)
def _calibrated(fp):
    n = fp.n
    surrogates = np.ones((2, n), bool)
    references = np.zeros((3, n), bool)
    references[0, : n // 2] = True
    return fp.with_calibration(F.Calibration(surrogates, references, ("a" * 64, "b" * 64, "c" * 64), "hand"))


def test_calibration_survives_save_and_load_and_sets_theta(fp, tmp_path):
    calibrated = _calibrated(fp)
    F.save(calibrated, tmp_path / "fp")
    loaded = F.load(tmp_path / "fp")
    assert loaded == calibrated and json.loads((tmp_path / "fp.json").read_text())["format_version"] == 2
    calibration = loaded.calibration
    assert np.array_equal(calibration.reference_matches, calibrated.calibration.reference_matches)
    half = (fp.n // 2) / fp.n
    assert calibration.reference_scores() == pytest.approx([half, 0.0, 0.0])
    assert calibration.threshold() == pytest.approx((fp.n // 2 + 1) / fp.n)  # just above the highest reference
    assert calibration.without_reference(0).reference_weights_sha256 == ("b" * 64, "c" * 64)
    first = calibration.with_models(surrogates=[0], references=[0, 1])  # the calibration of those models alone
    assert first.reference_weights_sha256 == ("a" * 64, "b" * 64) and len(first.surrogate_matches) == 1
    assert first.reference_scores() == pytest.approx([half, 0.0]) and first.n == calibration.n
    with pytest.raises(F.FingerprintError, match="models >= 1"):
        calibration.with_models(references=[])


def test_a_format_1_file_loads_and_says_it_has_no_calibration(fp, tmp_path, caplog):
    F.save(fp, tmp_path / "fp")
    document = json.loads((tmp_path / "fp.json").read_text())
    document["format_version"] = 1
    document["manifest_sha256"] = F._manifest_digest(document)
    (tmp_path / "fp.json").write_text(json.dumps(document))
    with caplog.at_level("INFO", logger="cae.fingerprint"):
        loaded = F.load(tmp_path / "fp")
    assert loaded.calibration is None and "carries no calibration" in caplog.text


def test_a_calibration_of_another_size_is_refused(fp):
    with pytest.raises(F.FingerprintError, match=f"covers 3 fingerprints but the fingerprint has {fp.n}"):
        fp.with_calibration(F.Calibration(np.ones((1, 3)), np.zeros((1, 3))))


# --------------------------------------------------------------------------- fewer keys (a query budget)
def test_a_subset_keeps_its_keys_and_the_calibration_of_those_keys(fp, tmp_path):
    calibrated = _calibrated(fp)
    keep = [3, 0, 7, 20, 25]
    small = F.subset(calibrated, keep)
    order = sorted(keep)
    assert small.n == 5 and np.array_equal(small.x, fp.x[order]) and np.array_equal(small.keys, fp.keys[order])
    assert np.array_equal(small.targets, fp.targets[order]) and np.array_equal(small.originals, fp.originals[order])
    assert np.array_equal(small.calibration.reference_matches, calibrated.calibration.reference_matches[:, order])
    assert small.manifest["subset_of"] == {"sha256": calibrated.sha256, "n": fp.n, "indices": order}
    # θ is the smaller fingerprint's: reference 0 matches keys 0, 3, 7 of the 5 (the first half only).
    assert small.calibration.threshold() == pytest.approx(4 / 5)
    F.save(small, tmp_path / "small")
    assert F.load(tmp_path / "small") == small
    mask = np.zeros(fp.n, bool)
    mask[keep] = True
    assert F.subset(calibrated, mask) == small


@pytest.mark.parametrize("keep, match", [
    ([], "non-empty 1-d array of key indices"),
    ([0.5, 1.0], "non-empty 1-d array of key indices"),
    ([0, 0], "distinct key indices"),
    ([N], "distinct key indices in 0..39"),
    ([-1], "distinct key indices"),
    (np.ones(3, bool), r"bool mask of keys must have shape \(40,\)"),
])
def test_a_subset_refuses_bad_indices(fp, keep, match):
    with pytest.raises(ValueError, match=match):
        F.subset(fp, keep)


def test_head_follows_the_stored_order_of_evidence_and_sample_draws_at_random(fp):
    order = list(range(N))[::-1]
    ranked = F.Fingerprint(x=fp.x, keys=fp.keys, manifest={**fp.manifest, "key_order": order})
    first = F.head(ranked, 4)
    assert np.array_equal(first.x, fp.x[[36, 37, 38, 39]])
    assert first.manifest["key_order"] == [3, 2, 1, 0]  # the order, re-indexed into the subset
    assert np.array_equal(F.head(fp, 4).x, fp.x[:4])  # no stored order: stored order
    drawn = F.sample(fp, 10, seed=1)
    assert drawn == F.sample(fp, 10, seed=1) and drawn != F.sample(fp, 10, seed=2) and drawn.n == 10
    for bad in (0, N + 1, 2.5, True):
        with pytest.raises(ValueError, match="keys is not allowed"):
            F.head(fp, bad)


@pytest.mark.parametrize("order", [list(range(N - 1)), [0] * N, [*range(N - 1), N], "0,1", [float(i) for i in range(N)],
                                   ["0", *range(1, N)]])
def test_a_key_order_that_is_not_a_permutation_is_refused(fp, order):
    with pytest.raises(F.FingerprintError, match="key_order must list each key index"):
        F.Fingerprint(x=fp.x, keys=fp.keys, manifest={**fp.manifest, "key_order": order})


# --------------------------------------------------------------------------- self-check and key groups
def test_key_groups_split_the_attacks_examples_from_the_natural_mistakes(fp):
    assert {k: v.tolist() for k, v in F.key_groups(fp).items()} == {"cigm": list(range(N))}
    mixed = F.Fingerprint(x=fp.x, keys=fp.keys, manifest={**fp.manifest, "created_with": {"mistakes": 10}})
    groups = F.key_groups(mixed)
    assert groups["cigm"].tolist() == list(range(N - 10)) and groups["natural mistakes"].tolist() == list(range(N - 10, N))
    for bad in (N + 1, -1, "10", True):
        lying = F.Fingerprint(x=fp.x, keys=fp.keys, manifest={**fp.manifest, "created_with": {"mistakes": bad}})
        with pytest.raises(F.FingerprintError, match="created_with.mistakes"):
            F.key_groups(lying)


def test_the_self_check_judges_each_calibration_model_by_the_others():
    rng = np.random.default_rng(2)
    n = 200
    base = rng.uniform(0.05, 0.5, n)
    references = rng.random((5, n)) < base
    surrogates = rng.random((4, n)) < np.minimum(base + 0.45, 0.98)
    calibration = F.Calibration(surrogates, references)
    rows = calibration.self_check()
    assert [(r["kind"], r["index"]) for r in rows] == [("surrogate", i) for i in range(4)] + [
        ("reference", i) for i in range(5)]
    for row in rows:
        others = (calibration.without_surrogate(row["index"]) if row["kind"] == "surrogate"
                  else calibration.without_reference(row["index"]))
        matches = (surrogates if row["kind"] == "surrogate" else references)[row["index"]]
        assert row["p_value"] == pytest.approx(others.p_value(matches)) and row["threshold"] == others.threshold()
        assert row["verdict"] == others.judge(matches)
    # Surrogates far above the references are flagged; no reference is accused by the others.
    assert all(r["verdict"] == "surrogate" for r in rows if r["kind"] == "surrogate")
    assert not any(r["verdict"] == "surrogate" for r in rows if r["kind"] == "reference")
    assert [r["verdict"] for r in calibration.self_check("lr")][:4] == ["surrogate"] * 4
    with pytest.raises(F.FingerprintError, match="at least two calibration surrogates and two references"):
        F.Calibration(surrogates[:1], references).self_check()
