"""Evaluation shared by Tables III–VI, the verification figure and the non-evasiveness game.

* :func:`group_rows` (Tables III / IV): per group of the zoo, the min–max brackets of
  test accuracy, fidelity and fingerprint retention.
* :func:`removal_rows` (Tables V / VI): every removal attack of :mod:`cae.removal`
  applied to the source, with the paper's numbers beside ours.
* :func:`verification_stats`: ROC / AUC of retention for derived models vs independent
  references, TPR at 1 % FPR, the threshold θ with its false-positive bound, and
  p-values of every suspect (empirical and binomial, both reported).
* :func:`detector_game` (Section V-A, non-evasiveness): can a small CNN tell C-IGM
  fingerprints from benign D1 inputs?
* :func:`preprocessing_rows` and :func:`preprocessing_separation` (beyond the paper):
  the source, and every suspect, behind the input transformations of
  :mod:`cae.preprocessing`.

Fidelity follows the paper: the accuracy of a model on D1 inputs labelled by the source
(a fixed random sample of ``n`` D1 images, the same for every model). Test accuracy is
on the fixed test sample ``zoo.test_subset(dataset, preset.evaluate_on)``, the one the
zoo's metrics use.
"""

import logging

import numpy as np

from cae import data, experiments, fingerprint, models, paper as quoted, preprocessing, presets, removal, stats, zoo

log = logging.getLogger(__name__)

FIDELITY_SEED = 11
GROUP_NAMES = {
    "train_surrogates": ("training", "surrogate"), "train_references": ("training", "reference"),
    "valid_surrogates": ("validation", "surrogate"), "valid_references": ("validation", "reference"),
    "test_surrogates": ("testing", "surrogate"), "test_references": ("testing", "reference"),
}
MAX_ACCURACY_DROP = experiments.MAX_ACCURACY_DROP
TRAINING_REFERENCES_NOTE = (
    "Training references are not used as negatives: Extract keeps only examples that no training "
    "reference classifies as the key (τ = 1), so their retention is 0 by construction; the "
    "independent references are the testing references (and extra ones), which never influenced the "
    "fingerprint. θ and the p-values come from the fingerprint's calibration models.")


# --------------------------------------------------------------------------- measurements
def _labels(model, x):
    return zoo.predict(model, x).argmax(axis=1)


def d1_sample(source, dataset, spec, n, seed=FIDELITY_SEED):
    """A fixed sample of ``n`` D1 images (float) and the source's labels on them."""
    d1 = zoo.split_of(dataset, spec)
    n = len(d1) if not n else min(int(n), len(d1))
    pick = np.sort(np.random.default_rng(seed).permutation(d1)[:n])
    x = data.to_float(dataset.x_train[pick])
    return x, _labels(source, x)


def fidelity_on_d1(model, source, dataset, spec, n):
    """Accuracy of ``model`` on ``n`` D1 inputs labelled by ``source`` (``spec`` is the
    source's spec, which fixes D1)."""
    x, labels = d1_sample(source, dataset, spec, n)
    return float(np.mean(_labels(model, x) == labels))


def test_accuracy(model, dataset, n=None):
    """Accuracy on the fixed test sample of ``n`` images (all when ``n`` is falsy)."""
    pick = zoo.test_subset(dataset, n or None)
    return float(np.mean(_labels(model, data.to_float(dataset.x_test[pick])) == dataset.y_test[pick]))


class _Meter:
    """Measures test accuracy, fidelity and retention, with the shared samples loaded once."""

    def __init__(self, context, fp):
        preset, dataset = context.preset, context.dataset
        self.fp = fp
        n = preset.evaluate_on or None
        self.x_d1, self.y_d1 = d1_sample(context.models["source"], dataset, context.specs["source"], n)
        pick = zoo.test_subset(dataset, n)
        self.x_test, self.y_test = data.to_float(dataset.x_test[pick]), dataset.y_test[pick]

    def __call__(self, model, mapping=None):
        """``mapping``: for a model of another label set (transfer learning), the map of
        the source's classes to its own; labels, fidelity and keys are mapped first."""
        if mapping is None:
            result, mapped = fingerprint.verify(model, self.fp), (lambda labels: labels)
        else:
            result, mapped = removal.verify_transfer(model, self.fp, mapping), (lambda labels: mapping[labels])
        return {"test_accuracy": float(np.mean(_labels(model, self.x_test) == mapped(self.y_test))),
                "fidelity": float(np.mean(_labels(model, self.x_d1) == mapped(self.y_d1))),
                "retention": result.retention, "matches": result.matches}


