"""How many of the source's natural mistakes to key beside the C-IGM examples, chosen on the
defender's validation models and scored on held-out ones.

    python benchmarks/mistakes.py --preset cpu --counts 0,100,300,1000,2000 --extra-references 6 --removal all

For each count N, the fingerprint is the preset's C-IGM examples (Alg. 2) and the first N
natural images the source misclassifies (:func:`cae.experiments.natural_mistakes`: the
defender's images in neither D1 nor D2), each keyed by the source's label. One row per N:

* **choice** (validation models only, the preset's calibration models): the gap between
  the lowest usable validation surrogate (test accuracy within 10 points of the source's)
  and the highest validation reference, in retention; the count chosen is the fewest whose
  gap is within one standard error of the largest (the one-standard-error rule);
* **report** (held-out models only): ROC-AUC of retention and of the likelihood ratio of
  usable derived models (testing surrogates, removal attacks) against independent ones
  (testing and extra references); the gap between the lowest derived and the highest
  independent retention; how many of each cae verify's rule calls a surrogate (θ and
  p-values from the validation models, references also behind the affordable input
  transformations, as ``cae extract`` calibrates); the source's own p-value.

Nothing is chosen on the held-out models. The first N mistakes of a larger N are the
same images, so the rows differ only in N.
"""

import argparse
import logging
import math
import time


def _parse(argv=None):
    from cae import presets, scripts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(presets.PRESETS))
    parser.add_argument("--counts", default="0,100,300,1000,2000",
                        help="comma-separated numbers of natural mistakes (default 0,100,300,1000,2000)")
    parser.add_argument("--extra-references", type=scripts.count, default=6, metavar="N")
    parser.add_argument("--removal", default="all", help="comma-separated removal attacks, 'paper' or 'all'")
    args = parser.parse_args(argv)
    try:
        args.counts = sorted({int(c) for c in args.counts.split(",")})
    except ValueError:
        parser.error(f"--counts {args.counts!r}: expected comma-separated whole numbers, e.g. 0,100,1000.")
    if args.counts[0] < 0:
        parser.error("--counts: numbers of mistakes are 0 or more.")
    return args


