"""ROC/AUC, p-values and thresholds of cae.stats, checked against brute force and scipy."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cae import stats

scipy_stats = pytest.importorskip("scipy.stats")

scores = st.lists(st.integers(0, 6).map(lambda v: v / 6), min_size=1, max_size=25)
FAST = settings(max_examples=80, deadline=None)


def brute_auc(pos, neg):
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


# --------------------------------------------------------------------------- ROC / AUC
def test_auc_known_values():
    assert stats.roc_auc([1, 2, 3], [0, 0.5]) == 1.0
    assert stats.roc_auc([0, 0.5], [1, 2, 3]) == 0.0
    assert stats.roc_auc([1.0], [1.0]) == 0.5
    # pos 0.4 beats 0.1, ties 0.4; pos 0.9 beats both: (1 + 0.5 + 2) / 4
    assert stats.roc_auc([0.4, 0.9], [0.1, 0.4]) == pytest.approx(3.5 / 4)


@FAST
@given(scores, scores)
def test_auc_is_mann_whitney_and_symmetric(pos, neg):
    auc = stats.roc_auc(pos, neg)
    assert 0.0 <= auc <= 1.0
    assert auc == pytest.approx(brute_auc(pos, neg), abs=1e-12)
    assert auc + stats.roc_auc(neg, pos) == pytest.approx(1.0, abs=1e-12)


@FAST
@given(scores, scores)
def test_roc_curve_shape_and_trapezoid_area(pos, neg):
    fpr, tpr, thresholds = stats.roc_curve(pos, neg)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.isinf(thresholds[0]) and np.all(np.diff(thresholds) < 0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(stats.roc_auc(pos, neg), abs=1e-12)


def test_tpr_at_fpr():
    pos = [0.9, 0.8, 0.7, 0.2]
    neg = [0.75, 0.1, 0.1, 0.1]
    assert stats.tpr_at_fpr(pos, neg, fpr=0.0) == 0.5  # threshold 0.8: no negative above
    assert stats.tpr_at_fpr(pos, neg, fpr=0.25) == 1.0  # threshold 0.2 admits only 0.75
    assert stats.tpr_at_fpr([0.9, 0.5], [0.7, 0.6, 0.1, 0.1], fpr=0.25) == 0.5
    assert stats.tpr_at_fpr(pos, neg, fpr=1.0) == 1.0
    assert stats.tpr_at_fpr([1.0, 1.0], [0.0], fpr=0.0) == 1.0


@FAST
@given(scores, scores, st.floats(0, 1))
def test_tpr_at_fpr_is_attained_by_some_threshold(pos, neg, fpr):
    best = stats.tpr_at_fpr(pos, neg, fpr)
    pos, neg = np.array(pos), np.array(neg)
    achievable = [np.mean(pos >= t) for t in np.append(np.unique(np.r_[pos, neg]), np.inf)
                  if np.mean(neg >= t) <= fpr]
    assert best == pytest.approx(max(achievable))


@pytest.mark.parametrize("bad", [[], [np.nan], [[0.1, 0.2]], [np.inf]])
def test_scores_are_validated(bad):
    with pytest.raises(ValueError, match="scores"):
        stats.roc_auc(bad, [0.5])


# --------------------------------------------------------------------------- p-values
@pytest.mark.parametrize("n", [1, 7, 50, 300])
@pytest.mark.parametrize("p0", [0.001, 0.1, 0.37, 0.9])
def test_binomial_p_value_matches_scipy(n, p0):
    for matches in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        expected = scipy_stats.binom.sf(matches - 1, n, p0)
        assert stats.binomial_p_value(matches, n, p0) == pytest.approx(expected, rel=1e-9,
                                                                       abs=1e-300)


def test_binomial_p_value_edges_and_tiny_tails():
    assert stats.binomial_p_value(0, 10, 0.2) == 1.0
    assert stats.binomial_p_value(11, 10, 0.2) == 0.0
    assert stats.binomial_p_value(3, 10, 0.0) == 0.0
    assert stats.binomial_p_value(10, 10, 1.0) == 1.0
    # all 300 keys matched with p0 = 0.3: 0.3 ** 300, far below float underflow of naive sums
    assert stats.binomial_p_value(300, 300, 0.3) == pytest.approx(math.exp(300 * math.log(0.3)),
                                                                  rel=1e-9)
    for bad in [(-1, 10, 0.5), (3, 10, 1.5), (2.5, 10, 0.5), (True, 10, 0.5)]:
        with pytest.raises(ValueError):
            stats.binomial_p_value(*bad)


@FAST
@given(st.integers(1, 400), st.floats(0.0, 1.0), st.data())
def test_binomial_p_value_monotone(n, p0, data):
    low = data.draw(st.integers(0, n + 1))
    high = data.draw(st.integers(low, n + 1))
    p_low, p_high = stats.binomial_p_value(low, n, p0), stats.binomial_p_value(high, n, p0)
    assert 0.0 <= p_high <= p_low <= 1.0
    # and non-decreasing in p0 (up to rounding near 1: tails are summed in log space)
    assert stats.binomial_p_value(low, n, min(1.0, p0 + 0.05)) >= p_low - 1e-12


def test_binomial_p_value_is_valid_under_its_null():
    """Under a true Binomial(n, p0), P[p <= a] <= a (an off-by-one would break this)."""
    rng = np.random.default_rng(0)
    n, p0 = 60, 0.3
    draws = rng.binomial(n, p0, size=4000)
    p_values = {m: stats.binomial_p_value(m, n, p0) for m in range(n + 1)}
    for alpha in (0.01, 0.05, 0.2):
        rate = np.mean([p_values[m] <= alpha for m in draws])
        assert rate <= alpha * 1.2 + 0.005
        assert rate >= alpha * 0.4  # not absurdly conservative either


def test_empirical_p_value():
    null = [0.1, 0.2, 0.3, 0.5]
    assert stats.empirical_p_value(0.9, null) == 1 / 5
    assert stats.empirical_p_value(0.3, null) == 3 / 5  # ties count against the suspect
    assert stats.empirical_p_value(0.0, null) == 1.0


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.floats(0, 1), st.floats(0, 1))
def test_empirical_p_value_monotone(null, a, b):
    low, high = sorted((a, b))
    p_low, p_high = stats.empirical_p_value(low, null), stats.empirical_p_value(high, null)
    assert 1 / (len(null) + 1) <= p_high <= p_low <= 1.0


def test_empirical_null_is_valid_where_binomial_is_optimistic():
    """References whose match rate varies (correlated keys): the binomial p-value rejects far
    too often, the empirical one keeps its level. This is why both are reported."""
    rng = np.random.default_rng(1)
    n, references, trials, alpha = 50, 19, 1500, 0.05
    rates = rng.beta(3, 7, size=(trials, references + 1))  # per-model match probability
    retentions = rng.binomial(n, rates) / n
    binomial_hits = empirical_hits = 0
    for row in retentions:
        null = stats.Null(tuple(row[:-1]), n)
        binomial, empirical = null.p_values(round(row[-1] * n))
        binomial_hits += binomial <= alpha
        empirical_hits += empirical <= alpha
    assert empirical_hits / trials <= alpha + 0.02
    assert binomial_hits / trials > 2 * alpha


def test_clopper_pearson_upper():
    assert stats.clopper_pearson_upper(0, 28) == pytest.approx(1 - 0.05 ** (1 / 28), rel=1e-9)
    for k, trials in [(1, 10), (5, 40), (27, 28)]:
        expected = scipy_stats.beta.ppf(0.95, k + 1, trials - k)
        assert stats.clopper_pearson_upper(k, trials) == pytest.approx(expected, rel=1e-7)
    assert stats.clopper_pearson_upper(28, 28) == 1.0


# --------------------------------------------------------------------------- null and threshold
def test_null_p0_and_p_values():
    null = stats.Null.from_matches(np.array([[1, 0, 0, 0], [1, 1, 0, 0]], dtype=bool))
    assert null.reference_retentions == (0.25, 0.5) and null.n == 4
    assert null.p0 == pytest.approx(3.5 / 9)
    binomial, empirical = null.p_values(4)
    assert binomial == pytest.approx(null.p0 ** 4)
    assert empirical == 1 / 3
    assert null.p_value(4) == max(binomial, empirical)
    assert stats.Null((0.0, 0.0), 10).p0 > 0  # pseudo-count: never exactly zero
    with pytest.raises(ValueError, match="same fingerprint"):
        null.p_values(2, n=5)


def test_choose_threshold_example():
    refs = [0.30, 0.40, 0.45, 0.50, 0.68]
    result = stats.choose_threshold(refs, alpha=0.2, n=100)  # one reference may exceed θ
    assert result.theta == pytest.approx(0.51)
    assert result.empirical_fpr == 0.2
    result = stats.choose_threshold(refs, alpha=0.01, n=100)
    assert result.theta == pytest.approx(0.69) and result.empirical_fpr == 0.0
    assert result.binomial_fpr == pytest.approx(stats.binomial_p_value(69, 100, result.p0))
    assert result.p0 == pytest.approx((233 + 0.5) / 501)
    assert result.empirical_fpr_upper == pytest.approx(1 - 0.05 ** (1 / 5))
    no_n = stats.choose_threshold(refs, alpha=0.01)
    assert 0.68 < no_n.theta < 0.68 + 1e-12 and no_n.binomial_fpr is None


@FAST
@given(st.integers(1, 60), st.data(), st.sampled_from([0.01, 0.05, 0.1, 0.3]))
def test_choose_threshold_is_smallest_with_level(n, data, alpha):
    refs = data.draw(st.lists(st.integers(0, n - 1), min_size=int(1 / alpha) // 2 + 1,
                              max_size=60))
    refs = [r / n for r in refs]
    result = stats.choose_threshold(refs, alpha=alpha, n=n)
    refs = np.array(refs)
    assert np.mean(refs >= result.theta - 1e-12) <= alpha
    assert round(result.theta * n, 6) == round(result.theta * n)  # on the 1/n grid
    smaller = result.theta - 1 / n
    assert np.mean(refs >= smaller - 1e-12) > alpha


def test_choose_threshold_refuses_impossible():
    with pytest.raises(ValueError, match="whole fingerprint"):
        stats.choose_threshold([1.0, 0.2, 1.0], alpha=0.01, n=10)
    with pytest.raises(ValueError, match="alpha"):
        stats.choose_threshold([0.2, 0.3], alpha=1.0, n=10)


def test_bootstrap_mean_ci():
    rng = np.random.default_rng(1)
    few, many = rng.random(10), rng.random(1000)
    low, high = stats.bootstrap_mean_ci(few)
    assert low < few.mean() < high
    low_many, high_many = stats.bootstrap_mean_ci(many)
    assert low_many < many.mean() < high_many and high_many - low_many < (high - low) / 3
    assert stats.bootstrap_mean_ci([0.25] * 7) == (0.25, 0.25)
    assert stats.bootstrap_mean_ci(few, seed=3) == stats.bootstrap_mean_ci(few, seed=3)
    # About 95 % of intervals cover the true mean 0.5 of uniform samples.
    covered = [lo <= 0.5 <= hi for lo, hi in (stats.bootstrap_mean_ci(rng.random(50), seed=i) for i in range(200))]
    assert 0.88 <= np.mean(covered) <= 0.99
    with pytest.raises(ValueError, match="non-empty"):
        stats.bootstrap_mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_mean_ci([0.1, float("nan")])


# --------------------------------------------------------------------------- per-fingerprint evidence
def test_poisson_binomial_is_the_binomial_for_equal_rates_and_matches_sampling():
    from cae import stats

    for k in (0, 3, 10, 20):
        assert stats.poisson_binomial_p_value(k, [0.3] * 20) == pytest.approx(stats.binomial_p_value(k, 20, 0.3))
    rates = np.random.default_rng(0).uniform(0.05, 0.9, 30)
    draws = (np.random.default_rng(1).random((200_000, 30)) < rates).sum(axis=1)
    for k in (5, 12, 20):
        assert stats.poisson_binomial_p_value(k, rates) == pytest.approx(np.mean(draws >= k), abs=3e-3)
        assert stats.poisson_binomial_p_value(k, rates, tail="lower") == pytest.approx(np.mean(draws <= k),
                                                                                         abs=3e-3)
    with pytest.raises(ValueError, match="more than the 30 trials"):
        stats.poisson_binomial_p_value(31, rates)


def test_likelihood_ratio_weighs_only_informative_keys_and_its_p_value_bounds_the_tail():
    from cae import stats

    matches = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], bool)
    p, q = stats.match_rates(matches[:1]), stats.match_rates(matches[1:])
    assert p.tolist() == [0.75, 0.75, 0.75, 0.25] and q.tolist() == [0.25] * 4  # Jeffreys' half counts
    # The last key: both groups at the same rate, so it carries no evidence either way.
    assert stats.likelihood_ratio([1, 1, 1, 0], p, q) == pytest.approx(stats.likelihood_ratio([1, 1, 1, 1], p, q))
    assert stats.likelihood_ratio([1, 1, 1, 0], p, q) > stats.likelihood_ratio([0, 0, 0, 1], p, q)
    rng = np.random.default_rng(0)
    p, q = rng.uniform(0.5, 0.95, 60), rng.uniform(0.05, 0.6, 60)
    null = stats.likelihood_ratio(rng.random((100_000, 60)) < q, p, q)
    for score in np.quantile(null, [0.5, 0.9, 0.99]):
        bound = stats.likelihood_ratio_p_value(score, p, q)
        assert np.mean(null >= score) <= bound <= 1.0  # conservative, never below the true tail
    assert stats.likelihood_ratio_p_value(stats.likelihood_ratio(np.ones(60), p, q), p, q) < 1e-6
    with pytest.raises(ValueError, match="strictly inside"):
        stats.likelihood_ratio([1], [1.0], [0.5])


def test_shrunk_rates_pool_keys_that_differ_by_chance_and_keep_keys_that_differ():
    from cae import stats

    rng = np.random.default_rng(0)
    # Every key at the same rate 0.6, three models: differences between keys are noise.
    alike = rng.random((3, 200)) < 0.6
    shrunk = stats.shrunk_rates(alike)
    assert np.ptp(shrunk) < 0.1 and abs(shrunk.mean() - alike.mean()) < 0.02
    assert np.ptp(stats.match_rates(alike)) > 0.5  # Jeffreys' rates jump with every count
    # Half the keys at 0.95, half at 0.05, twenty models: the rates follow the keys.
    rates = np.repeat([0.95, 0.05], 100)
    differ = rng.random((20, 200)) < rates
    assert np.abs(stats.shrunk_rates(differ) - rates).mean() < 0.06
    # One model tells keys apart no better than chance: every key gets the mean.
    one = stats.shrunk_rates(differ[:1])
    assert np.ptp(one) < 1e-3 and 0 < one[0] < 1
    with pytest.raises(ValueError, match="expected \\(models, fingerprints\\)"):
        stats.shrunk_rates(np.zeros(5, bool))


def test_the_likelihood_ratio_never_falls_when_a_suspect_matches_one_key_more():
    """Keys the calibration references matched more often than its surrogates weigh
    nothing: a suspect that reproduces every key scores highest."""
    from cae import stats

    rng = np.random.default_rng(1)
    surrogates = rng.random((3, 80)) < rng.uniform(0.3, 1.0, 80)
    references = rng.random((3, 80)) < rng.uniform(0.3, 1.0, 80)  # often above the surrogates
    p, q = stats.lr_rates(surrogates, references)
    assert np.all(p >= q)
    raw_p, raw_q = stats.match_rates(surrogates), stats.match_rates(references)
    assert np.any(raw_p < raw_q)  # the case the projection is for
    everything = stats.likelihood_ratio(np.ones(80, bool), p, q)
    for _ in range(20):
        suspect = rng.random(80) < 0.7
        score = stats.likelihood_ratio(suspect, p, q)
        assert score <= everything
        more = suspect.copy()
        more[np.flatnonzero(~suspect)[:1]] = True
        assert stats.likelihood_ratio(more, p, q) >= score
    with pytest.raises(ValueError, match="cover 80 and 79"):
        stats.lr_rates(surrogates, references[:, :79])


def test_the_model_spread_keeps_p_values_honest_when_models_differ_as_a_whole():
    """Independent models differ as a whole (one is closer to the source on every key):
    with keys taken as independent given the model, 1 % p-values accuse far more than
    1 % of them; averaged over the spread of the calibration references, they do not."""
    from cae import stats

    rng = np.random.default_rng(0)
    n, base = 150, rng.uniform(0.05, 0.7, 150)

    def models(count):
        shifts = rng.normal(0, 1.0, count)[:, None]
        return rng.random((count, n)) < stats._shifted(base, shifts)

    calibration, fresh = models(4), models(300)
    rates, spread = stats.match_rates(calibration), stats.model_spread(calibration)
    assert spread >= stats.MIN_MODEL_SPREAD
    naive = np.mean([stats.poisson_binomial_p_value(int(m.sum()), rates) < 0.01 for m in fresh])
    honest = np.mean([stats.poisson_binomial_p_value(int(m.sum()), rates, spread=spread) < 0.01 for m in fresh])
    assert naive > 0.1 and honest <= 0.02
    assert stats.model_spread(np.zeros((1, n), bool)) == stats.MIN_MODEL_SPREAD  # one model: the floor
    shifts = stats.left_out_shifts(calibration)
    assert shifts.shape == (4,) and spread == max(float(np.sqrt(np.mean(shifts ** 2))), stats.MIN_MODEL_SPREAD)
    with pytest.raises(ValueError, match="references >= 2"):
        stats.left_out_shifts(calibration[:1])
    shift = stats.model_shift(rng.random(n) < stats._shifted(base, 1.0), base)
    assert 0.5 < shift < 1.5  # recovers a model's shift of 1


def test_the_chernoff_bound_is_the_minimum_over_the_whole_lambda_grid():
    """likelihood_ratio_p_value searches its λ grid by bisection (the bound is convex in
    λ); it must find what trying every λ finds."""
    rng = np.random.default_rng(7)
    for n in (1, 10, 300):
        for _ in range(20):
            p = rng.uniform(0.05, 0.95, n)
            q = np.minimum(p, rng.uniform(0.05, 0.95, n))
            null = rng.uniform(0.0, 1.0, n)
            score = float(rng.uniform(-0.5, 3.0)) * n / 10
            hit, miss = np.log(p / q), np.log((1 - p) / (1 - q))
            with np.errstate(divide="ignore"):
                log_r, log_not_r = np.log(null), np.log1p(-null)
            every = [np.sum(np.logaddexp(log_r + lam * hit, log_not_r + lam * miss)) - lam * score
                     for lam in stats._LAMBDAS]
            expected = math.exp(min(0.0, min(every)))
            # (the function rounds the score down by 1e-9 relative, so that it stays a bound)
            assert stats.likelihood_ratio_p_value(score, p, q, null=null) == pytest.approx(expected, rel=1e-5)


def test_the_chernoff_bound_is_nearly_exact_for_a_suspect_that_matches_every_key():
    """Matching every key with weight is the likelihood ratio's largest score, so its
    tail is exactly the product of the null's rates over those keys; the bound may not go
    below it (it is a bound) and, with λ far above 3, comes within a few percent of it
    (capped at λ = 3 it was orders of magnitude above on 100 keys)."""
    rng = np.random.default_rng(3)
    n = 100
    p = rng.uniform(0.6, 0.95, n)
    q = p - rng.uniform(0.05, 0.4, n)
    score = float(stats.likelihood_ratio(np.ones(n, bool), p, q))
    exact = float(np.prod(q))
    bound = stats.likelihood_ratio_p_value(score, p, q)
    assert exact <= bound <= 1.05 * exact
    capped = min(math.exp(np.sum(np.logaddexp(np.log(q) + lam * np.log(p / q), np.log1p(-q) + lam * np.log((1 - p) / (1 - q))))
                          - lam * score) for lam in np.linspace(0.0, 3.0, 301)[1:])
    assert capped > 100 * exact


def test_poisson_binomial_p_values_do_not_depend_on_what_was_asked_before():
    """The distribution is cached per rates and spread; a cached one must serve every
    count and tail, and other rates must not hit it."""
    rates = np.array([0.2, 0.5, 0.9])
    first = [stats.poisson_binomial_p_value(m, rates, tail, 0.7) for m in range(4) for tail in ("upper", "lower")]
    stats.poisson_binomial_p_value(1, rates * 0.5, "upper", 0.7)
    again = [stats.poisson_binomial_p_value(m, rates, tail, 0.7) for m in range(4) for tail in ("upper", "lower")]
    assert first == again
    assert stats.poisson_binomial_p_value(0, rates, "upper", 0.7) == pytest.approx(1.0)
    assert stats.poisson_binomial_p_value(3, rates * 0.5, "upper") == pytest.approx(0.1 * 0.25 * 0.45)


def test_the_likelihood_ratio_null_stays_honest_when_few_references_choose_its_weights():
    """The likelihood ratio weighs each key by how rarely the few calibration references
    matched it, so its weights fit their noise: a new independent model scores higher
    than their rates predict, and the references' own null (their rates and spread)
    accuses several times more than alpha of such models. stats.lr_null measures the
    gap on the references, each left out, and stays within alpha."""
    from cae import stats

    rng = np.random.default_rng(1)
    n = 300
    base, boost = rng.beta(2, 1.5, n), np.where(rng.random(n) < 0.5, 1.5, 0.0)

    def models(count, derived=False):
        shifts = rng.normal(0, 0.5, (count, 1)) + (boost if derived else 0.0)
        return rng.random((count, n)) < stats._shifted(base, shifts)

    naive, honest = [], []
    for _ in range(30):
        surrogates, references = models(6, derived=True), models(6)
        p, q = stats.lr_rates(surrogates, references)
        plain = stats.match_rates(references), stats.model_spread(references)
        rates, spread = stats.lr_null(surrogates, references)
        assert spread >= stats.MIN_MODEL_SPREAD and np.all(rates >= plain[0] - 1e-12)  # shifted up, never down
        for suspect in models(10):
            score = stats.likelihood_ratio(suspect, p, q)
            naive.append(stats.likelihood_ratio_p_value(score, p, q, *plain))
            honest.append(stats.likelihood_ratio_p_value(score, p, q, rates, spread))
    naive, honest = np.array(naive), np.array(honest)
    assert np.mean(naive <= 0.1) > 0.15 and np.mean(honest <= 0.1) <= 0.1
    assert stats.lr_left_out_shifts(surrogates, references).mean() > 0  # what the shift corrects
    everything = np.ones(n, bool)  # the source itself
    assert stats.likelihood_ratio_p_value(stats.likelihood_ratio(everything, p, q), p, q, rates, spread) < 1e-6
    one = stats.lr_null(surrogates, references[:1])
    assert one[1] == stats.MIN_MODEL_SPREAD and np.allclose(one[0], stats.match_rates(references[:1]))
    with pytest.raises(ValueError, match="references >= 2"):
        stats.lr_left_out_shifts(surrogates, references[:1])