def _bracket(values):
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if np.isclose(lo, hi) else f"{lo:.3f}–{hi:.3f}"


# --------------------------------------------------------------------------- Table III / IV
def group_rows(context, fp):
    """Table III / IV: one row per (group, architecture) plus the source.

    Each row has the min–max brackets as text (``test accuracy``, ``fidelity``,
    ``retention``) and the numbers (``<metric>_min`` / ``<metric>_max``), and the
    paper's retention bracket where the paper gives one.
    """
    meter = _Meter(context, fp)
    paper = quoted.GROUP_RETENTION.get(presets.paper_dataset(context.preset.dataset), {})
    source = meter(context.models["source"])
    rows = [{"split": "source", "role": "source", "architecture": context.specs["source"].architecture,
             "models": 1, **{k: f"{source[k]:.3f}" for k in ("test_accuracy", "fidelity", "retention")},
             **{f"{k}_{m}": source[k] for k in ("test_accuracy", "fidelity", "retention") for m in ("min", "max")},
             "paper retention": None}]
    for group in experiments.GROUPS:
        split, role = GROUP_NAMES[group]
        measured = {}
        for spec, model in zip(context.specs.get(group, ()), context.models.get(group, ())):
            measured.setdefault(spec.architecture, []).append(meter(model))
        for arch, items in measured.items():
            row = {"split": split, "role": role, "architecture": arch, "models": len(items)}
            for key in ("test_accuracy", "fidelity", "retention"):
                values = [m[key] for m in items]
                row.update({key: _bracket(values), f"{key}_min": min(values), f"{key}_max": max(values)})
            row["paper retention"] = paper.get(group)
            rows.append(row)
    return rows


GROUP_COLUMNS = ["split", "role", "architecture", "models", "test_accuracy", "fidelity", "retention",
                 "paper retention"]


# --------------------------------------------------------------------------- Table V / VI
def verified(result):
    """A table's "verified" cell for a :class:`cae.fingerprint.VerifyResult`: "yes" when
    verification calls the model a surrogate; "NO (broken)" when its score is below θ
    (Alg. 1); "NO (inconclusive, p-value ...)" when it is at or above θ but the p-value
    is too large for a verdict (the fingerprint is intact, the evidence is not)."""
    if result.is_surrogate:
        return "yes"
    if result.score < result.threshold:
        return "NO (broken)"
    return "NO (inconclusive)" if result.p_value is None else f"NO (inconclusive, p-value {result.p_value:.3g})"


def removal_models(context, attacks=removal.PAPER_ATTACKS, verbose=False):
    """``{attack: derived model}``, trained or loaded through ``context.store``
    (``attacks``: names of :data:`cae.removal.REMOVAL_ATTACKS`, by default the paper's)."""
    return {name: removal.remove(name, context.specs["source"], context.preset, context.store, verbose=verbose)
            for name in attacks}


def removal_rows(context, fp, attacks=removal.PAPER_ATTACKS, models=None):
    """Table V / VI: test accuracy, fidelity and retention of every removal attack's model,
    beside the paper's. ``models``: already derived models by attack (else trained or
    loaded). Column ``verified``: whether :func:`cae.fingerprint.verify` still calls
    the model a surrogate (with the fingerprint's calibration). A transfer-learning
    model is measured in its task's label space (:func:`cae.removal.verify_transfer`:
    test labels, the source's labels and the keys mapped); it has no calibrated verdict."""
    meter = _Meter(context, fp)
    paper = quoted.REMOVAL[presets.paper_dataset(context.preset.dataset)]
    source = meter(context.models["source"])
    rows = [{"attack": "Source (no attack)", "family": "–", **source, "Δ accuracy": 0.0}]
    for name in attacks:
        model = (models or {}).get(name)
        if model is None:
            model = removal.remove(name, context.specs["source"], context.preset, context.store, verbose=False)
        mapping = removal.task_mapping(removal.removal_spec(name, context.specs["source"], context.preset)) \
            if name in removal.OTHER_TASK else None
        row = {"attack": removal.REMOVAL_ATTACKS[name].name, "family": removal.REMOVAL_ATTACKS[name].family,
               **meter(model, mapping)}
        # Against the source's accuracy on the same labels (a transferred model's: mapped).
        row["Δ accuracy"] = row["test_accuracy"] - (source["test_accuracy"] if mapping is None else float(
            np.mean(mapping[_labels(context.models["source"], meter.x_test)] == mapping[meter.y_test])))
        row.update(zip(("paper accuracy", "paper fidelity", "paper retention"), paper.get(name, (None,) * 3)))
        if mapping is not None:
            row["verified"] = f"– (task of {int(mapping.max()) + 1} classes; retention through the mapping)"
        else:
            row["verified"] = verified(fingerprint.verify(model, fp))
        rows.append(row)
    return rows


