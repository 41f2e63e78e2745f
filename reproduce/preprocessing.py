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
"""

from cae import evaluation, experiments, preprocessing, tables


def add_options(parser):
    parser.add_argument("--kinds", nargs="+", default=list(preprocessing.SWEEPS),
                        choices=list(preprocessing.TRANSFORMS), help="transformations to sweep (default: all)")
    parser.add_argument("--extra-references", type=experiments.count, default=0, metavar="N",
                        help="train N more independent references (D2, ground truth) as negatives")


def main():
    args, preset = experiments.script_args("Input preprocessing: fingerprint retention behind input transformations",
                                           extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    fp = experiments.extract(context)
    references = list(context.models["test_references"])
    references += [context.store.get(spec, verbose=not args.quiet)
                   for spec in experiments.extra_reference_specs(context.specs, args.extra_references)]
    theta = evaluation.verification_stats(context, fp, {"source": context.models["source"]}, references)["threshold"]
    sweeps = {kind: preprocessing.SWEEPS[kind] for kind in args.kinds}
    rows = evaluation.preprocessing_rows(context, fp, sweeps, theta, references)
    usable = [r for r in rows[1:] if r["Δ accuracy"] >= -evaluation.MAX_ACCURACY_DROP]
    broken = [f"{r['transformation']} {r['strength']:g}" for r in usable if r.get("verified", "").startswith("NO")]
    accusing = [f"{r['transformation']} {r['strength']:g} ({r['references flagged']})" for r in rows[1:]
                if theta and not r["references flagged"].startswith("0/")]
    notes = (f"Fingerprint: {fp.n} C-IGM examples at ε = {preset.epsilon:g}; {len(references)} independent "
             "references. Δ accuracy: test accuracy minus the untransformed source's. "
             + (f"θ = {theta.theta:.3f}, chosen on the untransformed references.\n" if theta else
                "No θ: a reference retains the whole fingerprint.\n"))
    cost = f"at most {evaluation.MAX_ACCURACY_DROP:.0%} accuracy"
    notes += (f"\nBroken at a cost of {cost}: {', '.join(broken)}.\n" if broken else
              f"\nNo transformation costing {cost} brought the source's retention below θ.\n")
    notes += (f"\nFalse accusations, references behind the transformation at or above θ: {', '.join(accusing)}.\n"
              if accusing else "\nNo transformed reference reached θ.\n")
    notes += ("\nNot in the paper (its removal attacks all change the weights); input preprocessing is a family of "
              "Lukas et al.'s later watermark-robustness survey (IEEE S&P 2022). Settings: cae.preprocessing.\n")
    tables.write("preprocessing", preset.name, rows,
                 f"Input preprocessing: the source behind input transformations (preset {preset.name}, "
                 f"{preset.dataset})", notes=notes, columns=evaluation.PREPROCESSING_COLUMNS)


if __name__ == "__main__":
    main()
