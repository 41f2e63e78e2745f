"""Verification you can trust: ROC and AUC of fingerprint retention, derived models
(testing surrogates and every removal-attack model) vs independent models (testing
references), TPR at 1 % FPR, the threshold θ with its false-positive bounds, and each
suspect's p-value (empirical over the references, and binomial with p0 estimated from
them). The AUC is also given over the "usable" derived models alone, those within 10
points of the source's test accuracy. Figures: the ROC curve and the retention of every
model per group.

``--extra-references N`` adds N more independent references to the negatives: trained
like the testing references (D2, ground truth, the same architectures in turn) with
seeds of their own, cached in the zoo. The paper has two per architecture; with so few
negatives the AUC and the FPR bound move a lot with a single model.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cae import evaluation, experiments, fingerprint, paths, removal, tables  # noqa: E402


def add_options(parser):
    parser.add_argument("--attacks", nargs="+", default=list(removal.REMOVAL_ATTACKS),
                        choices=list(removal.REMOVAL_ATTACKS), help="removal-attack models among the positives")
    parser.add_argument("--extra-references", type=experiments.count, default=0, metavar="N",
                        help="train N more independent references (D2, ground truth) as negatives")


if __name__ == "__main__":
    args, preset = experiments.script_args("Verification: ROC, threshold and p-values", extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    fp = experiments.extract(context)
    derived = {f"testing surrogate {i} ({s.architecture})": m
               for i, (s, m) in enumerate(zip(context.specs["test_surrogates"], context.models["test_surrogates"]))}
    attacked = evaluation.removal_models(context, args.attacks, verbose=not args.quiet)
    derived.update({removal.REMOVAL_ATTACKS[a].name: m for a, m in attacked.items()})
    references = {f"testing reference {i} ({s.architecture})": m
                  for i, (s, m) in enumerate(zip(context.specs["test_references"], context.models["test_references"]))}
    extra = {f"extra reference {i} ({spec.architecture})": context.store.get(spec, verbose=not args.quiet)
             for i, spec in enumerate(experiments.extra_reference_specs(context.specs, args.extra_references))}
    references.update(extra)
    accuracy = {name: evaluation.test_accuracy(model, context.dataset, preset.evaluate_on)
                for name, model in [("source", context.models["source"]), *derived.items()]}
    drop = {name: accuracy["source"] - accuracy[name] for name in derived}
    result = evaluation.verification_stats(context, fp, derived, references, accuracy_drop=drop)
    theta = result["threshold"]
    summary = [{"positives": result["positives"], "negatives": result["negatives"], "fingerprints": fp.n,
                "AUC": result["auc"], "TPR at 1% FPR": result["tpr_at_1_fpr"],
                "usable positives": result["positives_usable"], "AUC (usable)": result["auc_usable"],
                "TPR at 1% FPR (usable)": result["tpr_at_1_fpr_usable"],
                "θ": theta.theta if theta else None,
                "empirical FPR": theta.empirical_fpr if theta else None,
                "FPR 95% upper": theta.empirical_fpr_upper if theta else None,
                "FPR (leave-one-out)": result["fpr_leave_one_out"],
                "binomial FPR": theta.binomial_fpr if theta else None, "p0": result["p0"]}]
    tables.write("verification_summary", preset.name, summary,
                 f"Verification summary (preset {preset.name}, {preset.dataset})",
                 notes=(f"{result['note']}\n\n'Usable' positives are the derived models whose test accuracy is "
                        f"within {result['max_accuracy_drop'] * 100:.0f} points of the source's "
                        f"({accuracy['source']:.3f}): "
                        "the stolen models worth deploying. A removal attack that costs more has failed on its "
                        "own terms; the AUC over all derived models stands beside it.\n\n"
                        f"With {result['negatives']} references an FPR of 1 % means no reference "
                        "at or above θ, and the empirical p-value cannot go below 1/(references + 1). The binomial "
                        "p-value assumes independent keys and is optimistic (cae.stats).\n"))
    tables.write("verification", preset.name, result["suspects"],
                 f"Verification per suspect (preset {preset.name}, θ = {theta.theta:.3f})" if theta else
                 f"Verification per suspect (preset {preset.name}, no θ)",
                 notes="References are judged out of sample: p-values against, and θ chosen on, the other "
                       "references (column θ).\n")

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
        axis.axhline(theta.theta, ls="--", color="red", label=f"θ = {theta.theta:.3f}")
        axis.legend()
    axis.set_xticks(range(len(groups)), [g.replace("_", "\n").replace(" ", "\n") for g in groups])
    axis.set(ylabel="fingerprint retention", ylim=(-0.03, 1.03), title=f"Retention per group (preset {preset.name})")
    figure.tight_layout()
    figure.savefig(folder / "verification_retention.png", dpi=120)
    print(f"wrote {folder / 'verification_roc.png'} and {folder / 'verification_retention.png'}")
