"""How many of the source's natural mistakes to key beside the C-IGM examples, and which
ones, chosen on the defender's validation models and scored on held-out ones.

    python benchmarks/mistakes.py --preset cpu --counts 0,100,300,700,1000,2000 \\
        --stable "none;flip:1;flip:1,blur:0.5,quantize:3" \\
        --extra-references 6 --removal all

For each count N and each stability rule S, the fingerprint is the preset's C-IGM examples
(Alg. 2) and the first N natural images the source misclassifies
(:func:`cae.experiments.natural_mistakes`: the defender's images in neither D1 nor D2),
keeping only those on which the source makes the same mistake behind every transformation
of S ("none": every mistake), each keyed by the source's label. Every model is also
measured behind each affordable input transformation (those that cost the source at most
10 points: a thief's free moves), and so are the validation references that calibrate
verification, as ``cae extract`` calibrates. One row per (S, N):

* **choice** (validation models only, the preset's calibration models): the gap between
  the lowest usable validation surrogate (test accuracy within 10 points of the source's)
  behind any of the conditions (untransformed queries and the affordable transformations)
  and the highest validation reference behind any of them, in retention: as the verdict
  rule sees it, whose θ lies above the references under every condition and which a
  surrogate behind any condition must clear; the row chosen has the fewest mistakes
  among those whose gap is within one standard error of the largest (the
  one-standard-error rule), the larger gap breaking a tie;
* **report** (held-out models only): ROC-AUC of retention and of the likelihood ratio of
  usable derived models (testing surrogates, removal attacks) against independent ones
  (testing and extra references), untransformed and at the worst transformation; the gap
  between the lowest derived and the highest independent retention; how many of each
  cae verify's rule calls a surrogate (θ and p-values from the validation models),
  untransformed and at the worst transformation (fewest derived, most independent); the
  source's own p-value, untransformed and at the worst transformation.

Nothing is chosen on the held-out models. The first N mistakes of a larger N under the
same rule are the same images, so rows of one rule differ only in N.
"""

import argparse
import logging
import math
import time


def _parse(argv=None):
    from cae import preprocessing, presets, scripts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(presets.PRESETS))
    parser.add_argument("--counts", default="0,100,300,1000,2000",
                        help="comma-separated numbers of natural mistakes (default 0,100,300,1000,2000)")
    parser.add_argument("--stable", default="none;flip:1",
                        help="semicolon-separated stability rules, each 'none' or KIND:STRENGTH,... (the source "
                             "repeats the mistake behind each), e.g. 'none;flip:1;flip:1,blur:0.5' (default "
                             "none;flip:1)")
    parser.add_argument("--extra-references", type=scripts.count, default=6, metavar="N")
    parser.add_argument("--removal", default="all", help="comma-separated removal attacks, 'paper' or 'all'")
    args = parser.parse_args(argv)
    try:
        args.counts = sorted({int(c) for c in args.counts.split(",")})
    except ValueError:
        parser.error(f"--counts {args.counts!r}: expected comma-separated whole numbers, e.g. 0,100,1000.")
    if args.counts[0] < 0:
        parser.error("--counts: numbers of mistakes are 0 or more.")
    try:
        args.stable = list(dict.fromkeys(preprocessing.parse(rule, "--stable") for rule in args.stable.split(";")))
    except ValueError as error:
        parser.error(str(error))
    return args