REMOVAL_COLUMNS = ["attack", "family", "test_accuracy", "fidelity", "retention", "Δ accuracy", "verified",
                   "paper accuracy", "paper fidelity", "paper retention"]


# --------------------------------------------------------------------------- input preprocessing
def _preprocessing_conditions(sweeps):
    """``("none", "–")`` (untransformed) then every (kind, strength) of ``sweeps``
    (default :data:`cae.preprocessing.SWEEPS`)."""
    return [("none", "–")] + [(k, s) for k, strengths in (sweeps or preprocessing.SWEEPS).items() for s in strengths]


def _behind(model, kind, strength):
    return model if kind == "none" else preprocessing.wrap(model, kind, strength)


def preprocessing_rows(context, fp, sweeps=None, threshold=None, references=None):
    """Beyond the paper: the source behind each input transformation of
    :mod:`cae.preprocessing` (``sweeps``: ``{kind: strengths}``, default
    :data:`cae.preprocessing.SWEEPS`), one row per strength: test accuracy, fidelity,
    retention, the accuracy it costs, and the highest retention of a reference behind
    the same transformation (a transformation that lifts references above θ makes
    false accusations). ``references``: the independent models (default: the testing
    references). With ``threshold``: whether verification still flags the transformed
    source, and how many transformed references it would flag. The first row is the
    untransformed source."""
    meter = _Meter(context, fp)
    theta = getattr(threshold, "theta", threshold)
    references = list(context.models["test_references"] if references is None else references)
    rows = []
    for kind, strength in _preprocessing_conditions(sweeps):
        source = _behind(context.models["source"], kind, strength)
        measured = meter(source)
        verdicts = [fingerprint.verify(_behind(r, kind, strength), fp, threshold=theta) for r in references]
        refs = [v.retention for v in verdicts]
        own = fingerprint.verify(source, fp, threshold=theta)
        row = {"transformation": kind, "strength": strength, **measured,
               "Δ accuracy": measured["test_accuracy"] - (rows[0] if rows else measured)["test_accuracy"],
               "references' retention (max)": max(refs), "references' retentions": refs,
               "verified": verified(own),
               "p-value": getattr(own, "p_value", None),
               "references flagged": f"{sum(v.is_surrogate for v in verdicts)}/{len(refs)}"}
        rows.append(row)
    return rows


def preprocessing_separation(fp, derived, references, sweeps=None, threshold=None):
    """Beyond the paper: verification when every suspect, derived or independent, sits
    behind the same input transformation. One row per transformation and strength
    (the first untransformed): the ROC-AUC of retention, derived models (``derived``,
    ``{name: model}`` or a list) against ``references``, and how many of each ``threshold``
    flags."""
    derived, references = [m for _, m in _named(derived, "derived")], list(references)
    theta = getattr(threshold, "theta", threshold)
    statistics = ("retention", "lr") if fp.calibration is not None and theta is None else ("retention",)
    rows = []
    for kind, strength in _preprocessing_conditions(sweeps):
        results = {statistic: [[fingerprint.verify(_behind(m, kind, strength), fp, threshold=theta,
                                                   statistic=statistic) for m in group]
                               for group in (derived, references)] for statistic in statistics}
        pos, neg = (np.array([r.retention for r in group]) for group in results["retention"])
        row = {"transformation": kind, "strength": strength, "AUC": stats.roc_auc(pos, neg),
               "derived retention (median)": float(np.median(pos)), "references' retention (max)": float(neg.max())}
        for statistic, (positives, negatives) in results.items():
            suffix = "" if statistic == "retention" else " (LR)"
            if statistic == "lr":
                row["AUC (LR)"] = stats.roc_auc([r.score for r in positives], [r.score for r in negatives])
            row[f"derived flagged{suffix}"] = f"{sum(r.is_surrogate for r in positives)}/{len(positives)}"
            row[f"references flagged{suffix}"] = f"{sum(r.is_surrogate for r in negatives)}/{len(negatives)}"
        rows.append(row)
    return rows


