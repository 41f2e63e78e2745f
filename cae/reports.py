"""Reports: the rows and notes of every table and figure, built from the runner's outputs.

The runner (:mod:`cae.experiments`: specs, zoo, attack runs, Extract) and the removal
attacks (:mod:`cae.removal`) compute and cache; the measurements (:mod:`cae.evaluation`:
test accuracy, fidelity, retention) read models; this module lays their results out
beside the paper's numbers (:mod:`cae.paper`), one function per table or figure, and
:mod:`cae.tables` writes them.

* :func:`table2_rows`, :func:`table2_notes` (Table II): transferability and
  conferrability of every attack of :data:`cae.attacks.REGISTRY`.
* :func:`group_rows` (Tables III / IV): per group of the zoo, the min–max brackets of
  test accuracy, fidelity and fingerprint retention.
* :func:`removal_rows` (Tables V / VI): every removal attack of :mod:`cae.removal`
  applied to the source, with the paper's numbers beside ours.
* :func:`verification_stats`: ROC / AUC of retention for derived models vs independent
  references, TPR at 1 % FPR, the threshold θ with its false-positive bound, and
  p-values of every suspect (empirical and binomial, both reported).
* :func:`preprocessing_rows` and :func:`preprocessing_separation` (beyond the paper):
  the source, and every suspect, behind the input transformations of
  :mod:`cae.preprocessing`.
* :func:`fingerprint_row` (Figures 8–10): a fingerprint's size, perturbation and
  calibration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cae import attacks, data, evaluation, experiments, fingerprint, paper as quoted, preprocessing, presets, removal, stats

if TYPE_CHECKING:
    import keras

# A table's rows: one dict per row, column name -> value.
Rows = list[dict[str, Any]]
# Suspects by name, or a list of them (named "<kind> <i>").
Suspects = Mapping[str, fingerprint.Suspect] | Sequence[fingerprint.Suspect]

GROUP_NAMES = {
    "train_surrogates": ("training", "surrogate"), "train_references": ("training", "reference"),
    "valid_surrogates": ("validation", "surrogate"), "valid_references": ("validation", "reference"),
    "test_surrogates": ("testing", "surrogate"), "test_references": ("testing", "reference"),
}
TRAINING_REFERENCES_NOTE = (
    "Training references are not used as negatives: Extract keeps only examples that no training "
    "reference classifies as the key (τ = 1), so their retention is 0 by construction; the "
    "independent references are the testing references (and extra ones), which never influenced the "
    "fingerprint. θ and the p-values come from the fingerprint's calibration models.")


def _bracket(values):
    lo, hi = min(values), max(values)
    return f"{lo:.3f}" if np.isclose(lo, hi) else f"{lo:.3f}–{hi:.3f}"


# --------------------------------------------------------------------------- Table III / IV
BESIDE = "retention (preset's fingerprint)"


def _beside_retention(fp, model):
    """The retention of ``model`` on ``fp`` alone (no verdict, no p-values to compute)."""
    return float(np.mean(fingerprint.predict_labels(model, fp.x, fp.num_classes)[0] == fp.keys))


def group_rows(context: experiments.Context, fp: fingerprint.Fingerprint,
               beside: fingerprint.Fingerprint | None = None) -> Rows:
    """Table III / IV: one row per (group, architecture) plus the source.

    Each row has the min–max brackets as text (``test accuracy``, ``fidelity``,
    ``retention``) and the numbers (``<metric>_min`` / ``<metric>_max``), and the
    paper's retention bracket where the paper gives one. ``beside``: another
    fingerprint (``cae extract``'s, with the preset's natural mistakes) whose retention
    bracket is added as column :data:`BESIDE`.
    """
    meter = evaluation.Meter(context, fp)
    paper = quoted.GROUP_RETENTION.get(presets.paper_dataset(context.preset.dataset), {})
    source = meter(context.models["source"])
    rows = [{"split": "source", "role": "source", "architecture": context.specs["source"].architecture,
             "models": 1, **{k: f"{source[k]:.3f}" for k in ("test_accuracy", "fidelity", "retention")},
             **{f"{k}_{m}": source[k] for k in ("test_accuracy", "fidelity", "retention") for m in ("min", "max")},
             "paper retention": None}]
    if beside is not None:
        rows[0][BESIDE] = f"{_beside_retention(beside, context.models['source']):.3f}"
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
            if beside is not None:
                row[BESIDE] = _bracket([_beside_retention(beside, m) for s, m in
                                        zip(context.specs[group], context.models[group]) if s.architecture == arch])
            rows.append(row)
    return rows


GROUP_COLUMNS = ["split", "role", "architecture", "models", "test_accuracy", "fidelity", "retention",
                 "paper retention"]


# --------------------------------------------------------------------------- Table V / VI
def verified(result: fingerprint.VerifyResult) -> str:
    """A table's "verified" cell for a :class:`cae.fingerprint.VerifyResult`: "yes" when
    verification calls the model a surrogate; "NO (broken)" when its score is below θ
    (Alg. 1); "NO (inconclusive, p-value ...)" when it is at or above θ but the p-value
    is too large for a verdict (the fingerprint is intact, the evidence is not)."""
    if result.is_surrogate:
        return "yes"
    if result.score < result.threshold:
        return "NO (broken)"
    return "NO (inconclusive)" if result.p_value is None else f"NO (inconclusive, p-value {result.p_value:.3g})"



def removal_rows(context: experiments.Context, fp: fingerprint.Fingerprint, attacks: Iterable[str] = removal.PAPER_ATTACKS,
                 models: Mapping[str, keras.Model] | None = None, beside: fingerprint.Fingerprint | None = None) -> Rows:
    """Table V / VI: test accuracy, fidelity and retention of every removal attack's model,
    beside the paper's. ``models``: already derived models by attack (else trained or
    loaded). Column ``verified``: whether :func:`cae.fingerprint.verify` still calls
    the model a surrogate (with the fingerprint's calibration). A transfer-learning
    model is measured in its task's label space (:func:`cae.removal.verify_transfer`:
    test labels, the source's labels and the keys mapped); it has no calibrated verdict.
    ``beside``: another fingerprint (``cae extract``'s, with the preset's natural
    mistakes): its retention (column :data:`BESIDE`) and verdict ("verified (preset's)")."""
    meter = evaluation.Meter(context, fp)
    paper = quoted.REMOVAL[presets.paper_dataset(context.preset.dataset)]
    source = meter(context.models["source"])
    rows = [{"attack": "Source (no attack)", "family": "–", **source, "Δ accuracy": 0.0}]
    if beside is not None:
        rows[0][BESIDE] = _beside_retention(beside, context.models["source"])
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
            np.mean(mapping[evaluation.predicted_labels(context.models["source"], meter.x_test)] == mapping[meter.y_test])))
        row.update(zip(("paper accuracy", "paper fidelity", "paper retention"), paper.get(name, (None,) * 3)))
        if mapping is not None:
            row["verified"] = f"– (task of {int(mapping.max()) + 1} classes; retention through the mapping)"
        else:
            row["verified"] = verified(fingerprint.verify(model, fp))
            if beside is not None:
                result = fingerprint.verify(model, beside)
                row[BESIDE], row["verified (preset's)"] = result.retention, verified(result)
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


def preprocessing_rows(context: experiments.Context, fp: fingerprint.Fingerprint,
                       sweeps: Mapping[str, Sequence[float]] | None = None,
                       threshold: float | stats.Threshold | None = None,
                       references: Iterable[keras.Model] | None = None) -> Rows:
    """Beyond the paper: the source behind each input transformation of
    :mod:`cae.preprocessing` (``sweeps``: ``{kind: strengths}``, default
    :data:`cae.preprocessing.SWEEPS`), one row per strength: test accuracy, fidelity,
    retention, the accuracy it costs, and the highest retention of a reference behind
    the same transformation (a transformation that lifts references above θ makes
    false accusations). ``references``: the independent models (default: the testing
    references). With ``threshold``: whether verification still flags the transformed
    source, and how many transformed references it would flag. The first row is the
    untransformed source."""
    meter = evaluation.Meter(context, fp)
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


def preprocessing_separation(fp: fingerprint.Fingerprint, derived: Mapping[str, keras.Model] | Sequence[keras.Model],
                             references: Iterable[keras.Model], sweeps: Mapping[str, Sequence[float]] | None = None,
                             threshold: float | stats.Threshold | None = None) -> Rows:
    """Beyond the paper: verification when every suspect, derived or independent, sits
    behind the same input transformation. One row per transformation and strength
    (the first untransformed): the ROC-AUC of retention, derived models (``derived``,
    ``{name: model}`` or a list) against ``references``, and how many of each ``threshold``
    flags."""
    derived, references = [m for _, m in _named(derived, "derived")], list(references)
    theta = getattr(threshold, "theta", threshold)
    # θ given: the default statistic's (the others have their own scales).
    statistics = fingerprint.available_statistics(fp.calibration) if theta is None else (fingerprint.DEFAULT_STATISTIC,)
    rows = []
    for kind, strength in _preprocessing_conditions(sweeps):
        results = {statistic: [[fingerprint.verify(_behind(m, kind, strength), fp, threshold=theta,
                                                   statistic=statistic) for m in group]
                               for group in (derived, references)] for statistic in statistics}
        pos, neg = (np.array([r.retention for r in group]) for group in results[fingerprint.DEFAULT_STATISTIC])
        row = {"transformation": kind, "strength": strength, "AUC": stats.roc_auc(pos, neg),
               "derived retention (median)": float(np.median(pos)), "references' retention (max)": float(neg.max())}
        for statistic, (positives, negatives) in results.items():
            spec = fingerprint.STATISTICS[statistic]
            if spec.name != fingerprint.DEFAULT_STATISTIC:
                row[spec.column("AUC")] = stats.roc_auc([r.score for r in positives], [r.score for r in negatives])
            row[spec.column("derived flagged")] = f"{sum(r.is_surrogate for r in positives)}/{len(positives)}"
            row[spec.column("references flagged")] = f"{sum(r.is_surrogate for r in negatives)}/{len(negatives)}"
        rows.append(row)
    return rows


def separation_columns() -> list[str]:
    """The columns of :func:`preprocessing_separation`'s table: the default statistic's,
    then AUC and flagged counts of every other registered statistic."""
    return ["transformation", "strength", "AUC", "derived retention (median)", "derived flagged",
            "references' retention (max)", "references flagged",
            *(s.column(heading) for s in fingerprint.STATISTICS.values() if s.name != fingerprint.DEFAULT_STATISTIC
              for heading in ("AUC", "derived flagged", "references flagged"))]

PREPROCESSING_COLUMNS = ["transformation", "strength", "test_accuracy", "fidelity", "retention", "Δ accuracy",
                         "verified", "p-value", "references' retention (max)", "references flagged"]


# --------------------------------------------------------------------------- verification
def _named(models, prefix):
    if isinstance(models, dict):
        return list(models.items())
    return [(f"{prefix} {i}", m) for i, m in enumerate(models)]


def verification_stats(context: experiments.Context, fp: fingerprint.Fingerprint, derived_models: Suspects,
                       reference_models: Suspects, accuracy_drop: Mapping[str, float] | None = None,
                       max_drop: float = experiments.MAX_ACCURACY_DROP) -> dict[str, Any]:
    """Every suspect verified as a model owner would (:func:`cae.fingerprint.verify`,
    with the fingerprint's calibration: θ and p-values from the calibration models,
    which the suspects here are not unless the preset has no validation models), and
    the ROC of derived models (positives) against independent references (negatives).

    ``derived_models`` / ``reference_models``: dicts ``{name: model}`` or lists. For
    each statistic (:data:`cae.fingerprint.STATISTICS`; retention, and the likelihood
    ratio when the fingerprint is calibrated): AUC, TPR at 1 % FPR, how many derived models and references the verdict
    calls surrogates. ``accuracy_drop`` (``{derived name: source's test accuracy - its
    test accuracy}``) adds the same over the derived models that lost at most
    ``max_drop`` of accuracy, the stolen models an adversary would deploy (``_usable``).
    """
    calibration = fp.calibration
    statistics = fingerprint.available_statistics(calibration)
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
        suffix = fingerprint.STATISTICS[statistic].suffix
        pos = np.array([r[statistic].score for _, r in derived])
        neg = np.array([r[statistic].score for _, r in refs])
        out[f"threshold{suffix}"] = derived[0][1][statistic].threshold
        out[f"auc{suffix}"] = stats.roc_auc(pos, neg)
        out[f"tpr_at_1_fpr{suffix}"] = stats.tpr_at_fpr(pos, neg, 0.01)
        out[f"derived_flagged{suffix}"] = sum(r[statistic].is_surrogate for _, r in derived)
        out[f"references_flagged{suffix}"] = sum(r[statistic].is_surrogate for _, r in refs)
        if statistic == fingerprint.DEFAULT_STATISTIC:
            out["fpr"], out["tpr"], out["thresholds"] = stats.roc_curve(pos, neg)
        if accuracy_drop is not None:
            out[f"auc_usable{suffix}"] = stats.roc_auc(pos[kept], neg) if kept.any() else None
            out[f"tpr_at_1_fpr_usable{suffix}"] = stats.tpr_at_fpr(pos[kept], neg, 0.01) if kept.any() else None
            out[f"derived_flagged_usable{suffix}"] = sum(r[statistic].is_surrogate
                                                         for (_, r), k in zip(derived, kept) if k)
    suspects = []
    for kind, items in (("derived", derived), ("reference", refs)):
        for name, results in items:
            first = results[fingerprint.DEFAULT_STATISTIC]
            row = {"model": name, "kind": kind, "retention": first.retention, "matches": f"{first.matches}/{fp.n}",
                   "verdict": first.verdict, "p-value": first.p_value, "p-value (derived)": first.p_value_derived}
            for statistic, result in results.items():
                spec = fingerprint.STATISTICS[statistic]
                if spec.name != fingerprint.DEFAULT_STATISTIC:
                    row.update({spec.label: result.score, spec.column("verdict"): result.verdict,
                                spec.column("p-value"): result.p_value})
            if accuracy_drop is not None:
                row["accuracy drop"] = accuracy_drop.get(name) if kind == "derived" else None
            suspects.append(row)
    out["suspects"] = suspects
    out["note"] = TRAINING_REFERENCES_NOTE
    return out


def key_group_shifts(fp: fingerprint.Fingerprint, derived_models: Suspects,
                     reference_models: Suspects) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Where each model sits, per group of keys (:func:`cae.fingerprint.key_groups`: the
    attack's examples, the natural mistakes): its retention of the group and its
    model-level shift, the log-odds by which it agrees with the group's keys more (> 0)
    or less than the calibration references' per-key rates say
    (:func:`cae.stats.model_shift`). Verdicts fail where independent models spread as
    widely as derived ones sit above them; this shows which keys that is.

    Rows: each calibration reference (against the others' rates: leave-one-out, when
    there are two or more), each calibration surrogate, then ``derived_models`` and
    ``reference_models`` (dicts ``{name: model}`` or lists). Also returns, per group, the
    calibration references' spread: the root mean square of their leave-one-out shifts
    (None with one reference)."""
    calibration = fp.calibration
    if calibration is None:
        raise ValueError("key_group_shifts needs a calibrated fingerprint (cae extract makes one).")
    groups = fingerprint.key_groups(fp)
    references = calibration.reference_matches
    rates = {g: stats.match_rates(references[:, keys]) for g, keys in groups.items()}

    def row(name, kind, matches, rates_of):
        out = {"model": name, "kind": kind}
        for g, keys in groups.items():
            out[f"retention ({g})"] = float(matches[keys].mean())
        for g, keys in groups.items():
            out[f"shift ({g})"] = stats.model_shift(matches[keys], rates_of[g])
        return out

    rows, spread = [], dict.fromkeys(groups)
    if len(references) >= 2:
        shifts = {g: stats.left_out_shifts(references[:, keys]) for g, keys in groups.items()}
        spread = {g: float(np.sqrt(np.mean(np.square(values)))) for g, values in shifts.items()}
        for i, matches in enumerate(references):
            rows.append({"model": f"calibration reference {i}", "kind": "calibration reference",
                         **{f"retention ({g})": float(matches[keys].mean()) for g, keys in groups.items()},
                         **{f"shift ({g})": float(shifts[g][i]) for g in groups}})
    rows += [row(f"calibration surrogate {i}", "calibration surrogate", m, rates)
             for i, m in enumerate(calibration.surrogate_matches)]
    for kind, models in (("derived", derived_models), ("reference", reference_models)):
        for name, model in _named(models, kind):
            rows.append(row(name, kind, fingerprint.predict_labels(model, fp.x, fp.num_classes)[0] == fp.keys, rates))
    return rows, spread


def other_aucs(result: Mapping[str, Any]) -> str:
    """``", likelihood ratio 0.912"``: the AUC of every statistic of a
    :func:`verification_stats` result beside the default one, for prose."""
    return "".join(f", {fingerprint.STATISTICS[s].title} {result['auc' + fingerprint.STATISTICS[s].suffix]:.3f}"
                   for s in result["statistics"] if s != fingerprint.DEFAULT_STATISTIC)


# --------------------------------------------------------------------------- Table II
def cigm_variant(fp: fingerprint.Fingerprint) -> str:
    """``"C-IGM (transform shift+flip, gradient blur 2 px)"``: the C-IGM variant a
    fingerprint was extracted with (its manifest's ``created_with``), for prose;
    ``"C-IGM (the paper's)"`` for the paper's attack or a fingerprint that does not say."""
    made = fp.manifest.get("created_with", {})
    transform, smooth = made.get("transform", "none"), float(made.get("smooth", 0.0))
    details = [f"transform {transform}"] * (transform != "none") + [f"gradient blur {smooth:g} px"] * bool(smooth)
    return "C-IGM (" + (", ".join(details) or "the paper's") + ")"


def table2_rows(context: experiments.Context, eps: float | None = None, targets: Sequence[str] = ("most_conferrable",),
                baselines: bool = True, variants: Sequence[tuple[str, float]] | None = None) -> Rows:
    """One row per attack of :data:`cae.attacks.REGISTRY`: our transferability /
    conferrability on the testing models beside the paper's (Table II; blank where the
    paper has no number). ``baselines=False`` scores the ensemble attack (C-IGM) alone.
    ``variants`` ((transform, smooth) pairs) and ``targets``: C-IGM variants to report
    (default: the paper's, then the preset's transform, then with its gradient blur, each
    where it differs from the one before); each is its own row, named after the variant."""
    eps = context.preset.epsilon if eps is None else eps
    if variants is None:
        p = context.preset
        variants = tuple(dict.fromkeys((("none", 0.0), (p.transform, 0.0), (p.transform, float(p.smooth)))))
    dataset = presets.paper_dataset(context.preset.dataset)
    rows = []
    ensemble = [m for m, entry in attacks.REGISTRY.items() if entry.on == "ensemble"]
    runs = [(m, t, v) for m in ensemble for v in variants for t in targets]
    runs += [(m, None, (None, 0.0)) for m, entry in attacks.REGISTRY.items() if entry.on == "source" and baselines]
    for method, target, (transform, smooth) in runs:
        entry = attacks.REGISTRY[method]
        variant = entry.on == "ensemble"
        options = {"target": target, "transform": transform, "smooth": smooth} if variant else {}
        result = experiments.run_attack(context, method, eps, **options)
        test, train = experiments.summarise(result, "test"), experiments.summarise(result, "train")
        details = [f"t: {target}"] * (variant and len(targets) > 1)
        details += [f"transform: {transform}"] * (variant and transform != "none")
        details += [f"gradient blur: {smooth:g} px"] * (variant and bool(smooth))
        name = entry.name + (f" ({', '.join(details)})" if details else "")
        paper = transform in (None, "none") and not smooth
        paper_transfer, paper_confer = entry.paper_scores(dataset) if paper else (None, None)
        rows.append({
            "method": name, "successful": f"{test['successful']}/{test['examples']}",
            "transferable": test["transferable"], "conferrable": test["conferrable"],
            "conferrable 95% low": test["conferrable_ci"][0], "conferrable 95% high": test["conferrable_ci"][1],
            "paper transferable": paper_transfer, "paper conferrable": paper_confer,
            "confer (training models)": train["conferrable"],
        })
    return rows


def table2_notes(context: experiments.Context, rows: Sequence[Mapping[str, Any]]) -> str:
    # The best C-IGM row against every baseline (the paper's C-IGM is the first row).
    name = attacks.REGISTRY["cigm"].name
    best = max((r for r in rows if r["method"].startswith(name)), key=lambda r: r["conferrable"])
    cigm = best["conferrable"]
    others = {r["method"]: r["conferrable"] for r in rows if not r["method"].startswith(name)}
    beaten = [m for m, c in others.items() if not (cigm > c)]
    verdict = (f"{best['method']}'s conferrability is above every baseline's, as in the paper." if not beaten
               else f"{best['method']}'s conferrability is NOT above: {', '.join(beaten)}.")
    if not others:
        verdict = "The baselines were not run (ART needs the TensorFlow backend); no comparison."
    within = [r["method"] for r in rows if r["method"] in others
              and r["method"] not in beaten and r["conferrable 95% high"] >= best["conferrable 95% low"]]
    if within:
        verdict += (f" Not clearly, though, against {', '.join(within)}: the 95% bootstrap intervals "
                    "(over examples; columns 'conferrable 95% low/high') overlap.")
    p = context.preset
    return (f"Ours: {len(context.inputs)} inputs from D1 classified correctly by the source; scores over "
            f"the successful examples on {len(p.test_surrogates)} testing surrogates and "
            f"{len(p.test_references)} testing references (transferability over the references). "
            f"Paper: {data.title(presets.paper_dataset(p.dataset))} (quoted, not run).\n\n{verdict}\n")


# --------------------------------------------------------------------------- Figures 8-10
def fingerprint_row(fp: fingerprint.Fingerprint) -> dict[str, Any]:

    """A one-row summary of a fingerprint for the figures' data tables: size, mean
    perturbation and the retention of its calibration models (:class:`cae.fingerprint.Calibration`)."""
    made = fp.manifest.get("created_with", {})
    row = {"ε": float(fp.manifest["epsilon"]), "τ": float(fp.manifest["tau"]),
           "fingerprints": fp.n, "attack inputs": made.get("inputs")}
    if fp.originals is not None:
        delta = (np.asarray(fp.x, np.float64) - np.asarray(fp.originals, np.float64)).reshape(fp.n, -1)
        row["mean ‖δ‖∞"] = float(np.abs(delta).max(axis=1).mean())
        row["mean ‖δ‖2"] = float(np.linalg.norm(delta, axis=1).mean())
    calibration = fp.calibration
    for group in ("surrogate", "reference"):
        values = None if calibration is None else getattr(calibration, f"{group}_matches").mean(axis=1)
        row[f"calibration {group}s' retention"] = (", ".join(f"{v:.2f}" for v in values)
                                                   if values is not None else None)
    return row
