"""Statistics for verification you can trust: ROC, AUC, p-values and thresholds.

NumPy and the standard library only.

Scores and the decision rule
----------------------------
A *score* is a number where larger means "more likely a surrogate" (for
fingerprinting: the retention of a suspect). Everywhere here a model is declared
positive when ``score >= threshold``.

The null hypothesis
-------------------
"The suspect is an independent model": it was trained without access to the source
model (a *reference* model). Two nulls are offered, and :class:`Null` carries both:

* **Binomial.** An independent model matches each verification key with probability
  ``p0``, independently across the ``n`` fingerprints, so its number of matches is
  ``Binomial(n, p0)``. ``p0`` is *estimated* as the per-fingerprint match rate of
  reference models on this fingerprint (not ``1 / num_classes``: models of the same
  task agree on adversarial examples far more often than chance). The independence
  assumption is optimistic: a reference that happens to be close to the source
  matches many keys at once, so real reference retentions spread wider than the
  binomial and binomial p-values come out too small. Read it as a best case.
* **Empirical.** The suspect's retention is compared with the retentions of the
  reference models themselves: ``(1 + #{null >= retention}) / (1 + R)``. This makes
  no independence assumption, but with ``R`` references it cannot go below
  ``1 / (R + 1)``.

:meth:`Null.p_value` reports the larger (more conservative) of the two.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

# Scores, retentions or other numbers, one per model or example.
Scores = Sequence[float] | np.ndarray

# The false-positive rate θ is chosen for: at most this fraction of references at or above it.
DEFAULT_ALPHA = 0.01

__all__ = [
    "Null",
    "Threshold",
    "binomial_p_value",
    "bootstrap_mean_ci",
    "choose_threshold",
    "clopper_pearson_upper",
    "empirical_p_value",
    "likelihood_ratio",
    "likelihood_ratio_p_value",
    "lr_left_out_shifts",
    "lr_null",
    "lr_shift",
    "match_rates",
    "left_out_shifts",
    "model_shift",
    "model_spread",
    "poisson_binomial_p_value",
    "roc_auc",
    "roc_curve",
    "threshold_or_none",
    "tpr_at_fpr",
]


# --------------------------------------------------------------------------- input checks
def _scores(values, name):
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence of scores, got shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite scores; remove them first.")
    return array


def _count(value, name):
    """An integer (Python or NumPy, or an integral float) >= 0."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer count, got the boolean {value!r}.")
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer count, got {value!r}.") from None
    if not as_float.is_integer() or as_float < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return int(as_float)


def _probability(value, name):
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}.")
    return value


