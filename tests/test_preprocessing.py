"""Input transformations in front of a suspect (cae.preprocessing, `cae preprocess`):
each layer against an independent NumPy / SciPy computation, the wrapped model's file,
bad strengths, and the evaluation rows."""

import numpy as np
import pytest
from scipy import ndimage

from cae import cli, evaluation, models, preprocessing, reports


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)


def _apply(kind, strength, x):
    return np.asarray(preprocessing.transform(kind, strength)(x))


@pytest.mark.parametrize("bits", [1, 3, 5])
def test_quantize_rounds_to_the_levels(images, bits):
    out = _apply("quantize", bits, images)
    levels = 2**bits - 1
    np.testing.assert_allclose(out, np.round(images * levels) / levels, atol=1e-6)
    assert len(np.unique(out)) <= levels + 1


@pytest.mark.parametrize("sigma", [0.5, 1.0, 1.5])
def test_blur_is_a_gaussian_with_mirrored_borders(images, sigma):
    taps = preprocessing.gaussian_kernel(sigma)
    assert np.isclose(taps.sum(), 1.0) and len(taps) == 2 * max(1, int(np.ceil(2 * sigma))) + 1
    expected = ndimage.correlate(images, np.outer(taps, taps)[None, :, :, None], mode="mirror")
    np.testing.assert_allclose(_apply("blur", sigma, images), expected, atol=1e-5)
    flat = np.full_like(images, 0.3)  # a constant image stays constant (no dark border)
    np.testing.assert_allclose(_apply("blur", sigma, flat), flat, atol=1e-6)


@pytest.mark.parametrize("size", [3, 5])
def test_median_filter_matches_scipy(images, size):
    expected = ndimage.median_filter(images, size=(1, size, size, 1), mode="mirror")
    np.testing.assert_array_equal(_apply("median", size, images), expected)


def test_noise_is_fresh_per_query_of_the_given_size_and_stays_in_range(images):
    layer = preprocessing.transform("noise", 0.05)
    mid = np.full((8, 32, 32, 3), 0.5, np.float32)  # far from the clipping bounds
    first, second = np.asarray(layer(mid)), np.asarray(layer(mid))
    assert not np.allclose(first, second)
    assert abs(float((first - mid).std()) - 0.05) < 0.005 and abs(float((first - mid).mean())) < 0.005
    out = np.asarray(layer(images))
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_flip_mirrors_every_query_or_a_random_share(images):
    np.testing.assert_array_equal(_apply("flip", 1, images), images[:, :, ::-1, :])
    many = np.random.default_rng(1).random((64, 32, 32, 3)).astype(np.float32)
    out = _apply("flip", 0.5, many)
    mirrored = np.array([np.array_equal(o, m[:, ::-1]) for o, m in zip(out, many)])
    kept = np.array([np.array_equal(o, m) for o, m in zip(out, many)])
    assert np.all(mirrored ^ kept) and 16 <= mirrored.sum() <= 48


@pytest.mark.parametrize("kind, strength, fragment", [
    ("jpeg", 50, "unknown input transformation 'jpeg'"),
    ("quantize", 0, "bits must be an integer from 1 to 8"),
    ("quantize", 2.5, "bits must be an integer from 1 to 8"),
    ("median", 4, "odd integer from 3 to 9"),
    ("blur", -1, "sigma must be a number in"),
    ("noise", 2, "stddev must be a number in"),
    ("noise", "loud", "strength must be a number"),
    ("flip", 0, "p must be a probability"),
    ("flip", 1.5, "p must be a probability"),
])
def test_bad_transformations_are_refused(kind, strength, fragment):
    with pytest.raises(ValueError, match=fragment):
        preprocessing.transform(kind, strength)


def test_transformations_parse_and_describe_round_trip():
    parsed = preprocessing.parse("flip:1, blur:0.5,quantize:4")
    assert parsed == (("flip", 1.0), ("blur", 0.5), ("quantize", 4.0))
    assert preprocessing.describe(parsed) == "flip 1, blur 0.5, quantize 4"
    assert preprocessing.parse("none") == () and preprocessing.describe(()) == "none"


@pytest.mark.parametrize("spec, fragment", [
    ("flip", r"'flip' is not a transformation \(flip: strength must be a number"),
    ("jpeg:50", "unknown input transformation 'jpeg'"),
    ("flip:1,median:4", "'median:4' is not a transformation"),
    ("", "is not a transformation"),
])
def test_bad_transformation_lists_are_refused_with_the_option_named(spec, fragment):
    with pytest.raises(ValueError, match=fragment) as caught:
        preprocessing.parse(spec, "--mistakes-stable")
    assert str(caught.value).startswith("--mistakes-stable") and "KIND:STRENGTH" in str(caught.value)


@pytest.mark.parametrize("kind, strength", [("quantize", 3), ("blur", 1.0), ("median", 3), ("noise", 0.05),
                                            ("flip", 1.0), ("flip", 0.5)])