SEPARATION_COLUMNS = ["transformation", "strength", "AUC", "derived retention (median)", "derived flagged",
                      "references' retention (max)", "references flagged", "AUC (LR)", "derived flagged (LR)",
                      "references flagged (LR)"]
PREPROCESSING_COLUMNS = ["transformation", "strength", "test_accuracy", "fidelity", "retention", "Δ accuracy",
                         "verified", "p-value", "references' retention (max)", "references flagged"]


# --------------------------------------------------------------------------- verification
def _named(models, prefix):
    if isinstance(models, dict):
        return list(models.items())
    return [(f"{prefix} {i}", m) for i, m in enumerate(models)]


def verification_stats(context, fp, derived_models, reference_models, accuracy_drop=None,
                       max_drop=MAX_ACCURACY_DROP):
    """Every suspect verified as a model owner would (:func:`cae.fingerprint.verify`,
    with the fingerprint's calibration: θ and p-values from the calibration models,
    which the suspects here are not unless the preset has no validation models), and
    the ROC of derived models (positives) against independent references (negatives).

    ``derived_models`` / ``reference_models``: dicts ``{name: model}`` or lists. For
    each statistic (retention, and the likelihood ratio when the fingerprint is
    calibrated): AUC, TPR at 1 % FPR, how many derived models and references the verdict
    calls surrogates. ``accuracy_drop`` (``{derived name: source's test accuracy - its
    test accuracy}``) adds the same over the derived models that lost at most
    ``max_drop`` of accuracy, the stolen models an adversary would deploy (``_usable``).
    """
    calibration = fp.calibration
    statistics = ("retention", "lr") if calibration is not None else ("retention",)
    derived = [(n, {s: fingerprint.verify(m, fp, statistic=s) for s in statistics})
               for n, m in _named(derived_models, "derived")]
    refs = [(n, {s: fingerprint.verify(m, fp, statistic=s) for s in statistics})
            for n, m in _named(reference_models, "reference")]
    if not derived or not refs:
        raise ValueError(f"verification_stats needs derived and reference models; got {len(derived)} "
                         f"and {len(refs)}.")
    kept = np.ones(len(derived), bool)
    if accuracy_drop is not None:
        missing = sorted(set(n for n, _ in derived) - set(accuracy_drop))
        if missing:
            raise ValueError(f"accuracy_drop lacks derived models {missing}; give every derived model's drop.")
        kept = np.array([accuracy_drop[n] <= max_drop + 1e-12 for n, _ in derived])
    out = {"positives": len(derived), "negatives": len(refs), "statistics": statistics,
           "calibration": calibration.models if calibration is not None else None}
    if accuracy_drop is not None:
        out.update(positives_usable=int(kept.sum()), max_accuracy_drop=max_drop)
    for statistic in statistics:
        suffix = "" if statistic == "retention" else "_lr"
        pos = np.array([r[statistic].score for _, r in derived])
        neg = np.array([r[statistic].score for _, r in refs])
        out[f"threshold{suffix}"] = derived[0][1][statistic].threshold
        out[f"auc{suffix}"] = stats.roc_auc(pos, neg)
        out[f"tpr_at_1_fpr{suffix}"] = stats.tpr_at_fpr(pos, neg, 0.01)
        out[f"derived_flagged{suffix}"] = sum(r[statistic].is_surrogate for _, r in derived)
        out[f"references_flagged{suffix}"] = sum(r[statistic].is_surrogate for _, r in refs)
        if statistic == "retention":
            out["fpr"], out["tpr"], out["thresholds"] = stats.roc_curve(pos, neg)
        if accuracy_drop is not None:
            out[f"auc_usable{suffix}"] = stats.roc_auc(pos[kept], neg) if kept.any() else None
            out[f"tpr_at_1_fpr_usable{suffix}"] = stats.tpr_at_fpr(pos[kept], neg, 0.01) if kept.any() else None
            out[f"derived_flagged_usable{suffix}"] = sum(r[statistic].is_surrogate
                                                         for (_, r), k in zip(derived, kept) if k)
    suspects = []
    for kind, items in (("derived", derived), ("reference", refs)):
        for name, results in items:
            first = results["retention"]
            row = {"model": name, "kind": kind, "retention": first.retention, "matches": f"{first.matches}/{fp.n}",
                   "verdict": first.verdict, "p-value": first.p_value, "p-value (derived)": first.p_value_derived}
            if "lr" in results:
                row.update({"LR": results["lr"].score, "verdict (LR)": results["lr"].verdict,
                            "p-value (LR)": results["lr"].p_value})
            if accuracy_drop is not None:
                row["accuracy drop"] = accuracy_drop.get(name) if kind == "derived" else None
            suspects.append(row)
    out["suspects"] = suspects
    out["note"] = TRAINING_REFERENCES_NOTE
    return out