# --------------------------------------------------------------------------- ROC
def roc_curve(scores_pos: Scores, scores_neg: Scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ROC curve of the rule ``score >= threshold``.

    Returns ``(fpr, tpr, thresholds)``: ``thresholds`` starts at ``+inf`` (nothing
    positive, the point (0, 0)) and then runs through the distinct scores in
    decreasing order, ending at (1, 1). ``fpr[i]`` and ``tpr[i]`` are the fractions of
    negatives and positives with ``score >= thresholds[i]``.
    """
    pos = np.sort(_scores(scores_pos, "scores_pos"))
    neg = np.sort(_scores(scores_neg, "scores_neg"))
    distinct = np.unique(np.concatenate([pos, neg]))[::-1]
    thresholds = np.concatenate([[np.inf], distinct])
    tpr = (pos.size - np.searchsorted(pos, thresholds, side="left")) / pos.size
    fpr = (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size
    return fpr, tpr, thresholds


def roc_auc(scores_pos: Scores, scores_neg: Scores) -> float:
    """Area under the ROC curve.

    Equal to the Mann-Whitney probability ``P[pos > neg] + 1/2 P[pos == neg]`` for a
    positive and a negative drawn independently (ties count half), which is also the
    trapezoidal area under :func:`roc_curve`. Computed exactly with integer counts.
    """
    pos = _scores(scores_pos, "scores_pos")
    neg = np.sort(_scores(scores_neg, "scores_neg"))
    below = np.searchsorted(neg, pos, side="left").astype(np.int64)
    below_or_tied = np.searchsorted(neg, pos, side="right").astype(np.int64)
    twice_wins = int(np.sum(below + below_or_tied))  # 2 * wins + ties
    return twice_wins / (2 * pos.size * neg.size)


def tpr_at_fpr(scores_pos: Scores, scores_neg: Scores, fpr: float = 0.01) -> float:
    """The highest true-positive rate of any threshold whose false-positive rate is <= ``fpr``.

    With few negatives the achievable false-positive rates are multiples of
    ``1 / len(scores_neg)``; ``fpr=0.01`` with 20 negatives therefore means "no
    negative above the threshold".
    """
    fpr = _probability(fpr, "fpr")
    fprs, tprs, _ = roc_curve(scores_pos, scores_neg)
    return float(np.max(tprs[fprs <= fpr]))  # the first point (0, 0) always qualifies


# --------------------------------------------------------------------------- p-values
def _binomial_log_tails(n, p0):
    """``log P[X >= k]`` for k = 0..n, X ~ Binomial(n, p0), with 0 < p0 < 1.

    Accumulated from the top with ``logaddexp`` so that the result is monotone
    non-increasing in ``k`` by construction.
    """
    k = np.arange(n + 1, dtype=np.float64)
    log_choose = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(i + 1) for i in range(n + 1)])
        - np.array([math.lgamma(n - i + 1) for i in range(n + 1)])
    )
    log_pmf = log_choose + k * math.log(p0) + (n - k) * math.log1p(-p0)
    return np.logaddexp.accumulate(log_pmf[::-1])[::-1]


def binomial_p_value(matches: int, n: int, p0: float) -> float:
    """``P[X >= matches]`` for ``X ~ Binomial(n, p0)``, exact (log-space sum of the pmf).

    The p-value of observing ``matches`` agreeing keys out of ``n`` if the suspect
    matched each key independently with probability ``p0`` (see the module notes on
    why that null is optimistic). Monotone non-increasing in ``matches``.
    """
    n = _count(n, "n")
    matches = _count(matches, "matches")
    p0 = _probability(p0, "p0")
    if matches == 0:
        return 1.0
    if matches > n:
        return 0.0
    if p0 == 0.0:
        return 0.0
    if p0 == 1.0:
        return 1.0
    return float(min(1.0, math.exp(_binomial_log_tails(n, p0)[matches])))


def empirical_p_value(retention: float, null_retentions: Scores) -> float:
    """``(1 + #{null >= retention}) / (1 + len(null))``.

    The p-value of ``retention`` against retentions measured on models known to be
    independent (reference models); valid without any independence assumption, but
    never below ``1 / (1 + len(null))``.
    """
    null = _scores(null_retentions, "null_retentions")
    retention = float(retention)
    if not math.isfinite(retention):
        raise ValueError(f"retention must be a finite number, got {retention!r}.")
    return (1 + int(np.sum(null >= retention))) / (1 + null.size)


def bootstrap_mean_ci(values: Scores, confidence: float = 0.95, resamples: int = 2000,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval ``(low, high)`` of the mean of ``values``.

    Resamples the values (e.g. per-example conferrability scores) with replacement,
    ``resamples`` times with a fixed ``seed``, so a table built from it is reproducible.
    It says how much a mean over few examples can move, not how much it would move with
    other models: the models are fixed.
    """
    values = _scores(values, "values")
    confidence = _probability(confidence, "confidence")
    resamples = _count(resamples, "resamples")
    if resamples < 1:
        raise ValueError("resamples must be at least 1.")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def clopper_pearson_upper(successes: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper confidence bound on a rate.

    The largest rate ``p`` still consistent (at level ``1 - confidence``) with seeing
    only ``successes`` out of ``trials``: ``P[Binomial(trials, p) <= successes] =
    1 - confidence``. For zero successes this is ``1 - (1 - confidence) ** (1 / trials)``
    (the "rule of three": about ``3 / trials`` at 95 %).
    """
    successes = _count(successes, "successes")
    trials = _count(trials, "trials")
    confidence = _probability(confidence, "confidence")
    if successes > trials:
        raise ValueError(f"successes ({successes}) cannot exceed trials ({trials}).")
    if trials == 0 or successes == trials:
        return 1.0
    beta = 1.0 - confidence
    low, high = successes / trials, 1.0
    for _ in range(100):  # P[X <= s] = 1 - P[X >= s + 1] decreases in p: bisection
        mid = 0.5 * (low + high)
        if 1.0 - binomial_p_value(successes + 1, trials, mid) > beta:
            low = mid
        else:
            high = mid
    return high


# --------------------------------------------------------------------------- per-fingerprint evidence
def match_rates(matches: np.ndarray, prior: float = 0.5) -> np.ndarray:
    """Smoothed per-fingerprint match rates of a group of calibration models.

    ``matches``: boolean (models, n), ``matches[m, i]`` iff model m gives fingerprint i
    the source's label. Returns (n,) rates ``(count + prior) / (models + 2 prior)``
    (Jeffreys' prior by default), strictly inside (0, 1) so log-odds stay finite.
    """
    matches = np.asarray(matches)
    if matches.ndim != 2 or matches.shape[0] == 0:
        raise ValueError(f"matches has shape {matches.shape}; expected (models, fingerprints) with at least "
                         "one model.")
    prior = float(prior)
    if not prior > 0:
        raise ValueError(f"prior={prior!r}; expected a pseudo-count greater than 0.")
    return (matches.astype(bool).sum(axis=0) + prior) / (matches.shape[0] + 2 * prior)


def _log_beta(a, b):
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


# Prior strengths (pseudo-models) searched by :func:`shrunk_rates`, from almost none to
# so many that every key gets the group's mean rate.
_STRENGTHS = np.logspace(-1, 4, 121)


def shrunk_rates(matches: np.ndarray, prior: float = 0.5) -> np.ndarray:
    """Per-fingerprint match rates of a group of calibration models, shrunk toward the
    group's mean rate as far as the group's own data say (empirical Bayes).

    A key's count of matching models is modelled as beta-binomial: each key has its own
    rate, drawn from a Beta with the group's mean μ and strength s (pseudo-models). s is
    the one that makes the group's counts most likely (a grid search); the rates are then
    ``(count + μ s) / (models + s)``. With few models, keys whose counts differ no more
    than chance would make them get nearly the mean (their differences are noise); keys
    that really differ keep their own rates. With one model nothing tells keys apart, and
    every key gets the mean. ``prior`` smooths μ away from 0 and 1. Strictly inside (0, 1).
    """
    matches = np.asarray(matches)
    if matches.ndim != 2 or matches.shape[0] == 0:
        raise ValueError(f"matches has shape {matches.shape}; expected (models, fingerprints) with at least "
                         "one model.")
    models, n = matches.shape
    counts = matches.astype(bool).sum(axis=0)
    mean = (counts.sum() + prior) / (models * n + 2 * prior)
    histogram = np.bincount(counts, minlength=models + 1)

    def log_likelihood(strength):
        a, b = mean * strength, (1 - mean) * strength
        return sum(h * (_log_beta(k + a, models - k + b) - _log_beta(a, b))
                   for k, h in enumerate(histogram) if h)

    values = np.array([log_likelihood(s) for s in _STRENGTHS])
    # Ties (e.g. one model: every strength explains the counts equally): the strongest.
    strength = _STRENGTHS[np.flatnonzero(values >= values.max() - 1e-9)[-1]]
    return (counts + mean * strength) / (models + strength)


def lr_rates(surrogate_matches: np.ndarray, reference_matches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rates ``(p, q)`` the likelihood-ratio statistic weighs keys with: each group's
    :func:`shrunk_rates`, and on keys where the calibration references matched more often
    than the surrogates both set to their mean (such a key weighs nothing). A key is the
    source's label, which a derived model is never less likely to give than an
    independent one; without this, a suspect that reproduces every key could score below
    one that misses some. With ``p >= q`` on every key the statistic never falls when a
    suspect matches one key more."""
    p, q = shrunk_rates(surrogate_matches), shrunk_rates(reference_matches)
    if p.shape != q.shape:
        raise ValueError(f"surrogate and reference matches cover {p.shape[0]} and {q.shape[0]} fingerprints.")
    low = p < q
    p, q = p.copy(), q.copy()
    p[low] = q[low] = (p[low] + q[low]) / 2
    return p, q


def likelihood_ratio(matches: np.ndarray, p: np.ndarray, q: np.ndarray) -> float | np.ndarray:
    """Per-fingerprint log-likelihood ratio of "derived" against "independent".

    ``Σ_i m_i log(p_i / q_i) + (1 - m_i) log((1 - p_i) / (1 - q_i))`` for a suspect's
    matches ``m`` (bool (n,), or (models, n) for several suspects), with ``p`` and ``q``
    the match rates (:func:`match_rates`) of calibration surrogates and references.
    A fingerprint that surrogates and references both match (or both miss) weighs
    nothing; one that only surrogates match weighs much. Returns a float, or an
    (models,) array. Larger means more likely derived.
    """
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"p and q have shapes {p.shape} and {q.shape}; expected two (n,) rate vectors.")
    if np.any((p <= 0) | (p >= 1) | (q <= 0) | (q >= 1)):
        raise ValueError("p and q must lie strictly inside (0, 1); smooth them (cae.stats.match_rates).")
    m = np.asarray(matches)
    if m.shape[-1] != p.shape[0]:
        raise ValueError(f"matches cover {m.shape[-1]} fingerprints but the rates {p.shape[0]}.")
    m = m.astype(np.float64)
    return m @ np.log(p / q) + (1.0 - m) @ np.log((1.0 - p) / (1.0 - q))


def _rates(rates, name):
    rates = np.asarray(rates, np.float64)
    if rates.ndim != 1 or rates.size == 0 or np.any((rates < 0) | (rates > 1)) or not np.all(np.isfinite(rates)):
        raise ValueError(f"{name} must be a non-empty 1-D sequence of probabilities, got {rates.shape}.")
    return rates


def poisson_binomial_p_value(matches: int, rates: np.ndarray, tail: str = "upper", spread: float = 0.0) -> float:
    """``P[X >= matches]`` (``tail="upper"``) or ``P[X <= matches]`` (``"lower"``) for X the
    number of successes of independent trials with success probabilities ``rates``.

    Exact (dynamic programming over the n trials, O(n²)). The p-value of a suspect's
    ``matches`` keys when it matched key i with probability ``rates[i]`` independently:
    per-fingerprint rates of reference models give the p-value of "independent",
    those of surrogates (``"lower"``) the p-value of "derived". The independence of the
    keys given the model is an assumption (the module notes say why it is optimistic);
    ``spread`` > 0 relaxes it: the p-value is averaged over a shift u ~ N(0, spread²) of
    every key's log-odds, a model closer to or further from the source than the rates say
    (:func:`model_spread`).
    """
    rates = _rates(rates, "rates")
    matches = _count(matches, "matches")
    if matches > rates.size:
        raise ValueError(f"matches={matches} is more than the {rates.size} trials.")
    if tail not in ("upper", "lower"):
        raise ValueError(f"tail={tail!r}; expected 'upper' or 'lower'.")
    pmf = _poisson_binomial_pmf(rates.tobytes(), float(spread))
    values = pmf[:, matches:].sum(axis=1) if tail == "upper" else pmf[:, :matches + 1].sum(axis=1)
    values = np.minimum(1.0, np.maximum(values, 0.0))
    return float(min(1.0, np.dot(_WEIGHTS, values))) if spread > 0 else float(values[0])


@functools.lru_cache(maxsize=32)
def _poisson_binomial_pmf(rates_bytes, spread):
    """The distribution of the number of successes (rows: one per shift of the
    model-level log-odds, or one unshifted row without a spread), computed once per
    rates and spread: every suspect judged against one calibration shares it."""
    rates = np.frombuffer(rates_bytes, np.float64)
    # The dynamic programme runs over all rows at once.
    table = np.stack([_shifted(rates, spread * node) for node in _NODES]) if spread > 0 else rates[None]
    pmf = np.zeros((len(table), rates.size + 1))
    pmf[:, 0] = 1.0
    for i in range(rates.size):
        rate = table[:, i:i + 1]
        pmf[:, 1:i + 2] = pmf[:, 1:i + 2] * (1.0 - rate) + pmf[:, :i + 1] * rate
        pmf[:, 0] *= 1.0 - rate[:, 0]
    pmf.flags.writeable = False
    return pmf


def _logit(rates):
    rates = np.clip(np.asarray(rates, np.float64), 1e-9, 1 - 1e-9)
    return np.log(rates) - np.log1p(-rates)


def _shifted(rates, shift):
    return 1.0 / (1.0 + np.exp(-(_logit(rates) + shift)))


def model_shift(matches: np.ndarray, rates: np.ndarray) -> float:
    """The shift u of every key's log-odds that makes ``rates`` expect as many matches
    as the bool (n,) ``matches`` holds: how much more (u > 0) or less a model agrees
    with the keys than the group ``rates`` describe, all keys alike."""
    target = float(np.sum(matches))
    n = len(np.asarray(matches))
    target = min(max(target, 0.5), n - 0.5)  # a finite shift for all or none
    return _solve_shift(lambda shift: float(_shifted(rates, shift).sum()), target)


def _solve_shift(expected, target):
    """The shift u in [-30, 30] at which the rising function ``expected(u)`` reaches
    ``target`` (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        if expected(middle) < target:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


# The smallest spread of models around the references' per-fingerprint rates that
# p-values assume (log-odds units), however alike the few calibration references are.
MIN_MODEL_SPREAD = 0.5


def left_out_shifts(reference_matches: np.ndarray, prior: float = 0.5) -> np.ndarray:
    """Each of the bool (R >= 2, n) ``reference_matches``' :func:`model_shift` from the
    rates of the other references (out of sample): how much more (> 0) or less each
    agrees with the keys than the others say."""
    matches = np.asarray(reference_matches, bool)
    if matches.ndim != 2 or len(matches) < 2:
        raise ValueError(f"reference_matches has shape {matches.shape}; expected (references >= 2, keys).")
    return np.array([model_shift(matches[r], match_rates(np.delete(matches, r, axis=0), prior))
                     for r in range(len(matches))])


def model_spread(reference_matches: np.ndarray, prior: float = 0.5) -> float:
    """How far one independent model's agreement with the keys strays from the others':
    the root mean square of :func:`left_out_shifts`, and at least :data:`MIN_MODEL_SPREAD`.

    Keys are not independent given the model: a reference that happens to be close to
    the source matches many keys at once. p-values that ignore this come out too small;
    :func:`poisson_binomial_p_value` and :func:`likelihood_ratio_p_value` take the
    spread and average over a model-level shift u ~ N(0, spread²)."""
    matches = np.asarray(reference_matches, bool)
    if matches.ndim != 2 or len(matches) < 2:
        return MIN_MODEL_SPREAD
    return max(float(np.sqrt(np.mean(np.square(left_out_shifts(matches, prior))))), MIN_MODEL_SPREAD)


def lr_shift(matches: np.ndarray, p: np.ndarray, q: np.ndarray, rates: np.ndarray) -> float:
    """The shift u of every key's log-odds that makes ``rates`` expect the likelihood
    ratio (:func:`likelihood_ratio` with ``p``, ``q``) that the bool (n,) ``matches``
    scores: :func:`model_shift` measured on the likelihood ratio instead of the count.
    The expectation rises with u (``p >= q`` on every key, :func:`lr_rates`)."""
    p, q = _rates(p, "p"), _rates(q, "q")
    hit, miss = np.log(p / q), np.log((1 - p) / (1 - q))
    target = float(likelihood_ratio(np.asarray(matches, bool), p, q))
    rates = _rates(rates, "rates")

    def expected(shift):
        shifted = _shifted(rates, shift)
        return float(np.sum(shifted * hit + (1 - shifted) * miss))

    return _solve_shift(expected, target)


def lr_left_out_shifts(surrogate_matches: np.ndarray, reference_matches: np.ndarray,
                       condition_matches: np.ndarray | None = None, prior: float = 0.5) -> np.ndarray:
    """Each reference's :func:`lr_shift` out of sample: the likelihood ratio's rates
    (:func:`lr_rates`) and the null's rates (:func:`match_rates`) from the other
    references, the reference scored on its bool (n,) row of ``condition_matches``
    (the references' matches behind an input transformation; default
    ``reference_matches``, rows in the same order).

    Positive on average when the references' noise chose the weights: a key on which
    the few calibration references happened to match rarely gets a large weight, and
    a new independent model matches it more often than they did."""
    references = np.asarray(reference_matches, bool)
    condition = references if condition_matches is None else np.asarray(condition_matches, bool)
    if references.ndim != 2 or len(references) < 2 or condition.shape != references.shape:
        raise ValueError(f"reference_matches has shape {references.shape} and condition_matches "
                         f"{condition.shape}; expected the same (references >= 2, keys).")
    shifts = []
    for r in range(len(references)):
        p, q = lr_rates(surrogate_matches, np.delete(references, r, axis=0))
        shifts.append(lr_shift(condition[r], p, q, match_rates(np.delete(condition, r, axis=0), prior)))
    return np.array(shifts)


def lr_null(surrogate_matches: np.ndarray, reference_matches: np.ndarray,
            condition_matches: np.ndarray | None = None, prior: float = 0.5) -> tuple[np.ndarray, float]:
    """The likelihood ratio's null ``(rates, spread)`` for :func:`likelihood_ratio_p_value`:
    the references' rates (under ``condition_matches``, as in
    :func:`lr_left_out_shifts`) shifted up by the mean of their left-out
    :func:`lr_shift`s (never down), and the standard deviation of those shifts (at least
    :data:`MIN_MODEL_SPREAD`) as the spread.

    The retention null (:func:`match_rates`, :func:`model_spread`) is not enough for the
    likelihood ratio: its weights are chosen on the same few references, so a new
    independent model scores higher than those rates predict (on the ``cpu`` calibration
    the six references, each left out, scored 0.25 to 1.6 log-odds above them). With one
    reference there is nothing to leave out: its rates and the floor."""
    condition = np.asarray(reference_matches if condition_matches is None else condition_matches, bool)
    rates = match_rates(condition, prior)
    if len(condition) < 2:
        return rates, MIN_MODEL_SPREAD
    shifts = lr_left_out_shifts(surrogate_matches, reference_matches, condition, prior)
    center = max(float(np.mean(shifts)), 0.0)
    return _shifted(rates, center), max(float(np.std(shifts, ddof=1)), MIN_MODEL_SPREAD)


# Gauss-Hermite nodes and weights for averaging over u ~ N(0, spread²).
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(41)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def likelihood_ratio_p_value(score: float, p: np.ndarray, q: np.ndarray, null: np.ndarray | None = None,
                             spread: float = 0.0) -> float:
    """An upper bound on ``P[LR >= score]`` when the suspect matches fingerprint i with
    probability ``null[i]`` (default ``q[i]``) independently (the null "independent
    model"; another ``null``: independent models under other conditions, e.g. behind an
    input transformation); LR is :func:`likelihood_ratio` with rates ``p``, ``q``.

    Chernoff's bound, ``min over λ of exp(-λ s) Π E[exp(λ w_i)]`` (w_i the key's
    log-ratio; λ on :data:`_LAMBDAS`): at λ = 1 and ``null = q`` it is Markov's ``exp(-s)`` (the
    likelihood ratio has mean 1 under that null), and every λ >= 0 gives a bound, so the
    result is never below the true tail: conservative (valid, never too small) given
    the null. ``spread``: as in :func:`poisson_binomial_p_value`, the bound averaged over
    a model-level shift of the null's log-odds. Returns a float in (0, 1].
    """
    p, q = _rates(p, "p"), _rates(q, "q")
    r = q if null is None else _rates(null, "null")
    if p.shape != q.shape or r.shape != q.shape:
        raise ValueError(f"p, q and null have shapes {p.shape}, {q.shape}, {r.shape}; expected equal.")
    if spread > 0:  # one null per node, all bounded at once
        bounds = np.exp(np.minimum(0.0, _lr_log_bounds(score, p, q, _shifted(r, spread * _NODES[:, None]))))
        return float(min(1.0, np.dot(_WEIGHTS, bounds)))
    return float(math.exp(min(0.0, _lr_log_bounds(score, p, q, r[None])[0])))


def _lr_log_bounds(score: float, p: np.ndarray, q: np.ndarray, nulls: np.ndarray) -> np.ndarray:
    """The log of :func:`likelihood_ratio_p_value`'s Chernoff bound (its smallest value
    over the λ grid) for each row of ``nulls`` (k, n): k bounds in one vectorised search."""
    hit, miss = np.log(p / q), np.log((1 - p) / (1 - q))
    with np.errstate(divide="ignore"):
        log_r, log_not_r = np.log(nulls), np.log1p(-nulls)
    # Round the score down by far more than its floating-point error, which λ up to 1,000
    # would otherwise turn into a bound a hair below the exact tail.
    score = float(score) - 1e-9 * (1.0 + abs(float(score)))

    def log_bound(rows, i):  # the log of the bound of each of ``rows`` at the grid's i-th λ (one each)
        lam = _LAMBDAS[i][:, None]
        return np.sum(np.logaddexp(log_r[rows] + lam * hit, log_not_r[rows] + lam * miss), axis=1) - lam[:, 0] * score

    # The log-MGF is convex in λ, so the bound is too: a binary search over the grid finds
    # its smallest value with about 18 evaluations instead of 300, for every row at once.
    low, high = np.zeros(len(nulls), int), np.full(len(nulls), len(_LAMBDAS) - 1)
    while np.any(low < high):
        rows = np.flatnonzero(low < high)
        middle = (low[rows] + high[rows]) // 2
        down = log_bound(rows, middle + 1) < log_bound(rows, middle)
        low[rows[down]] = middle[down] + 1
        high[rows[~down]] = middle[~down]
    return log_bound(np.arange(len(nulls)), low)


# The λ grid of likelihood_ratio_p_value's Chernoff bound: steps of 0.01 up to 3, then
# geometric up to 1,000. A suspect that matches (nearly) every weighted key has its best λ
# far above 3, where the bound tends to the exact tail (the product of the null's rates
# over the keys with weight): capped at 3, the source's own p-value on 100 keys came out
# about 7 times too large.
_LAMBDAS = np.unique(np.concatenate([np.linspace(0.0, 3.0, 301)[1:], np.geomspace(3.0, 1000.0, 150)]))


# --------------------------------------------------------------------------- null and threshold
@dataclasses.dataclass(frozen=True)
class Null:
    """How independent (reference) models behave on one fingerprint of ``n`` keys.

    ``reference_retentions`` are the retentions of the reference models on that
    fingerprint. ``p0``, the per-key match probability of the binomial null, is their
    pooled match rate with a half pseudo-count, ``(matches + 1/2) / (R n + 1)``, so that
    references that never match do not produce ``p0 = 0`` (and p-values of exactly 0).
    """

    reference_retentions: tuple[float, ...]
    n: int

    def __post_init__(self) -> None:
        retentions = tuple(float(r) for r in _scores(self.reference_retentions,
                                                     "reference_retentions"))
        if any(not 0.0 <= r <= 1.0 for r in retentions):
            raise ValueError("reference_retentions must lie in [0, 1].")
        object.__setattr__(self, "reference_retentions", retentions)
        n = _count(self.n, "n")
        if n == 0:
            raise ValueError("n (the number of fingerprints) must be at least 1.")
        object.__setattr__(self, "n", n)

    @classmethod
    def from_matches(cls, matches: np.ndarray) -> Null:
        """From a boolean (R, n) matrix: ``matches[r, i]`` iff reference r matched key i."""
        matches = np.asarray(matches)
        if matches.ndim != 2 or matches.size == 0:
            raise ValueError(
                f"matches must be a non-empty (references, fingerprints) matrix, got shape "
                f"{matches.shape}."
            )
        return cls(tuple(np.mean(matches.astype(bool), axis=1)), matches.shape[1])

    @property
    def p0(self) -> float:
        total = sum(round(r * self.n) for r in self.reference_retentions)
        return (total + 0.5) / (len(self.reference_retentions) * self.n + 1)

    def p_values(self, matches: int, n: int | None = None) -> tuple[float, float]:
        """``(binomial, empirical)`` p-values of ``matches`` agreeing keys out of ``n``."""
        n = self.n if n is None else _count(n, "n")
        if n != self.n:
            raise ValueError(
                f"the null was measured on {self.n} fingerprints but the suspect on {n}; "
                "measure the reference models on the same fingerprint."
            )
        matches = _count(matches, "matches")
        return (binomial_p_value(matches, n, self.p0),
                empirical_p_value(matches / n, self.reference_retentions))

    def p_value(self, matches: int, n: int | None = None) -> float:
        """The conservative p-value: the larger of the binomial and the empirical one."""
        return max(self.p_values(matches, n))


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A verification threshold θ and what is known about its false-positive rate.

    ``empirical_fpr``: fraction of the reference models with retention >= θ (at most
    ``alpha`` by construction). ``empirical_fpr_upper``: 95 % Clopper-Pearson upper
    bound on the true rate given that fraction of ``n_references`` (with 28
    references and none above θ, still about 0.10). ``binomial_fpr``:
    ``P[Binomial(n, p0) >= θ n]``, the rate under the (optimistic) binomial null;
    None when ``n`` was not given.
    """

    theta: float
    alpha: float
    empirical_fpr: float
    empirical_fpr_upper: float
    n_references: int
    n: int | None = None
    p0: float | None = None
    binomial_fpr: float | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return dataclasses.asdict(self)