def choose(rows):
    """The one-standard-error rule: the row with the fewest mistakes whose ``"valid gap"`` is
    within one standard error of the largest (a gap is a difference of two retentions over
    the row's ``"keys"``; at most sqrt(2 · 0.25 / keys)), the larger gap breaking a tie.
    Returns (chosen row, row with the largest gap, the standard error)."""
    top = max(rows, key=lambda r: r["valid gap"])
    error = math.sqrt(2 * 0.25 / top["keys"])
    best = min((r for r in rows if r["valid gap"] >= top["valid gap"] - error),
               key=lambda r: (r["mistakes"], -r["valid gap"]))
    return best, top, error


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    import numpy as np

    from cae import (benchmark, data, evaluation, experiments, fingerprint, paths, preprocessing, presets, scripts,
                     stats, tables, zoo)

    preset = presets.get(args.preset)
    started = time.time()
    if not (preset.valid_surrogates and preset.valid_references):  # before the zoo trains
        raise SystemExit(f"preset {preset.name} has no validation models to choose on; use one that has (cpu).")
    context = experiments.prepare(preset, verbose=False)
    fp = experiments.extract(context, mistakes=0)
    most = max(args.counts)
    # Each rule's mistakes, as indices into one union of images that every model sees once.
    chosen = {rule: (experiments.natural_mistakes(context, most, stable=rule, at_most=True)[1] if most
                     else np.zeros(0, np.int64)) for rule in args.stable}
    union = np.unique(np.concatenate(list(chosen.values())))
    x = np.concatenate([fp.x, data.to_float(context.dataset.x_train[union])])
    keys = zoo.predict(context.models["source"], x).argmax(axis=1)
    cigm = fp.n
    columns = {rule: np.concatenate([np.arange(cigm), cigm + np.searchsorted(union, idx)])
               for rule, idx in chosen.items()}
    transformations = experiments.affordable_transformations(context)
    conditions = ["none", *(preprocessing.name(kind, strength) for kind, strength in transformations)]

    def matches(model):
        """{condition: bool (keys,)}: the model's matches untransformed and behind each
        affordable transformation."""
        out = {"none": zoo.predict(model, x).argmax(axis=1) == keys}
        for (kind, strength), condition in zip(transformations, conditions[1:]):
            out[condition] = zoo.predict(preprocessing.wrap(model, kind, strength), x).argmax(axis=1) == keys
        return out

    accuracy = {}

    def usable(name, model):
        accuracy[name] = evaluation.test_accuracy(model, context.dataset, preset.evaluate_on)
        return accuracy["source"] - accuracy[name] <= experiments.MAX_ACCURACY_DROP + 1e-9

    accuracy["source"] = evaluation.test_accuracy(context.models["source"], context.dataset, preset.evaluate_on)
    valid_s = [matches(m) for m in context.models["valid_surrogates"]]
    valid_s_usable = [v for i, (v, m) in enumerate(zip(valid_s, context.models["valid_surrogates"]))
                      if usable(f"validation surrogate {i}", m)]
    valid_r = [matches(m) for m in context.models["valid_references"]]
    derived, independent, _ = benchmark.suspects(context, experiments.removal_attacks(args.removal),
                                                 args.extra_references)
    derived = [(d["name"], d["model"]) for d in derived if d["mapping"] is None]
    positives = {name: matches(m) for name, m in derived if usable(name, m)}
    negatives = {name: matches(m) for name, m in independent}
    source = matches(context.models["source"])
    everyone = {**positives, **negatives}

    rows, per_model = [], []
    for rule, columns_of_rule in columns.items():
        for n in args.counts:
            if n > len(chosen[rule]) or (n == 0 and rule != args.stable[0]):
                continue  # too few mistakes under this rule; the row without mistakes once
            cut = columns_of_rule[:cigm + n]
            calibration = fingerprint.Calibration(
                np.array([v["none"][cut] for v in valid_s]), np.array([v["none"][cut] for v in valid_r]),
                transformed_references={c: np.array([v[c][cut] for v in valid_r]) for c in conditions[1:]})
            verdicts = {c: {s: {name: calibration.judge(m[c][cut], s) for name, m in everyone.items()}
                            for s in fingerprint.STATISTICS} for c in conditions}

            def auc(statistic, condition):
                values = {name: calibration.score(m[condition][cut], statistic) for name, m in everyone.items()}
                return stats.roc_auc([values[p] for p in positives], [values[q] for q in negatives])

            def flagged(statistic, condition, group):
                return sum(verdicts[condition][statistic][name] == "surrogate" for name in group)

            def lowest_surrogate(condition):
                return min(v[condition][cut].mean() for v in valid_s_usable)

            def highest_reference(condition):
                return max(v[condition][cut].mean() for v in valid_r)

            retention = {name: calibration.score(m["none"][cut]) for name, m in everyone.items()}
            rows.append({
                "stable behind": preprocessing.describe(rule) if n else "—", "mistakes": n, "keys": len(cut),
                # As the verdict rule sees it: θ lies above the references under every
                # condition, and a surrogate behind any of them must clear it.
                "valid gap": (min(lowest_surrogate(c) for c in conditions)
                              - max(highest_reference(c) for c in conditions)),
                "valid gap (untransformed)": lowest_surrogate("none") - highest_reference("none"),
                **{f"AUC {s.label}": auc(name, "none") for name, s in fingerprint.STATISTICS.items()},
                "AUC retention (worst transformation)": min(auc(fingerprint.DEFAULT_STATISTIC, c) for c in conditions),
                "min derived": min(retention[p] for p in positives),
                "max independent": max(retention[q] for q in negatives),
                "θ": calibration.threshold(fingerprint.DEFAULT_STATISTIC),
                **{f"flagged derived ({s})": f"{flagged(s, 'none', positives)}/{len(positives)}"
                   for s in fingerprint.STATISTICS},
                **{f"flagged derived ({s}, worst transformation)":
                   f"{min(flagged(s, c, positives) for c in conditions)}/{len(positives)}"
                   for s in fingerprint.STATISTICS},
                **{f"flagged independent ({s}, any)": f"{max(flagged(s, c, negatives) for c in conditions)}/"
                   f"{len(negatives)}" for s in fingerprint.STATISTICS},
                "source p-value": f"{calibration.p_value(source['none'][cut]):.2g}",
                "source p-value (worst transformation)":
                    f"{max(calibration.p_value(source[c][cut]) for c in conditions):.2g}",
            })
            if n:
                per_model.append((f"+{n} ({preprocessing.describe(rule)})",
                                  {name: float(m["none"][cut].mean()) for name, m in everyone.items()}))
    best, top, error = choose(rows)
    models_rows = [{"model": name, "kind": "derived (usable)" if name in positives else "independent",
                    "test accuracy": accuracy.get(name), "retention C-IGM": float(m["none"][:cigm].mean()),
                    **{f"retention {label}": values[name] for label, values in per_model}}
                   for name, m in everyone.items()]
    wall = time.time() - started
    rules = ";".join(",".join(f"{kind}:{strength:g}" for kind, strength in rule) or "none" for rule in args.stable)
    header = (f"command: python benchmarks/mistakes.py --preset {preset.name} --counts "
              f"{','.join(map(str, args.counts))} --stable \"{rules}\" --extra-references {args.extra_references} "
              f"--removal {args.removal}; date {time.strftime('%Y-%m-%d')}; commit {scripts.git_revision()}; "
              f"wall time {wall:.0f} s")
    available = ", ".join(f"{preprocessing.describe(rule)}: {len(idx)}" for rule, idx in chosen.items())
    tables.write("mistakes", preset.name, rows, f"Natural mistakes beside the C-IGM keys (preset {preset.name})\n\n"
                 f"<!-- {header} -->",
                 notes=(f"Chosen on the validation models: {best['mistakes']} mistakes stable behind "
                        f"{best['stable behind']}, the fewest whose 'valid gap' (lowest surrogate behind any, highest "
                        f"reference behind any of untransformed and {len(transformations)} affordable transformations: "
                        f"{', '.join(conditions[1:])}) is within "
                        f"one standard error ({error:.3f}) of the largest ({top['valid gap']:.3f} at "
                        f"{top['mistakes']}, {top['stable behind']}); the preset keys {preset.mistakes} stable behind "
                        f"{preprocessing.describe(preset.mistakes_stable)}. Mistakes available (up to {most}): "
                        f"{available}. Usable derived models: {len(positives)}, independent: {len(negatives)}; "
                        f"{cigm} C-IGM keys. Flagged: cae verify's verdict 'surrogate' with θ and p-values from "
                        f"{len(valid_s)} + {len(valid_r)} validation models, the references also behind the "
                        f"affordable transformations.\n"))
    tables.write("mistakes_models", preset.name, models_rows,
                 f"Retention per held-out model (preset {preset.name})\n\n<!-- {header} -->")
    print(f"wrote {paths.results_dir(preset.name) / 'mistakes.md'} in {wall:.0f} s")


if __name__ == "__main__":
    main()
