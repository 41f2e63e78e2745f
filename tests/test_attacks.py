"""C-IGM (both backends), the baselines through ART, and Table I."""

import dataclasses

import keras
import numpy as np
import pytest

from cae import attacks as A
from cae import ensemble as E
from cae import models
from helpers import tiny_batchnorm_model

K = 10
N = 6


@pytest.fixture(scope="module")
def members():
    return [tiny_batchnorm_model(seed) for seed in range(5)]


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((N, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def ensemble_off(members):
    return E.compose(members[0], members[1:3], members[3:], dropout=0.0)


@pytest.fixture(scope="module")
def ensemble_on(members):
    return E.compose(members[0], members[1:3], members[3:], dropout=0.5, seed=1)


def predict_numpy(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


# --------------------------------------------------------------------------- Table I
def test_table_one():
    assert A.EPSILONS == (0.01, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3)
    rows = {row["Method"]: row for row in A.rows()}
    assert list(rows) == ["IGM", "DeepFool", "PGD", "CW-L2"]
    expected = {
        "IGM": (100, 0.01, None, None, None, "inf"),
        "DeepFool": (100, None, 10, None, None, "inf"),
        "PGD": (100, 0.01, None, None, None, "2"),
        "CW-L2": (100, None, None, 50.0, 0.01, "2"),
    }
    for method, values in expected.items():
        row = rows[method]
        assert (row["Iter"], row["α"], row["Grads"], row["κ"], row["lr"], row["q"]) == values
    assert all(isinstance(row, dict) for row in A.rows())
    with pytest.raises(dataclasses.FrozenInstanceError):
        A.ATTACKS["igm"].max_iter = 5
    assert A.ATTACKS["cw"].art_kwargs()["confidence"] == 50.0


# --------------------------------------------------------------------------- C-IGM
def target_scores(ensemble, x, targets):
    return predict_numpy(E.with_dropout(ensemble, 0.0), x)[np.arange(len(x)), targets]


@pytest.mark.parametrize("eps", [0.03, 0.1])
def test_cigm_raises_target_score_within_budget(ensemble_on, x, eps):
    attack = A.CIGM(ensemble_on, eps, eps_step=0.01, max_iter=15, batch_size=4)
    x_adv = attack.generate(x)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    t = attack.targets_
    assert np.all(t != attack.labels_)
    before, after = target_scores(ensemble_on, x, t), target_scores(ensemble_on, x_adv, t)
    assert after.mean() > before.mean()
    assert np.mean(after > before) >= 0.5
    # The attack uses its budget: IGM signs move every pixel by a full step first.
    assert np.abs(x_adv - x).max() > eps / 2


def test_cigm_backends_agree_without_dropout(ensemble_off, x):
    kwargs = dict(eps=0.05, eps_step=0.01, max_iter=8, batch_size=4)
    compiled = A.CIGM(ensemble_off, backend="compiled", **kwargs).generate(x)
    art = A.CIGM(ensemble_off, backend="art", **kwargs).generate(x)
    np.testing.assert_allclose(compiled, art, atol=1e-5)
    # ...and the common result is not the trivial one.
    assert np.abs(compiled - x).max() > 0.04


def test_cigm_backends_agree_with_dropout_same_seed(ensemble_on, x):
    # Both draw the same dropout masks in the same order (same batches, same seeds).
    kwargs = dict(eps=0.05, eps_step=0.01, max_iter=5, batch_size=3, seed=4)
    compiled = A.CIGM(ensemble_on, backend="compiled", **kwargs).generate(x)
    art = A.CIGM(ensemble_on, backend="art", **kwargs).generate(x)
    np.testing.assert_allclose(compiled, art, atol=1e-5)


def test_cigm_seed_controls_dropout(ensemble_on, x):
    attack = A.CIGM(ensemble_on, 0.05, max_iter=6, seed=3)
    first, second = attack.generate(x), attack.generate(x)
    np.testing.assert_array_equal(first, second)
    other = A.CIGM(ensemble_on, 0.05, max_iter=6, seed=4).generate(x)
    assert np.abs(first - other).max() > 0


def test_cigm_does_not_modify_inputs(ensemble_off, x):
    copy = x.copy()
    A.CIGM(ensemble_off, 0.05, max_iter=2).generate(x)
    np.testing.assert_array_equal(x, copy)


def test_target_rules(ensemble_off, members, x):
    mean_field = predict_numpy(ensemble_off, x)
    source = predict_numpy(members[0], x)
    labels = np.argmax(source, axis=1)

    attack = A.CIGM(ensemble_off, 0.05, max_iter=1)
    attack.generate(x)
    np.testing.assert_array_equal(attack.labels_, labels)
    masked = mean_field.copy()
    masked[np.arange(N), labels] = -np.inf
    np.testing.assert_array_equal(attack.targets_, np.argmax(masked, axis=1))

    attack = A.CIGM(ensemble_off, 0.05, max_iter=1, target="second_source")
    attack.generate(x)
    np.testing.assert_array_equal(attack.targets_, np.argsort(-source, axis=1)[:, 1])

    given = (labels + 3) % K  # a y passed in is used as the source label
    attack.generate(x, y=keras.utils.to_categorical(given, K))
    np.testing.assert_array_equal(attack.labels_, given)
    assert np.all(attack.targets_ != given)

    random_targets = []
    for _ in range(2):
        attack = A.CIGM(ensemble_off, 0.05, max_iter=1, target="random", seed=5)
        attack.generate(x)
        random_targets.append(attack.targets_)
    np.testing.assert_array_equal(*random_targets)
    assert np.all(random_targets[0] != labels)


@pytest.mark.parametrize(
    "name, value",
    [
        ("eps", 0), ("eps", -0.1), ("eps", 2.0), ("eps", "0.1"), ("eps_step", 0.0),
        ("max_iter", 0), ("max_iter", 1.5), ("target", "least_likely"), ("backend", "jax"),
        ("batch_size", 0), ("seed", -1), ("verbose", "yes"),
    ],
)
def test_cigm_bad_parameters(ensemble_off, name, value):
    kwargs = {"eps": 0.1, name: value}
    with pytest.raises(ValueError, match=rf"{name}={value!r}"):
        A.CIGM(ensemble_off, **kwargs)
    attack = A.CIGM(ensemble_off, 0.1)
    with pytest.raises(ValueError, match=name):
        attack.set_params(**{name: value})


def test_every_registered_attack_is_an_attack(ensemble_off):
    """C-IGM and the baselines share one base: name, norm and ε rule of the registry come
    from the class, and a refused set_params leaves any of them as it was."""
    for entry in A.REGISTRY.values():
        assert issubclass(entry.attack, A.Attack)
        assert (entry.name, entry.norm, entry.eps_rule) == (entry.attack.method, entry.attack.norm,
                                                            entry.attack.constraint)
    attack = A.CIGM(ensemble_off, 0.1)
    with pytest.raises(ValueError, match="max_iter=0"):
        attack.set_params(eps=0.2, max_iter=0)
    assert (attack.eps, attack.max_iter) == (0.1, A.ATTACKS["igm"].max_iter)
    with pytest.raises(ValueError, match="nb_grads is not a parameter of C-IGM"):
        attack.set_params(nb_grads=3)


def test_cigm_rejects_bad_inputs(ensemble_off, members, x):
    with pytest.raises(ValueError, match="ensemble"):
        A.CIGM("not a model", 0.1)
    with pytest.raises(ValueError, match="not an ensemble"):
        A.CIGM(members[0], 0.1)
    attack = A.CIGM(ensemble_off, 0.1, max_iter=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack.generate(x * 255)
    with pytest.raises(ValueError, match="y has shape"):
        attack.generate(x, y=np.zeros(N + 1, dtype=int))


# --------------------------------------------------------------------------- baselines
@pytest.fixture(scope="module")
def source(members):
    return members[0]


def label_changed(model, x, x_adv, y=None):
    y = np.argmax(predict_numpy(model, x), axis=1) if y is None else y
    return np.argmax(predict_numpy(model, x_adv), axis=1) != y


@pytest.mark.parametrize("name, eps, norm", [("igm", 0.1, "inf"), ("pgd", 5.0, "2")])
def test_gradient_baselines_stay_in_budget(source, x, name, eps, norm):
    x_adv, success = A.baseline(name, source, x, eps, max_iter=10, eps_step=0.05 if name == "igm" else 1.0)
    assert x_adv.shape == x.shape and success.dtype == bool
    assert np.all(A.perturbation_norm(x, x_adv, norm) <= eps * (1 + 1e-5) + 1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    np.testing.assert_array_equal(success, label_changed(source, x, x_adv))
    assert success.mean() >= 0.5  # a large budget flips most labels of a tiny model


def test_igm_compiled_gradient_matches_art_gradient(source, x):
    a, _ = A.baseline("igm", source, x, 0.05, max_iter=5, compiled_gradient=True)
    b, _ = A.baseline("igm", source, x, 0.05, max_iter=5, compiled_gradient=False)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_deepfool_filter_and_project(source, x):
    eps, x = 0.02, x[:4]
    x_adv, success = A.baseline("deepfool", source, x, eps, max_iter=20)
    np.testing.assert_array_equal(
        success,
        label_changed(source, x, x_adv) & (A.perturbation_norm(x, x_adv, "inf") <= eps * (1 + 1e-5) + 1e-7),
    )
    assert label_changed(source, x, x_adv).mean() >= 0.5  # DeepFool itself succeeds
    projected, success_p = A.baseline("deepfool", source, x, eps, max_iter=20, constraint="project")
    assert np.all(A.perturbation_norm(x, projected, "inf") <= eps + 1e-6)
    np.testing.assert_array_equal(success_p, label_changed(source, x, projected))


@pytest.mark.parametrize("constraint", ["filter", "none"])
def test_cw_filter_and_unbounded(source, x, constraint):
    eps = 2.5
    x_adv, success = A.baseline("cw", source, x, eps, max_iter=10, binary_search_steps=2, confidence=0.0,
                                learning_rate=0.5, initial_const=100.0, constraint=constraint)
    changed = label_changed(source, x, x_adv)
    assert changed.mean() >= 0.5  # CW itself succeeds on a tiny model
    within = A.perturbation_norm(x, x_adv, "2") <= eps * (1 + 1e-5) + 1e-7
    expected = changed & within if constraint == "filter" else changed
    np.testing.assert_array_equal(success, expected)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_cw_default_rule_ignores_epsilon():
    """Table I's CW-L2 is not filtered by ε (the paper's Figure 4 shows ε-independent CW scores)."""
    assert A.ATTACKS["cw"].constraint == "none"


def test_baseline_uses_given_labels(source, x):
    y = (np.argmax(predict_numpy(source, x), axis=1) + 1) % K
    x_adv, success = A.baseline("igm", source, x, 0.01, y=y, max_iter=1)
    np.testing.assert_array_equal(success, label_changed(source, x, x_adv, y=y))


def test_baseline_bad_arguments(source, x):
    with pytest.raises(ValueError, match="name='fgsm'"):
        A.baseline("fgsm", source, x, 0.1)
    with pytest.raises(ValueError, match="nb_grads is not a parameter of IGM"):
        A.baseline("igm", source, x, 0.1, nb_grads=3)
    with pytest.raises(ValueError, match="constraint='clip'"):
        A.baseline("igm", source, x, 0.1, constraint="clip")
    with pytest.raises(ValueError, match="eps=0"):
        A.baseline("igm", source, x, 0)


def test_empty_inputs(ensemble_off, source):
    empty = np.zeros((0, 32, 32, 3), np.float32)
    attack = A.CIGM(ensemble_off, 0.1, max_iter=2)
    assert attack.generate(empty).shape == empty.shape and attack.targets_.shape == (0,)
    x_adv, success = A.baseline("igm", source, empty, 0.1)
    assert x_adv.shape == empty.shape and success.shape == (0,)


# --------------------------------------------------------------------------- one interface, one registry
SOURCE_ATTACKS = [method for method, entry in A.REGISTRY.items() if entry.on == "source"]


def test_the_registry_holds_every_attack_once_with_table_one_settings():
    assert list(A.REGISTRY) == ["cigm", "igm", "pgd", "deepfool", "cw"]
    assert set(SOURCE_ATTACKS) == set(A.ATTACKS)  # every baseline of Table I, nothing else on the source
    for method in SOURCE_ATTACKS:
        entry, params = A.REGISTRY[method], A.ATTACKS[method]
        assert entry.attack.params is params
        assert (entry.name, entry.norm, entry.eps_rule) == (params.method, params.norm, params.constraint)
    cigm = A.REGISTRY["cigm"]
    assert (cigm.attack, cigm.name, cigm.norm, cigm.eps_rule, cigm.on) == (A.CIGM, "C-IGM", "inf", "project",
                                                                           "ensemble")
    assert cigm.paper_scores("cinic10") == (0.492, 0.469)
    assert A.REGISTRY["igm"].paper_scores("mnist") == (None, None)  # no number: blank, not a KeyError
    with pytest.raises(ValueError, match="unknown method 'fgsm'"):
        A.registered("fgsm")
    with pytest.raises(ValueError, match="eps_rule='clip'"):
        A.Registered(A.IGM, "IGM", "inf", "clip", "source")


@pytest.mark.parametrize("method", SOURCE_ATTACKS)
def test_baselines_are_art_style_attacks(source, x, method):
    """Each baseline is a class: checked ``attack_params`` (Table I's ART settings among
    them), ``generate(x, y=None)``, and the ART class Table I names."""
    cls = A.REGISTRY[method].attack
    assert set(A.ATTACKS[method].art_kwargs()) <= set(cls.attack_params)
    assert {"eps", "constraint", "batch_size", "seed", "verbose"} <= set(cls.attack_params)
    attack = cls(source, 0.05, max_iter=1, **({"binary_search_steps": 1} if method == "cw" else {}))
    assert attack.max_iter == 1 and attack.constraint == A.ATTACKS[method].constraint
    x_adv = attack.generate(x[:2])
    assert x_adv.shape == (2, 32, 32, 3) and x_adv.dtype == np.float32
    assert attack.success_.shape == (2,) and attack.success_.dtype == bool and attack.labels_.shape == (2,)
    classifier = A._tensorflow_classifier(models.logits_model(source), keras.losses.CategoricalCrossentropy())
    assert type(attack._art_attack(classifier, K, {"batch_size": 2, "verbose": False})).__name__ \
        == A.ATTACKS[method].art_class
    for name, value in (("batch_size", 0), ("seed", -1), ("constraint", "clip"), ("eps", 0.0), ("verbose", 1)):
        with pytest.raises(ValueError, match=rf"{name}={value!r}"):
            attack.set_params(**{name: value})
    with pytest.raises(ValueError, match=f"learning_rat is not a parameter of {A.ATTACKS[method].method}"):
        attack.set_params(learning_rat=0.1)


# --------------------------------------------------------------------------- C-IGM's transform (beyond the paper)
def _translations(image, shift):
    padded = np.pad(image, ((shift, shift), (shift, shift), (0, 0)), mode="reflect")
    for dy in range(2 * shift + 1):
        for dx in range(2 * shift + 1):
            crop = padded[dy:dy + 32, dx:dx + 32]
            yield crop
            yield crop[:, ::-1]


def test_random_shift_flip_moves_each_image_by_its_own_offset(x):
    layer = E.RandomShiftFlip(2, flip=True, seed=3)
    first, second = np.asarray(layer(x)), np.asarray(layer(x))
    for out in (first, second):
        for image, moved in zip(x, out):
            assert any(np.allclose(moved, candidate) for candidate in _translations(image, 2))
    assert not np.allclose(first, second)  # fresh draws at every call
    assert np.allclose(np.asarray(E.RandomShiftFlip(0, flip=False)(x)), x)  # nothing to draw: the identity
    layer.reseed(3)
    assert np.allclose(np.asarray(layer(x)), first)


def test_random_resize_zooms_and_moves_each_image_by_its_own_draw():
    # A horizontal ramp (value = column) shows each image's mapping: after a zoom by s and
    # a move by dx the ramp stays linear with slope 1/s in [1/(1+2/32), 1/(1-2/32)].
    ramp = np.tile(np.arange(32, dtype="float32")[None, None, :, None], (6, 32, 1, 3)) / 31.0
    layer = E.RandomResize(2, flip=False, seed=3)
    first = np.asarray(layer(ramp)) * 31.0
    centre = first[:, 16, 8:24, 0]  # away from the reflected border
    slopes = np.diff(centre, axis=1).mean(axis=1)
    assert np.allclose(np.diff(centre, axis=1), slopes[:, None], atol=1e-3)
    assert np.all((slopes >= 1 / (1 + 2 / 32) - 1e-4) & (slopes <= 1 / (1 - 2 / 32) + 1e-4))
    assert np.ptp(slopes) > 1e-3 and np.ptp(centre[:, 0]) > 0.1  # each image its own zoom and move
    assert np.allclose(first[:, :, :, 0], first[:, :, :, 1])  # channels resampled alike
    assert not np.allclose(np.asarray(layer(ramp)) * 31.0, first)  # fresh draws at every call
    layer.reseed(3)
    assert np.allclose(np.asarray(layer(ramp)) * 31.0, first)
    assert np.allclose(np.asarray(E.RandomResize(0, flip=False)(ramp)), ramp)  # the identity
    mirrored = np.asarray(E.RandomResize(0, flip=True, seed=1)(ramp))
    assert all(np.allclose(m, r) or np.allclose(m, r[:, ::-1]) for m, r in zip(mirrored, ramp))
    with pytest.raises(ValueError, match="pixels="):
        E.RandomResize(9)


@pytest.mark.parametrize("transform", ["shift+flip", "shift:1", "shift+flip:2x2", "scale+flip", "scale:3"])
def test_cigm_with_a_transform_stays_in_budget_is_seeded_and_differs(ensemble_on, x, transform):
    plain = A.CIGM(ensemble_on, 0.05, max_iter=5, seed=1).generate(x)
    attack = A.CIGM(ensemble_on, 0.05, max_iter=5, seed=1, transform=transform)
    first, again = attack.generate(x), attack.generate(x)
    assert np.abs(first - x).max() <= 0.05 + 1e-6 and first.min() >= 0 and first.max() <= 1
    assert np.array_equal(first, again)
    assert not np.array_equal(first, plain)


def test_gradient_kernel_is_a_normalised_symmetric_gaussian_per_channel():
    kernel = A.gradient_kernel(1.0)
    assert kernel.shape == (5, 5, 3, 1) and kernel.dtype == np.float32
    for channel in range(3):
        plane = kernel[:, :, channel, 0]
        assert plane.sum() == pytest.approx(1.0, abs=1e-6)
        assert np.allclose(plane, plane.T) and np.allclose(plane, plane[::-1, ::-1])
        assert plane[2, 2] == plane.max() and plane[2, 3] / plane[2, 2] == pytest.approx(np.exp(-0.5), rel=1e-5)
    assert A.gradient_kernel(2.5).shape[:2] == (11, 11)


@pytest.mark.parametrize("smooth", [-1.0, 4.5, "2"])
def test_cigm_refuses_a_bad_gradient_blur(ensemble_off, smooth):
    with pytest.raises(ValueError, match="smooth"):
        A.CIGM(ensemble_off, 0.05, smooth=smooth)


def test_cigm_gradient_blur_needs_the_compiled_backend(ensemble_off):
    with pytest.raises(ValueError, match="needs backend='compiled'"):
        A.CIGM(ensemble_off, 0.05, smooth=1.0, backend="art")


def test_cigm_with_a_gradient_blur_makes_smoother_perturbations_in_budget(ensemble_off, x):
    def roughness(delta):  # mean change between horizontally adjacent pixels of a perturbation
        return float(np.abs(np.diff(delta, axis=2)).mean())

    plain = A.CIGM(ensemble_off, 0.05, max_iter=3, eps_step=0.01).generate(x)
    attack = A.CIGM(ensemble_off, 0.05, max_iter=3, eps_step=0.01, smooth=2.0)
    blurred = attack.generate(x)
    assert np.abs(blurred - x).max() <= 0.05 + 1e-6 and blurred.min() >= 0 and blurred.max() <= 1
    assert np.array_equal(blurred, attack.generate(x))
    assert roughness(blurred - x) < 0.5 * roughness(plain - x)
    # The same blur behind the random shift and flip: its own compiled loop, still in budget.
    both = A.CIGM(ensemble_off, 0.05, max_iter=3, eps_step=0.01, smooth=2.0, transform="shift+flip").generate(x)
    assert np.abs(both - x).max() <= 0.05 + 1e-6 and not np.array_equal(both, blurred)


@pytest.mark.parametrize("transform", ["blur", "shift:9", "shift+flip:2x0", "none:2", "shift:x", "scale:9", "zoom"])
def test_cigm_refuses_unknown_transforms(ensemble_off, transform):
    with pytest.raises(ValueError, match="transform="):
        A.CIGM(ensemble_off, 0.05, transform=transform)
