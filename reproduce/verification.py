"""Verification you can trust: every suspect judged by cae verify's rule (θ and p-values
from the fingerprint's calibration models, never from the suspects scored here), for
the paper's retention and the per-fingerprint likelihood ratio; ROC-AUC and TPR at 1 %
FPR of derived models (testing surrogates and every removal-attack model) against
independent ones (testing references), how many of each the verdict calls surrogates,
and each suspect's p-values. The AUC is also given over the "usable" derived models
alone, those within 10 points of the source's test accuracy. Figures: the ROC curve and
the retention of every model per group. ``verification_keys``: the same with a query
budget, the first N keys in order of evidence (``cae verify --keys N``) or N at random.

``--extra-references N`` adds N more independent references to the negatives: trained
like the testing references (D2, ground truth, the same architectures in turn) with
seeds of their own and, in turn, other training recipes (cae.experiments.EXTRA_RECIPES),
cached in the zoo. The paper has two per architecture; with so few negatives the AUC
moves a lot with a single model.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cae import evaluation, experiments, fingerprint, paths, removal, reports, scripts, stats, tables  # noqa: E402


# Fingerprint sizes of the query-budget table (and random draws of one size beside them).
KEY_BUDGETS = (25, 50, 100, 200, 400)
RANDOM_BUDGET, RANDOM_DRAWS = 100, 3


def add_options(parser):
    parser.add_argument("--attacks", nargs="+", default=list(removal.PAPER_ATTACKS),
                        choices=[a for a in removal.REMOVAL_ATTACKS if a not in removal.OTHER_TASK],
                        help="removal-attack models among the positives")
    parser.add_argument("--extra-references", type=scripts.count, default=None, metavar="N",
                        help="train N more independent references (D2, ground truth, other recipes in turn) as "
                             "negatives (default: the preset's extra_references)")


if __name__ == "__main__":
    args, preset = scripts.script_args("Verification: ROC, threshold and p-values", extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    extra_count = preset.extra_references if args.extra_references is None else args.extra_references
    fp = experiments.extract(context)  # cae extract's: with the preset's natural mistakes
    mistakes = fp.manifest["created_with"].get("mistakes", 0)
    derived = {f"testing surrogate {i} ({s.architecture})": m
               for i, (s, m) in enumerate(zip(context.specs["test_surrogates"], context.models["test_surrogates"]))}
    attacked = evaluation.removal_models(context, args.attacks, verbose=not args.quiet)
    derived.update({removal.REMOVAL_ATTACKS[a].name: m for a, m in attacked.items()})
    references = {f"testing reference {i} ({s.architecture})": m
                  for i, (s, m) in enumerate(zip(context.specs["test_references"], context.models["test_references"]))}
    extra = {f"extra reference {i} ({spec.architecture})": context.store.get(spec, verbose=not args.quiet)
             for i, spec in enumerate(experiments.extra_reference_specs(context.specs, extra_count))}
    references.update(extra)
    accuracy = {name: evaluation.test_accuracy(model, context.dataset, preset.evaluate_on)
                for name, model in [("source", context.models["source"]), *derived.items()]}
    drop = {name: accuracy["source"] - accuracy[name] for name in derived}
    result = reports.verification_stats(context, fp, derived, references, accuracy_drop=drop)
    theta = result["threshold"]
    summary = []
    for statistic in result["statistics"]:
        suffix = fingerprint.STATISTICS[statistic].suffix
        summary.append({
            "statistic": statistic, "positives": result["positives"], "negatives": result["negatives"],
            "fingerprints": fp.n, "AUC": result[f"auc{suffix}"], "TPR at 1% FPR": result[f"tpr_at_1_fpr{suffix}"],
            "usable positives": result["positives_usable"], "AUC (usable)": result[f"auc_usable{suffix}"],
            "θ": result[f"threshold{suffix}"],
            "derived flagged": f"{result[f'derived_flagged{suffix}']}/{result['positives']}",
            "usable flagged": f"{result[f'derived_flagged_usable{suffix}']}/{result['positives_usable']}",
            "references flagged": f"{result[f'references_flagged{suffix}']}/{result['negatives']}"})
    tables.write("verification_summary", preset.name, summary,
                 f"Verification summary (preset {preset.name}, {preset.dataset})",
                 notes=(f"Fingerprint: cae extract's, {fp.n - mistakes} C-IGM examples and {mistakes} natural images "
                        "the source misclassifies keyed by its labels (the preset's mistakes; 0 is the paper's "
                        f"fingerprint).\n\n{result['note']}\n\nCalibration: {result['calibration']}. Flagged: cae verify's verdict "
                        f"'surrogate' (score ≥ θ and p-value ≤ {fp.calibration.alpha:g}). "
                        f"'Usable' positives are the derived models whose test accuracy is within "
                        f"{result['max_accuracy_drop'] * 100:.0f} points of the source's ({accuracy['source']:.3f}): "
                        "the stolen models worth deploying. A removal attack that costs more has failed on its "
                        "own terms; the AUC over all derived models stands beside it.\n"))
    budget = []  # a verifier with fewer queries: the first N keys in order of evidence, or N at random
    budgets = [n for n in KEY_BUDGETS if n < fp.n]
    picks = [("evidence", n, fingerprint.head(fp, n)) for n in budgets]
    picks += [(f"random, draw {seed + 1}", RANDOM_BUDGET, fingerprint.sample(fp, RANDOM_BUDGET, seed=seed))
              for seed in range(RANDOM_DRAWS) if RANDOM_BUDGET < fp.n]
    for order, n, small in [*picks, ("all", fp.n, fp)]:
        scored = result if small is fp else reports.verification_stats(context, small, derived, references,
                                                                        accuracy_drop=drop)
        row = {"keys": n, "order": order}
        for statistic in scored["statistics"]:
            spec = fingerprint.STATISTICS[statistic]
            row[spec.column("source p-value")] = small.calibration.p_value(np.ones(n, bool), statistic)
            row[spec.column("AUC (usable)")] = scored[f"auc_usable{spec.suffix}"]
            row[spec.column("usable flagged")] = f"{scored[f'derived_flagged_usable{spec.suffix}']}/{scored['positives_usable']}"
            row[spec.column("references flagged")] = f"{scored[f'references_flagged{spec.suffix}']}/{scored['negatives']}"
        budget.append(row)
    tables.write("verification_keys", preset.name, budget,
                 f"Verification with fewer keys (preset {preset.name}, {fp.n} keys in all)",
                 notes="Each row verifies every suspect with a fingerprint of N keys (cae.fingerprint.head: the "
                       "first N in the order of evidence the extraction stored, natural mistakes ranked by the "
                       "training models, then the C-IGM keys; or cae.fingerprint.sample: N at random), its "
                       "calibration restricted to them (θ and p-values recomputed). Source p-value: the source "
                       "itself, which reproduces every key, against the calibration references under every "
                       "condition. `cae verify --keys N` does the same.\n")
    tables.write("verification", preset.name, result["suspects"],
                 f"Verification per suspect (preset {preset.name}, θ = {theta:.3f})",
                 notes="p-value: an independent model's chance of matching this many keys, from the calibration "
                       "references' per-fingerprint rates (keys independent given the model; for the likelihood ratio "
                       "shifted and spread as the references, each left out, score on it: cae.stats.lr_null). "
                       "p-value (derived): a "
                       "derived model's chance of matching this few, from the calibration surrogates' rates.\n")

    shifts, spread = reports.key_group_shifts(fp, derived, references)
    spread_text = "; ".join(f"{g}: {v:.2f}" for g, v in spread.items() if v is not None) or "one reference: none"
    tables.write("verification_shifts", preset.name, shifts,
                 f"Where each model sits, per group of keys (preset {preset.name})",
                 notes="Shift: the log-odds by which a model agrees with the group's keys more (> 0) or less than "
                       "the calibration references' per-key rates say (cae.stats.model_shift; each calibration "
                       "reference against the others'). The calibration references' spread per group (root mean "
                       f"square of their shifts): {spread_text}. The p-values allow for one spread over all keys "
                       f"together (cae.stats.model_spread, at least {stats.MIN_MODEL_SPREAD:g}): a derived model "
                       "is flagged when it sits "
                       "well above the references over all keys at once.\n")

    folder = paths.results_dir(preset.name)
    figure, axis = plt.subplots(figsize=(4.5, 4.2))
    axis.step(result["fpr"], result["tpr"], where="post", marker="o")
    axis.plot([0, 1], [0, 1], ls=":", color="grey")
    axis.set(xlabel="false-positive rate (independent references)", ylabel="true-positive rate (derived models)",
             title=f"ROC of retention, AUC = {result['auc']:.3f}", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    figure.tight_layout()
    figure.savefig(folder / "verification_roc.png", dpi=120)

    groups = {g: [fingerprint.verify(m, fp).retention for m in context.models[g]] for g in experiments.GROUPS}
    groups["removal attacks"] = [r["retention"] for r in result["suspects"]
                                 if r["kind"] == "derived" and not r["model"].startswith("testing surrogate")]
    if extra:
        groups["extra references"] = [r["retention"] for r in result["suspects"] if r["model"] in extra]
    figure, axis = plt.subplots(figsize=(7, 4))
    for i, (name, values) in enumerate(groups.items()):
        jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(values))
        axis.scatter(np.full(len(values), i) + jitter, values, s=25)
    if theta:
        axis.axhline(theta, ls="--", color="red", label=f"θ = {theta:.3f}")
        axis.legend()
    axis.set_xticks(range(len(groups)), [g.replace("_", "\n").replace(" ", "\n") for g in groups])
    axis.set(ylabel="fingerprint retention", ylim=(-0.03, 1.03), title=f"Retention per group (preset {preset.name})")
    figure.tight_layout()
    figure.savefig(folder / "verification_retention.png", dpi=120)
    print(f"wrote {folder / 'verification_roc.png'} and {folder / 'verification_retention.png'}")
