"""Table V: removal attacks on the source (cae.removal): test accuracy, fidelity and
fingerprint retention of each derived model, beside the paper's numbers.

Derived models are zoo models (cached, resumable). Whether verification still flags a
model is cae.fingerprint.verify's verdict, with θ and p-values from the fingerprint's
calibration models (the preset's validation models where it has them).
Table VI (ImageNet32) is this script with the preset ``paper-imagenet32`` (reproduce/table6.py).
"""

from cae import evaluation, experiments, removal, reports, scripts, tables


def add_options(parser, default_preset):
    parser.set_defaults(preset=default_preset)
    parser.add_argument("--attacks", nargs="+", default=list(removal.PAPER_ATTACKS),
                        choices=list(removal.REMOVAL_ATTACKS),
                        help="removal attacks to run (default: the paper's; cae.removal lists the others)")


def main(name="table5", default_preset="quick", table="Table V"):
    args, preset = scripts.script_args(f"{table}: removal attacks",
                                           extra=lambda parser: add_options(parser, default_preset))
    context = experiments.prepare(preset, verbose=not args.quiet)
    fp = experiments.extract(context, mistakes=0)  # the paper's fingerprint
    beside = experiments.extract(context) if preset.mistakes else None  # cae extract's
    models = evaluation.removal_models(context, args.attacks, verbose=not args.quiet)
    same_task = {a: m for a, m in models.items() if a not in removal.OTHER_TASK}  # transfer: rows only
    stats = reports.verification_stats(context, fp, same_task, context.models["test_references"])
    rows = reports.removal_rows(context, fp, args.attacks, models=models, beside=beside)
    broken = [r["attack"] for r in rows[1:] if r.get("verified", "") == "NO (broken)"]
    unsure = [r["attack"] for r in rows[1:] if r.get("verified", "").startswith("NO (inconclusive")]
    skipped = [a for a in removal.PAPER_ATTACKS if a not in args.attacks]
    theta = stats["threshold"]
    notes = (f"Fingerprint: {fp.n} {reports.cigm_variant(fp)} examples at ε = {preset.epsilon:g}. "
             f"Δ accuracy: test accuracy minus the source's. Verified: cae verify's verdict (retention ≥ θ = "
             f"{theta:.3f} and p-value ≤ {fp.calibration.alpha:g}), calibrated on {stats['calibration']}. "
             f"AUC against the {stats['negatives']} testing references: retention {stats['auc']:.3f}"
             + reports.other_aucs(stats) + ". ")
    if beside is not None:
        beside_stats = reports.verification_stats(context, beside, same_task, context.models["test_references"])
        notes += (f"'{reports.BESIDE}' and 'verified (preset's)': cae extract's fingerprint, the same examples and "
                  f"{preset.mistakes} natural images the source misclassifies (beyond the paper; θ = "
                  f"{beside_stats['threshold']:.3f}), AUC retention {beside_stats['auc']:.3f}"
                  + reports.other_aucs(beside_stats) + ". ")
    notes += (f"Broken by: {', '.join(broken)}.\n" if broken else "No attack brought retention below θ.\n")
    notes += (f"\nRetention at or above θ, but the p-value too large for a verdict (inconclusive, not removed): "
              f"{', '.join(unsure)}.\n" if unsure else "")
    notes += (f"\nNot run: {', '.join(skipped)}.\n" if skipped else "")
    notes += ("\nPaper: ResNet20 source on CINIC-10 (Table V) / ImageNet32 (Table VI), quoted; "
              "Retraining and IGM adversarial training have no paper row. Settings: cae.removal.\n")
    tables.write(name, preset.name, rows, f"{table}: removal attacks (preset {preset.name}, {preset.dataset})",
                 notes=notes, columns=reports.REMOVAL_COLUMNS + ([reports.BESIDE, "verified (preset's)"] if beside else []))


if __name__ == "__main__":
    main()