def test_wrapped_model_shares_weights_saves_and_loads_safely(images, tmp_path, kind, strength):
    model = models.build("cnn", 10, seed=1)
    before = [w.copy() for w in model.get_weights()]
    wrapped = preprocessing.wrap(model, kind, strength)
    assert wrapped.count_params() == model.count_params()
    deterministic = kind not in ("noise", "flip") or strength == 1.0
    squeezed = _apply(kind, strength, images) if deterministic else None
    if squeezed is not None:  # the model sees the transformed images
        np.testing.assert_allclose(wrapped.predict(images, verbose=0), model.predict(squeezed, verbose=0),
                                   atol=1e-5)
    path = tmp_path / "wrapped.keras"
    wrapped.save(path)
    loaded = models.load(path)  # safe_mode=True
    if squeezed is not None:
        np.testing.assert_allclose(loaded.predict(images, verbose=0), wrapped.predict(images, verbose=0),
                                   atol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_cli_writes_a_suspect_that_cae_verify_can_load(tmp_path, capsys):
    model = models.build("cnn", 10, seed=2)
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m-median.keras"
    assert cli.main(["preprocess", "median", "--strength", "3", "--model", str(tmp_path / "m.keras"),
                     "--out", str(out)]) == 0
    assert "behind median" in capsys.readouterr().out
    loaded = cli._load_suspect(out, num_classes=10)
    assert [type(layer).__name__ for layer in loaded.layers][:2] == ["InputLayer", "MedianFilter"]
    for argv, fragment in ((["median", "--strength", "4"], "odd integer"),
                           (["gif", "--strength", "4"], "unknown input transformation"),
                           (["blur", "--strength", "1", "--out", str(tmp_path / "x.h5")], "must end in .keras")):
        argv = argv + (["--out", str(tmp_path / "x.keras")] if "--out" not in argv else [])
        assert cli.main(["preprocess", *argv, "--model", str(tmp_path / "m.keras")]) == cli.USAGE_ERROR
        assert fragment in capsys.readouterr().err


class _Context:
    """What preprocessing_rows reads from an experiment context, built by hand."""

    def __init__(self, source, references, dataset, spec, preset):
        self.models = {"source": source, "test_references": references}
        self.dataset, self.specs, self.preset = dataset, {"source": spec}, preset


def test_rows_measure_the_transformed_source_and_references(tmp_path):
    from cae import fingerprint, zoo
    from tests.test_removal import CLASSES, PRESET, SOURCE, synthetic

    dataset = synthetic()
    store = zoo.Zoo(tmp_path, evaluate_on=16, datasets={"synthetic": dataset})
    source = store.get(SOURCE, verbose=False)
    reference = models.build("cnn", CLASSES, seed=9)
    x = np.random.default_rng(3).random((20, 32, 32, 3)).astype(np.float32)
    fp = fingerprint.create(source, x, attack="test", epsilon=0.1, tau=1.0, dataset="synthetic")
    context = _Context(source, [reference], dataset, SOURCE, PRESET)
    rows = reports.preprocessing_rows(context, fp, {"quantize": (8, 1)}, threshold=0.5)
    assert [(r["transformation"], r["strength"]) for r in rows] == [("none", "–"), ("quantize", 8), ("quantize", 1)]
    assert rows[0]["retention"] == 1.0 and rows[0]["Δ accuracy"] == 0.0 and rows[0]["fidelity"] == 1.0
    ref_plain = fingerprint.verify(reference, fp).retention
    assert rows[0]["references' retention (max)"] == ref_plain
    assert rows[0]["references flagged"] == f"{int(ref_plain >= 0.5)}/1"
    assert rows[0]["references' retentions"] == [ref_plain]
    one_bit = fingerprint.verify(preprocessing.wrap(source, "quantize", 1), fp).retention
    assert rows[2]["retention"] == one_bit and rows[2]["verified"].startswith("yes" if one_bit >= 0.5 else "NO")
    accuracy = evaluation.test_accuracy(preprocessing.wrap(source, "quantize", 1), dataset, PRESET.evaluate_on)
    assert np.isclose(rows[2]["Δ accuracy"], accuracy - rows[0]["test_accuracy"])


def test_separation_rows_put_every_suspect_behind_the_transformation(tmp_path):
    from cae import fingerprint, stats

    source = models.build("cnn", 3, seed=4)
    others = [models.build("cnn", 3, seed=s) for s in (5, 6)]
    x = np.random.default_rng(5).random((30, 32, 32, 3)).astype(np.float32)
    fp = fingerprint.create(source, x, attack="test", epsilon=0.1, tau=1.0, dataset="synthetic")
    rows = reports.preprocessing_separation(fp, {"itself": source}, others, {"noise": (0.05,), "blur": (1.0,)},
                                               threshold=0.5)
    assert [(r["transformation"], r["strength"]) for r in rows] == [("none", "–"), ("noise", 0.05), ("blur", 1.0)]
    plain = [fingerprint.verify(m, fp).retention for m in others]
    assert rows[0]["derived retention (median)"] == 1.0 and rows[0]["derived flagged"] == "1/1"
    assert rows[0]["AUC"] == stats.roc_auc(np.array([1.0]), np.array(plain))
    assert rows[0]["references flagged"] == f"{sum(r >= 0.5 for r in plain)}/2"
    blurred = [fingerprint.verify(preprocessing.wrap(m, "blur", 1.0), fp).retention for m in (source, *others)]
    assert rows[2]["derived retention (median)"] == blurred[0]
    assert rows[2]["references' retention (max)"] == max(blurred[1:])
    default = reports.preprocessing_separation(fp, [source], others, {"blur": (1.0,)})[1]
    assert "AUC (LR)" not in default  # an uncalibrated fingerprint: retention at the default θ only
    assert default["derived flagged"] == f"{int(blurred[0] >= fingerprint.DEFAULT_THRESHOLD)}/1"
