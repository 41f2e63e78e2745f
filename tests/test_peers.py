"""Peer fingerprinting methods (cae.peers) and the peer benchmark (cae.benchmark and
reproduce/benchmark.py), on tiny hand-made models: no training, no real data.

The task: which colour channel of an image is brightest (3 classes). Every model is
global average pooling then a Dense layer named ``logits`` then softmax, so it is a cae
model as far as the ensemble and the interface checks go. The source's weights are the
identity plus noise (it errs on images whose channels are close), a derived model is the
source with a little more noise, an independent one the identity with other noise.
"""

import dataclasses
import pathlib
import runpy

import numpy as np
import pytest

from cae import benchmark, data, experiments, fingerprint, paper, peers, presets, removal, zoo

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCALE = 30.0


def _model(weights, bias=None):
    import keras

    inputs = keras.Input((32, 32, 3), name="image")
    features = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(3, name="logits")(features)
    model = keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits))
    model.get_layer("logits").set_weights([np.asarray(weights, np.float32),
                                           np.zeros(3, np.float32) if bias is None else np.asarray(bias, np.float32)])
    return model


def _noise(seed, scale):
    return scale * np.random.default_rng(seed).normal(size=(3, 3))


SOURCE_WEIGHTS = SCALE * np.eye(3) + _noise(0, 4.0)


def source_model():
    return _model(SOURCE_WEIGHTS)


def derived_model(seed):
    return _model(SOURCE_WEIGHTS + _noise(100 + seed, 0.3))


def independent_model(seed):
    return _model(SCALE * np.eye(3) + _noise(200 + seed, 4.0))