def threshold_or_none(null: Scores | Null, alpha: float = DEFAULT_ALPHA) -> Threshold | None:
    """:func:`choose_threshold`, or None (with a logged reason) when no θ <= 1 keeps
    ``alpha``, e.g. when every reference retains the whole fingerprint."""
    try:
        return choose_threshold(null, alpha=alpha)
    except ValueError as err:
        log.warning("no threshold: %s", err)
        return None


def choose_threshold(null_retentions: Scores | Null, alpha: float = DEFAULT_ALPHA, n: int | None = None) -> Threshold:

    """The smallest threshold θ above all but a fraction ``alpha`` of the references.

    ``null_retentions``: retentions of reference models on the fingerprint, or a
    :class:`Null` (which also supplies ``n``). Let ``k = floor(alpha * R)`` be the
    number of references allowed at or above θ; θ is the smallest achievable
    retention (a multiple of ``1 / n`` when ``n`` is known) strictly above the
    ``(k + 1)``-th largest reference retention. Returns a :class:`Threshold` with the
    empirical false-positive rate, its upper confidence bound and the binomial bound
    at θ (``p0`` estimated from the references as in :class:`Null`).
    """
    alpha = _probability(alpha, "alpha")
    if isinstance(null_retentions, Null):
        null = null_retentions
        if n is not None and _count(n, "n") != null.n:
            raise ValueError(f"n={n} disagrees with the Null's n={null.n}.")
    else:
        values = _scores(null_retentions, "null_retentions")
        null = Null(tuple(values), n) if n is not None else None
    refs = np.sort(np.asarray(null.reference_retentions if null else values))[::-1]
    allowed = int(math.floor(alpha * refs.size + 1e-12))
    if allowed >= refs.size:
        raise ValueError(
            f"alpha={alpha} allows all {refs.size} references above the threshold; "
            "use a smaller alpha or more reference models."
        )
    bar = float(refs[allowed])  # θ must be strictly above this retention
    if null is not None:
        theta = (math.floor(bar * null.n + 1e-9) + 1) / null.n
    else:
        theta = float(np.nextafter(bar, np.inf))
    if theta > 1.0:
        raise ValueError(
            f"{allowed + 1} of the {refs.size} reference models retain the whole fingerprint, "
            f"so no threshold <= 1 keeps the false-positive rate at alpha={alpha}; use a "
            "larger alpha, a more conferrable fingerprint, or check the reference models."
        )
    above = int(np.sum(refs >= theta))
    result = dict(
        theta=theta, alpha=alpha, empirical_fpr=above / refs.size,
        empirical_fpr_upper=clopper_pearson_upper(above, refs.size),
        n_references=int(refs.size),
    )
    if null is not None:
        needed = math.ceil(theta * null.n - 1e-9)
        result.update(n=null.n, p0=null.p0,
                      binomial_fpr=binomial_p_value(needed, null.n, null.p0))
    return Threshold(**result)