# --------------------------------------------------------------------------- non-evasiveness
def detector_game(context, eps_values=(0.05, 0.15, 0.25), steps=400, train_fraction=0.7, seed=0):
    """Section V-A: train a small CNN to tell C-IGM fingerprints from benign D1 inputs.

    The detector trains for about ``steps`` batches of 32, however few the images:
    BatchNorm's moving statistics need a few hundred steps, and 25 steps left it at
    chance on its own training set.

    For each ε: the fingerprints (the C-IGM examples that Extract keeps, conferrability
    on the training models >= the preset's τ) and as many
    benign D1 images that were not attack inputs, split ``train_fraction`` / rest
    (stratified); returns one row per ε with the detector's held-out accuracy
    (0.5 = cannot tell them apart; 1.0 = the adversary can detect and evade queries).
    """
    import keras

    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction={train_fraction!r}; expected a number in (0, 1).")
    d1 = np.setdiff1d(zoo.split_of(context.dataset, context.specs["source"]), context.inputs)
    rows = []
    for eps in eps_values:
        result = experiments.run_attack(context, "cigm", eps)
        x_fp = result["x_adv"][experiments.fingerprint_mask(result, context.preset.tau)]  # Alg. 2's output
        k = len(x_fp)
        if k < 4:
            log.warning("detector game at eps=%s: only %d fingerprints; skipped", eps, k)
            rows.append({"eps": eps, "fingerprints": k, "train": 0, "held out": 0,
                         "held-out accuracy": float("nan"), "train accuracy": float("nan")})
            continue
        rng = np.random.default_rng(seed)
        benign = data.to_float(context.dataset.x_train[np.sort(rng.choice(d1, size=k, replace=False))])
        train, test = [], []
        for cls in (0, 1):  # stratified split
            order = rng.permutation(k)
            cut = max(1, int(round(train_fraction * k)))
            train += [(cls, i) for i in order[:cut]]
            test += [(cls, i) for i in order[cut:]]
        pools = (benign, x_fp)

        def stack(items):
            return (np.stack([pools[c][i] for c, i in items]).astype(np.float32),
                    np.eye(2, dtype=np.float32)[[c for c, _ in items]])

        (x_tr, y_tr), (x_te, y_te) = stack(train), stack(test)
        detector = models.build("cnn", 2, seed=seed)
        detector.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        epochs = max(1, int(np.ceil(int(steps) / np.ceil(len(x_tr) / 32))))
        detector.fit(x_tr, y_tr, epochs=epochs, batch_size=32, shuffle=True, verbose=0)
        acc = lambda x, y: float(np.mean(_labels(detector, x) == y.argmax(axis=1)))  # noqa: E731
        rows.append({"eps": eps, "fingerprints": k, "train": len(x_tr), "held out": len(x_te),
                     "held-out accuracy": acc(x_te, y_te), "train accuracy": acc(x_tr, y_tr)})
        log.info("detector game eps=%s: held-out accuracy %.3f on %d", eps, rows[-1]["held-out accuracy"], len(x_te))
    return rows
