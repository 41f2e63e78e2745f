"""Beyond the paper: does the fingerprint survive a suspect that transforms its inputs,
and does an innocent suspect that does so stay innocent?

The source is put behind each input transformation of cae.preprocessing (bit-depth
reduction, Gaussian blur, median filter, Gaussian noise) at several strengths; nothing is
trained. Each row: the transformed source's test accuracy, fidelity and retention, the
accuracy the transformation costs, whether verification still flags it, and the
independent references behind the same transformation: their highest retention and how
many of them θ would flag (false accusations). θ is chosen on the untransformed
references, as a defender who does not know the suspect's preprocessing would.
``--extra-references N`` adds N more independent references (as in verification.py).

``--derived`` adds a second table, ``preprocessing_derived``: every suspect behind the
same transformation, the derived ones (testing surrogates and every removal attack's
model, trained or loaded through the zoo) against the references: the ROC-AUC of
retention and how many of each θ flags.

Verdicts are cae verify's, with the fingerprint's stored calibration: ``cae extract``
also measures its calibration references behind every transformation that costs the
source at most 10 points of accuracy (a thief would not deploy a costlier one), and θ and
the p-values are the worst case over them, so there is one θ, chosen in one place
(:class:`cae.fingerprint.Calibration`). The p-value column is the transformed source's.
"""

from cae import evaluation, experiments, fingerprint, preprocessing, reports, scripts, tables


def add_options(parser):
    parser.add_argument("--kinds", nargs="+", default=list(preprocessing.SWEEPS),
                        choices=list(preprocessing.TRANSFORMS), help="transformations to sweep (default: all)")
    parser.add_argument("--extra-references", type=scripts.count, default=None, metavar="N",
                        help="train N more independent references (D2, ground truth, other recipes in turn) as "
                             "negatives (default: the preset's extra_references)")
    parser.add_argument("--derived", action="store_true",
                        help="also put every derived model (testing surrogates, removal attacks) behind each "
                             "transformation and measure the AUC")


def main():
    args, preset = scripts.script_args("Input preprocessing: fingerprint retention behind input transformations",
                                           extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    extra_count = preset.extra_references if args.extra_references is None else args.extra_references
    fp = experiments.extract(context)
    references = list(context.models["test_references"])
    references += [context.store.get(spec, verbose=not args.quiet)
                   for spec in experiments.extra_reference_specs(context.specs, extra_count)]
    theta = fingerprint.verify(context.models["source"], fp).threshold  # the calibration's θ, as cae verify uses
    sweeps = {kind: preprocessing.SWEEPS[kind] for kind in args.kinds}
    rows = reports.preprocessing_rows(context, fp, sweeps, theta, references)
    usable = [r for r in rows[1:] if r["Δ accuracy"] >= -experiments.MAX_ACCURACY_DROP]
    surrogates = [fingerprint.verify(m, fp).retention for m in context.models["test_surrogates"]]
    broken = [f"{r['transformation']} {r['strength']:g}" for r in usable if r.get("verified", "").startswith("NO")]
    accusing = [f"{r['transformation']} {r['strength']:g} ({r['references flagged']})" for r in rows[1:]
                if theta and not r["references flagged"].startswith("0/")]
    mistakes = fp.manifest["created_with"].get("mistakes", 0)
    notes = (f"Fingerprint: cae extract's, {fp.n - mistakes} C-IGM examples at ε = {preset.epsilon:g} and {mistakes} "
             f"natural images the source misclassifies; {len(references)} independent "
             "references. Δ accuracy: test accuracy minus the untransformed source's. "
             + f"θ = {theta:.3f}, the fingerprint's calibrated θ.\n")
    cost = f"at most {experiments.MAX_ACCURACY_DROP:.0%} accuracy"
    notes += (f"\nBroken at a cost of {cost}: {', '.join(broken)}.\n" if broken else
              f"\nNo transformation costing {cost} brought the source's retention below θ.\n")
    notes += (f"\nFalse accusations, references behind the transformation at or above θ: {', '.join(accusing)}.\n"
              if accusing else "\nNo transformed reference reached θ.\n")
    conditions = [c for c in (fp.calibration.conditions if fp.calibration else ()) if c != "none"]
    notes += (f"\nThe calibration covers {len(conditions)} transformation(s) ({', '.join(conditions) or 'none'}); "
              f"the testing surrogates (untransformed) retain {', '.join(f'{r:.2f}' for r in surrogates)}: θ flags "
              f"{sum(r >= theta for r in surrogates)} of {len(surrogates)}.\n") if theta else ""
    notes += ("\nNot in the paper (its removal attacks all change the weights); input preprocessing is a family of "
              "Lukas et al.'s later watermark-robustness survey (IEEE S&P 2022). Settings: cae.preprocessing.\n")
    tables.write("preprocessing", preset.name, rows,
                 f"Input preprocessing: the source behind input transformations (preset {preset.name}, "
                 f"{preset.dataset})", notes=notes,
                 columns=reports.PREPROCESSING_COLUMNS)
    if args.derived:
        derived = dict(zip((f"testing surrogate {i}" for i in range(len(context.models["test_surrogates"]))),
                           context.models["test_surrogates"]))
        derived.update(evaluation.removal_models(context, verbose=not args.quiet))
        separation = reports.preprocessing_separation(fp, derived, references, sweeps)
        tables.write("preprocessing_derived", preset.name, separation,
                     f"Input preprocessing: every suspect behind the same transformation (preset {preset.name}, "
                     f"{preset.dataset})", columns=reports.separation_columns(),
                     notes=f"{len(derived)} derived models (testing surrogates and the removal attacks' models) "
                           f"against {len(references)} independent references, all behind the transformation of "
                           "the row. Flagged: cae verify's verdict 'surrogate' with the fingerprint's calibration "
                           f"(retention θ = {theta:.3f}; "
                           + "; ".join(f"the {s.title} has its own" for name, s in fingerprint.STATISTICS.items()
                                       if name != fingerprint.DEFAULT_STATISTIC) + ").\n")


if __name__ == "__main__":
    main()