def choose(rows):
    """The one-standard-error rule: the row with the fewest mistakes whose ``"valid gap"`` is
    within one standard error of the largest (a gap is a difference of two retentions over
    the row's ``"keys"``; at most sqrt(2 · 0.25 / keys)). Returns (chosen row, row with the
    largest gap, the standard error)."""
    top = max(rows, key=lambda r: r["valid gap"])
    error = math.sqrt(2 * 0.25 / top["keys"])
    best = min((r for r in rows if r["valid gap"] >= top["valid gap"] - error), key=lambda r: r["mistakes"])
    return best, top, error


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    import numpy as np

    from cae import (benchmark, evaluation, experiments, fingerprint, paths, preprocessing, presets, scripts, stats,
                     tables, zoo)

    preset = presets.get(args.preset)
    started = time.time()
    if not (preset.valid_surrogates and preset.valid_references):  # before the zoo trains
        raise SystemExit(f"preset {preset.name} has no validation models to choose on; use one that has (cpu).")
    context = experiments.prepare(preset, verbose=False)
    fp = experiments.extract(context, mistakes=0)
    most = max(args.counts)
    x_m = experiments.natural_mistakes(context, most)[0] if most else fp.x[:0]
    x = np.concatenate([fp.x, x_m])
    keys = zoo.predict(context.models["source"], x).argmax(axis=1)
    cigm = fp.n

    def matches(model):
        return zoo.predict(model, x).argmax(axis=1) == keys

    accuracy = {}

    def usable(name, model):
        accuracy[name] = evaluation.test_accuracy(model, context.dataset, preset.evaluate_on)
        return accuracy["source"] - accuracy[name] <= experiments.MAX_ACCURACY_DROP + 1e-9

    accuracy["source"] = evaluation.test_accuracy(context.models["source"], context.dataset, preset.evaluate_on)
    valid_s = [matches(m) for m in context.models["valid_surrogates"]]
    valid_s_usable = [v for i, (v, m) in enumerate(zip(valid_s, context.models["valid_surrogates"]))
                      if usable(f"validation surrogate {i}", m)]
    valid_r = [matches(m) for m in context.models["valid_references"]]
    transformations = experiments.affordable_transformations(context)
    behind = {f"{kind} {strength:g}": [matches(preprocessing.wrap(m, kind, strength))
                                        for m in context.models["valid_references"]]
              for kind, strength in transformations}
    derived, independent, _ = benchmark.suspects(context, experiments.removal_attacks(args.removal),
                                                 args.extra_references)
    derived = [(d["name"], d["model"]) for d in derived if d["mapping"] is None]
    positives = {name: matches(m) for name, m in derived if usable(name, m)}
    negatives = {name: matches(m) for name, m in independent}
    source = matches(context.models["source"])

    rows = []
    for n in args.counts:
        cut = slice(0, cigm + n)
        calibration = fingerprint.Calibration(np.array([v[cut] for v in valid_s]), np.array([v[cut] for v in valid_r]),
                                              transformed_references={c: np.array([v[cut] for v in rows_])
                                                                      for c, rows_ in behind.items()})
        score = {s: {name: calibration.score(m[cut], s) for name, m in {**positives, **negatives}.items()}
                 for s in fingerprint.STATISTICS}
        verdict = {s: {name: calibration.judge(m[cut], s) for name, m in {**positives, **negatives}.items()}
                   for s in fingerprint.STATISTICS}
        retention = score[fingerprint.DEFAULT_STATISTIC]
        rows.append({
            "mistakes": n, "keys": cigm + n,
            "valid gap": min(v[cut].mean() for v in valid_s_usable) - max(v[cut].mean() for v in valid_r),
            **{f"AUC {s.label}": stats.roc_auc([score[name][p] for p in positives], [score[name][q] for q in negatives])
               for name, s in fingerprint.STATISTICS.items()},
            "min derived": min(retention[p] for p in positives), "max independent": max(retention[q] for q in negatives),
            "gap": min(retention[p] for p in positives) - max(retention[q] for q in negatives),
            "θ": calibration.threshold(fingerprint.DEFAULT_STATISTIC),
            **{f"flagged {kind} ({s})": f"{sum(verdict[s][m] == 'surrogate' for m in group)}/{len(group)}"
               for s in fingerprint.STATISTICS for kind, group in (("derived", positives), ("independent", negatives))},
            "source p-value": f"{calibration.p_value(source[cut]):.2g}",
        })
    best, top, error = choose(rows)
    per_model = [{"model": name, "kind": kind, "test accuracy": accuracy.get(name),
                  "retention C-IGM": float(m[:cigm].mean()),
                  **{f"retention +{n}": float(m[:cigm + n].mean()) for n in args.counts if n},
                  **{f"on mistakes (first {n})": float(m[cigm:cigm + n].mean()) for n in args.counts if n}}
                 for kind, group in (("derived (usable)", positives), ("independent", negatives))
                 for name, m in group.items()]
    wall = time.time() - started
    header = (f"command: python benchmarks/mistakes.py --preset {preset.name} --counts "
              f"{','.join(map(str, args.counts))} --extra-references {args.extra_references} --removal {args.removal}; "
              f"date {time.strftime('%Y-%m-%d')}; commit {scripts.git_revision()}; wall time {wall:.0f} s")
    tables.write("mistakes", preset.name, rows, f"Natural mistakes beside the C-IGM keys (preset {preset.name})\n\n"
                 f"<!-- {header} -->", notes=(f"Chosen on the validation models: {best['mistakes']} mistakes, the fewest whose 'valid gap' is "
                        f"within one standard error ({error:.3f}) of the largest ({top['valid gap']:.3f} at "
                        f"{top['mistakes']}); the preset keys {preset.mistakes}. Usable derived models: {len(positives)}, independent: {len(negatives)}; "
                        f"{cigm} C-IGM keys. Flagged: cae verify's verdict 'surrogate' with θ and p-values from "
                        f"{len(valid_s)} + {len(valid_r)} validation models, the references also behind "
                        f"{len(behind)} affordable input transformations.\n"))
    tables.write("mistakes_models", preset.name, per_model,
                 f"Retention per held-out model (preset {preset.name})\n\n<!-- {header} -->")
    print(f"wrote {paths.results_dir(preset.name) / 'mistakes.md'} in {wall:.0f} s")


if __name__ == "__main__":
    main()