def colour_images(n, seed):
    """uint8 images whose brightest channel (on average) is the label; channels are
    often close, so the noisy models disagree on some."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(90, 170, size=(n, 3))
    x = np.clip(means[:, None, None, :] + rng.normal(0, 10, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)
    return x, data.to_float(x).mean(axis=(1, 2)).argmax(axis=1).astype(np.int64)


@pytest.fixture(scope="module")
def zoo_models():
    return {"source": source_model(), "derived": [derived_model(i) for i in range(3)],
            "independent": [independent_model(i) for i in range(3)]}


@pytest.fixture(scope="module")
def pool():
    x, y = colour_images(300, 1)
    return data.to_float(x), y


def _extract(method, zoo_models, pool, **params):
    defaults = {"ipguard": dict(n=30, max_iter=300), "cigm": dict(n=30, iterations=10, tau=0.0, eps=0.25)}
    peer = peers.get(method, **{"n": 30, **defaults.get(method, {}), **params})
    x, y = pool
    return peer, peer.extract(zoo_models["source"], x, y, surrogates=zoo_models["derived"][:2],
                              references=zoo_models["independent"][:2], seed=0)


# --------------------------------------------------------------------------- every method
def test_the_source_errs_sometimes(zoo_models, pool):
    x, y = pool
    accuracy = np.mean(zoo_models["source"].predict(x, verbose=0).argmax(axis=1) == y)
    assert 0.6 < accuracy < 0.97  # mistakes for SAC-w and the mistakes baseline, yet a useful model


@pytest.mark.parametrize("method", list(peers.PEERS))
def test_extract_returns_documented_fingerprint(method, zoo_models, pool):
    peer, fp = _extract(method, zoo_models, pool)
    assert fp.method == method and fp.num_classes == 3
    assert fp.x.dtype == np.float32 and fp.x.ndim == 4 and fp.x.shape[1:] == (32, 32, 3)
    assert 1 <= fp.n <= 30 and fp.keys.shape == (fp.n,) and fp.keys.dtype == np.int64
    assert fp.x.min() >= 0.0 and fp.x.max() <= 1.0
    assert not fp.x.flags.writeable and not fp.keys.flags.writeable
    labels = zoo_models["source"].predict(fp.x, verbose=0).argmax(axis=1)
    assert np.array_equal(labels, fp.keys)  # the keys are the source's labels
    if peer.needs_probabilities:
        assert fp.outputs.shape == (fp.n, 3) and fp.correlation.shape == (fp.n, fp.n)
        assert np.all(fp.correlation >= 0) and np.all(fp.correlation <= 1)
        assert np.allclose(np.diag(fp.correlation), 0, atol=1e-6)
    assert fp.settings["seed"] == 0


@pytest.mark.parametrize("method", list(peers.PEERS))
def test_the_source_scores_highest(method, zoo_models, pool):
    peer, fp = _extract(method, zoo_models, pool)
    own = peer.score(zoo_models["source"], fp)
    others = [peer.score(m, fp) for m in zoo_models["derived"] + zoo_models["independent"]]
    if peer.needs_probabilities:
        assert own == pytest.approx(0.0, abs=1e-6)  # no distance to itself
        assert all(-1.0 <= s <= 0.0 for s in others)
    else:
        assert own == 1.0 and all(0.0 <= s <= 1.0 for s in others)
    assert own >= max(others) - 1e-9


@pytest.mark.parametrize("method", ["ipguard", "sac_w", "sac_m", "mistakes"])
def test_derived_models_score_above_independent_ones(method, zoo_models, pool):
    """A derived model here is the source with a little noise: every method should rank
    each derived model at least as high as each independent one on this easy case (an
    independent model close to the source may tie), and the derived ones higher on average."""
    peer, fp = _extract(method, zoo_models, pool)
    derived = [peer.score(m, fp) for m in zoo_models["derived"]]
    independent = [peer.score(m, fp) for m in zoo_models["independent"]]
    assert min(derived) >= max(independent) and np.mean(derived) > np.mean(independent), (derived, independent)


def test_extraction_is_seeded(zoo_models, pool):
    _, a = _extract("sac_m", zoo_models, pool)
    _, b = _extract("sac_m", zoo_models, pool)
    _, c = _extract("sac_m", zoo_models, pool, fraction=0.3)
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x)


# --------------------------------------------------------------------------- IPGuard
def test_ipguard_loss_is_zero_exactly_past_the_boundary():
    logits = np.array([[5.0, 6.5, 1.0], [5.0, 5.5, 1.0], [5.0, 7.0, 6.0], [2.0, 3.0, 9.0]])
    i, j = np.zeros(4, int), np.ones(4, int)
    loss = peers.ipguard_loss(logits, i, j, k=1.0)
    assert loss[0] == 0.0  # j leads i by 1.5 >= k, i is the runner-up
    assert loss[1] == pytest.approx(0.5)  # j leads by only 0.5
    assert loss[2] == pytest.approx(1.0)  # a third class above i
    assert loss[3] == pytest.approx(7.0)  # i behind the third by 7 (and j leads i by 1 already)


def test_ipguard_points_sit_just_past_the_boundary(zoo_models, pool):
    from cae import models

    peer, fp = _extract("ipguard", zoo_models, pool, k=1.0)
    logits = models.logits_model(zoo_models["source"]).predict(fp.x, verbose=0)
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    assert np.all(margin >= 1.0 - 1e-3)  # at least k ...
    assert np.median(margin) < 3.0  # ... and not deep inside the class: the optimisation stops at zero loss
    assert fp.n >= 20  # most of the 30 starting points reached the boundary


def test_ipguard_without_a_logits_layer_uses_log_probabilities(pool):
    import keras

    inputs = keras.Input((32, 32, 3))
    dense = keras.layers.Dense(3, activation="softmax")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([SOURCE_WEIGHTS.astype(np.float32), np.zeros(3, np.float32)])
    fp = peers.IPGuard(n=10, max_iter=300).extract(model, pool[0], seed=3)
    assert fp.n >= 5 and peers.IPGuard().score(model, fp) == 1.0


# --------------------------------------------------------------------------- SAC
def test_correlation_matrix_and_distance():
    outputs = np.array([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]])
    c = peers.correlation_matrix(outputs)
    assert c[0, 1] == pytest.approx(0.5) and c[0, 0] == pytest.approx(0.0)
    assert c[0, 2] == pytest.approx((1 - 1 / np.sqrt(2)) / 2)
    assert np.allclose(c, c.T)
    assert np.allclose(peers.correlation_matrix(3 * outputs), c)  # cosine: the scale does not matter
    assert peers.correlation_distance(c, c) == 0.0
    assert peers.correlation_distance(c, np.zeros_like(c)) == pytest.approx(c.mean())


def test_sac_w_takes_common_mistakes_only(zoo_models, pool):
    x, y = pool
    _, common = _extract("sac_w", zoo_models, pool, n=300)  # with two derived models as surrogates
    no_surrogates = peers.SACW(n=300).extract(zoo_models["source"], x, y)
    for fp in (common, no_surrogates):
        assert np.all(zoo_models["source"].predict(fp.x, verbose=0).argmax(axis=1) != _labels_of(fp.x, x, y))
    for surrogate in zoo_models["derived"][:2]:
        assert np.all(surrogate.predict(common.x, verbose=0).argmax(axis=1) != _labels_of(common.x, x, y))
    assert common.n <= no_surrogates.n


def _labels_of(chosen, x, y):
    index = {img.tobytes(): label for img, label in zip(x, y)}
    return np.array([index[img.tobytes()] for img in chosen])


def test_cutmix_pastes_one_corner_box_from_another_image():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(8, 32, 32, 3)).astype(np.float32)
    mixed = peers.cutmix(x, seed=5)
    changed = np.any(mixed != x, axis=(0, 3))
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert 1 <= len(rows) <= 6 and 1 <= len(cols) <= 6  # a fifth of the side, maybe cut by the border
    for axis in (rows, cols):  # centred outside the middle two thirds: touching a border region
        assert axis.min() < 32 / 6 + 3 or axis.max() > 5 * 32 / 6 - 3
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    for image, original in zip(mixed, x):
        patch = image[box]
        assert not np.array_equal(patch, original[box])  # never its own patch
        assert any(np.array_equal(patch, other[box]) for other in x)  # another image's, same place
    with pytest.raises(ValueError, match="at least 2 images"):
        peers.cutmix(x[:1])


def test_sac_refuses_label_only_suspects(zoo_models, pool):
    peer, fp = _extract("sac_m", zoo_models, pool)
    labels_only = lambda x: zoo_models["source"].predict(x, verbose=0).argmax(axis=1)  # noqa: E731
    with pytest.raises(ValueError, match="class probabilities"):
        peer.score(labels_only, fp)

    class Remote:
        def predict_labels(self, x, num_classes):
            return labels_only(x)

    with pytest.raises(ValueError, match="labels only"):
        peer.score(Remote(), fp)
    # ... which the label-only methods accept.
    ipguard, ip_fp = _extract("ipguard", zoo_models, pool)
    assert ipguard.score(Remote(), ip_fp) == 1.0
    probabilities = lambda x: zoo_models["source"].predict(x, verbose=0)  # noqa: E731
    assert peer.score(probabilities, fp) == pytest.approx(0.0, abs=1e-6)


def test_a_suspect_of_another_label_set_is_scored_through_the_mapping(zoo_models, pool):
    """Transfer learning: the suspect answers in coarser classes (here classes 0 and 1
    of the source become class 0, class 2 becomes 1)."""
    source, mapping = zoo_models["source"], np.array([0, 0, 1])
    merge = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    coarse_labels = lambda x: mapping[source.predict(x, verbose=0).argmax(axis=1)]  # noqa: E731
    coarse_probabilities = lambda x: source.predict(x, verbose=0) @ merge  # noqa: E731
    for method in ("ipguard", "mistakes", "cigm"):
        peer, fp = _extract(method, zoo_models, pool)
        assert peer.score(coarse_labels, fp, mapping=mapping) == 1.0
        with pytest.raises(ValueError, match="mapping="):
            peer.score(coarse_labels, fp, mapping=[0, 1])
    peer, fp = _extract("sac_m", zoo_models, pool)
    assert -1.0 <= peer.score(coarse_probabilities, fp, mapping=mapping) <= 0.0  # any number of classes
    with pytest.raises(ValueError, match="class probabilities"):
        peer.score(coarse_probabilities, fp)  # without a mapping the classes must be the source's


# --------------------------------------------------------------------------- C-IGM and files
def test_cigm_wraps_a_cae_fingerprint(zoo_models, pool):
    x = pool[0][:12]
    fp = fingerprint.create(zoo_models["source"], x, attack="toy", epsilon=0.1, tau=1.0, dataset="colour")
    wrapped = peers.CIGMPeer.wrap(fp)
    assert wrapped.method == "cigm" and wrapped.fingerprint is fp and np.array_equal(wrapped.keys, fp.keys)
    for model in zoo_models["independent"]:
        assert peers.CIGMPeer().score(model, wrapped) == fingerprint.verify(model, fp).retention
    with pytest.raises(ValueError, match="cae.fingerprint.Fingerprint"):
        peers.CIGMPeer.wrap(wrapped)


def test_peer_fingerprints_save_and_load(tmp_path, zoo_models, pool):
    _, fp = _extract("sac_w", zoo_models, pool)
    loaded = peers.PeerFingerprint.load(fp.save(tmp_path / "sac.npz"))
    assert loaded.method == fp.method and loaded.settings == fp.settings and loaded.num_classes == 3
    for name in ("x", "keys", "outputs", "correlation"):
        assert np.array_equal(getattr(loaded, name), getattr(fp, name))


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("method, params, match", [
    ("ipguard", {"n": 0}, "n=0"), ("ipguard", {"k": -1.0}, "k=-1.0"),
    ("ipguard", {"learning_rate": 0.0}, "learning_rate=0.0"), ("ipguard", {"max_iter": 2.5}, "max_iter=2.5"),
    ("sac_w", {"n": 1}, "n=1"), ("sac_m", {"fraction": 2.0}, "fraction=2.0"),
    ("cigm", {"eps": 0.0}, "eps=0.0"), ("cigm", {"transform": 3}, "transform=3"),
    ("cigm", {"smooth": -1.0}, "smooth=-1.0"),
    ("mistakes", {"margin": 1}, "'margin' is not a parameter of mistakes"),
])
def test_bad_parameters_are_refused_with_the_fix(method, params, match):
    with pytest.raises(ValueError, match=match):
        peers.get(method, **params)


def test_bad_inputs_are_refused_with_the_fix(zoo_models, pool):
    x, y = pool
    source = zoo_models["source"]
    with pytest.raises(ValueError, match="unknown peer method 'ipgaurd'; choose one of"):
        peers.get("ipgaurd")
    for method in ("sac_w", "mistakes"):
        with pytest.raises(ValueError, match="give y_pool"):
            peers.get(method).extract(source, x)
    with pytest.raises(ValueError, match=r"y_pool has shape \(3,\)"):
        peers.Mistakes().extract(source, x, y[:3])
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):
        peers.SACM().extract(source, x * 255.0)
    with pytest.raises(ValueError, match="keras.Model"):
        peers.SACM().extract(lambda images: images, x)
    with pytest.raises(ValueError, match="give surrogates"):
        peers.CIGMPeer().extract(source, x, y)
    with pytest.raises(ValueError, match="classifies every pool image correctly"):
        peers.Mistakes().extract(source, x, source.predict(x, verbose=0).argmax(axis=1))
    _, fp = _extract("mistakes", zoo_models, pool)
    with pytest.raises(ValueError, match=r"score it with PEERS\['mistakes'\]"):
        peers.IPGuard().score(source, fp)
    with pytest.raises(ValueError, match="expected the PeerFingerprint"):
        peers.IPGuard().score(source, fp.x)
    uint8 = peers.SACM(n=5).extract(source, (x[:10] * 255).astype(np.uint8))  # uint8 pools are converted
    assert uint8.x.dtype == np.float32 and uint8.x.max() <= 1.0


# --------------------------------------------------------------------------- the benchmark
@pytest.fixture()
def context(tmp_path, monkeypatch):
    """A Context of the hand-made models (no training) with caches and results in tmp_path."""
    monkeypatch.setenv("CAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CAE_RESULTS_DIR", str(tmp_path / "results"))
    x_train, y_train = colour_images(96, 2)
    x_test, y_test = colour_images(160, 3)
    dataset = data.Dataset("colour", x_train, y_train, x_test, y_test, ("r", "g", "b"), "0" * 64)
    preset = dataclasses.replace(
        presets.get("quick"), name="toy-peers", dataset="colour", defender_size=48, adversary_size=48,
        train_surrogates=("cnn",), train_references=("cnn",), valid_surrogates=(), valid_references=(),
        test_surrogates=("cnn",), test_references=("cnn", "cnn"), attack_inputs=20, attack_iterations=10,
        evaluate_on=60, training_subset=0, extra_references=0, transform="none", tau=0.0, mistakes=0,
    )
    specs = experiments.model_specs(preset)
    models = {"source": source_model(), "train_surrogates": [derived_model(0)],
              "train_references": [independent_model(0)], "valid_surrogates": [], "valid_references": [],
              "test_surrogates": [derived_model(1)], "test_references": [independent_model(1), independent_model(2)]}
    store = zoo.Zoo(tmp_path / "zoo", datasets={"colour": dataset})
    inputs = np.sort(zoo.split_of(dataset, specs["source"]))[:20]
    return experiments.Context(preset, dataset, models, specs, store, inputs)


def _fake_removal(context, attacks, verbose=False):
    made = {"ftal": derived_model(5), "retraining": derived_model(6), "adv_fgm": derived_model(7)}
    if attacks[0] not in made:
        raise ValueError(f"{attacks[0]} needs data this test does not have")
    return {attacks[0]: made[attacks[0]]}


def test_benchmark_table_on_hand_made_models(context, monkeypatch):
    monkeypatch.setattr(benchmark.evaluation, "removal_models", _fake_removal)
    methods = list(peers.PEERS)
    result = benchmark.run(context, methods=methods, attacks=("ftal", "retraining", "adv_fgm", "jagielski"),
                           extra_references=0)
    rows = {row["family"]: row for row in result["rows"]}
    # Rows: the testing surrogates, every family of the zoo, the later benchmark's other rows, all derived.
    expected = (["testing surrogates", *removal.FAMILIES]
                + [r for r in paper.BENCHMARK_CIGM_AUC if r not in ("fine-tuning", "probability extraction")])
    assert list(rows) == [f for f in dict.fromkeys(expected)] + ["all derived"]
    assert result["skipped"].keys() == {"jagielski"} and "needs data" in result["skipped"]["jagielski"]
    titles = [peers.PEERS[m].title for m in methods]
    for family, row in rows.items():
        present = family in ("testing surrogates", "fine-tuning", "model extraction", "adversarial training",
                             "all derived")
        assert row["derived models"] == {"all derived": 4}.get(family, int(present))
        assert row["independent models"] == 2
        for title in titles:
            for column in (f"{title} AUC", f"{title} TPR@1%FPR"):
                if present:
                    assert 0.0 <= row[column] <= 1.0, (family, column, row[column])
                else:
                    assert row[column] is None  # families absent from the zoo stay empty
    # The quoted numbers sit beside ours, each on its own row, never in our columns.
    assert rows["fine-tuning"]["C-IGM AUC quoted (not ours)"] == 1.00
    assert rows["model extraction"]["quoted row"] == "probability extraction"
    assert rows["model extraction"]["C-IGM AUC quoted (not ours)"] == 0.90
    assert rows["pruning"]["C-IGM AUC quoted (not ours)"] == 0.95 and rows["pruning"]["C-IGM (this paper) AUC"] is None
    assert rows["adversarial training"]["C-IGM AUC quoted (not ours)"] is None
    assert rows["all derived"]["quoted row"] is None
    # Every model is scored by every method.
    assert len(result["models"]) == 6 and all(all(t in m for t in titles) for m in result["models"])

    figure = benchmark.write(result, context.preset.name)
    folder = figure.parent
    assert figure.name == "benchmark.png" and figure.stat().st_size > 0
    text = (folder / "benchmark.md").read_text()
    assert "quoted" in text and "not measured here" in text and "jagielski" in text
    header = (folder / "benchmark.csv").read_text().splitlines()[0].split(",")
    assert header == benchmark.columns(methods)
    assert (folder / "benchmark_models.csv").exists()


def test_a_family_of_several_quoted_rows_is_split_beneath_its_row():
    assert benchmark.quoted_row("extract_label", "model extraction") == "label-only extraction"
    assert benchmark.quoted_row("retraining", "model extraction") == "probability extraction"
    assert benchmark.quoted_row("ftal", "fine-tuning") == "fine-tuning"
    assert benchmark.quoted_row("adv_fgm", "adversarial training") is None
    derived = [{"name": "a", "family": "model extraction", "quoted": "probability extraction"},
               {"name": "b", "family": "model extraction", "quoted": "label-only extraction"},
               {"name": "c", "family": "fine-tuning", "quoted": "fine-tuning"}]
    rows = {name: (quoted, names) for name, quoted, names in benchmark.groups(derived)}
    assert rows["model extraction"] == (None, ["a", "b"])  # mixed: no quoted number of its own
    assert rows["model extraction: probability extraction"] == ("probability extraction", ["a"])
    assert rows["model extraction: label-only extraction"] == ("label-only extraction", ["b"])
    assert rows["fine-tuning"] == ("fine-tuning", ["c"]) and rows["all derived"] == (None, ["a", "b", "c"])
    assert rows["adversarial extraction"] == ("adversarial extraction", [])  # in the quoted benchmark, not here
    assert "label-only extraction" not in rows and "probability extraction" not in rows
    assert list(rows)[-1] == "all derived"


def test_benchmark_reuses_cached_peer_fingerprints(context):
    first = benchmark.peer_fingerprint(context, "ipguard", settings={"n": 5, "max_iter": 50})
    cached = list(context.folder().glob("peer-ipguard-*.npz"))
    assert len(cached) == 1
    second = benchmark.peer_fingerprint(context, "ipguard", settings={"n": 5, "max_iter": 50})
    assert np.array_equal(first.x, second.x) and np.array_equal(first.keys, second.keys)
    benchmark.peer_fingerprint(context, "ipguard", settings={"n": 5, "max_iter": 60})
    assert len(list(context.folder().glob("peer-ipguard-*.npz"))) == 2  # other settings, another file


def test_benchmark_script_options(context, monkeypatch, capsys):
    script = runpy.run_path(str(ROOT / "reproduce" / "benchmark.py"))  # not __main__: functions only
    monkeypatch.setattr(benchmark.evaluation, "removal_models", _fake_removal)
    monkeypatch.setattr(experiments, "prepare", lambda preset, verbose=True: context)
    result = script["main"](["--preset", "smoke", "-q", "--methods", "mistakes,sac_m", "--removal", "ftal"])
    assert result["methods"] == ["mistakes", "sac_m"]
    assert [r["derived models"] for r in result["rows"] if r["family"] == "fine-tuning"] == [1]
    assert "wrote" in capsys.readouterr().out
    for argv, match in ((["--methods", "ipguard,foo"], "--methods 'ipguard,foo'"),
                        (["--removal", "ftal,bar"], "--removal 'ftal,bar'")):
        with pytest.raises(SystemExit):
            script["main"](["--preset", "smoke", *argv])
        assert match in capsys.readouterr().err
    with pytest.raises(ValueError, match="choose one or more of"):
        benchmark.run(context, methods=["nope"])
    with pytest.raises(ValueError, match="unknown removal attack"):
        benchmark.suspects(context, attacks=("nope",))
