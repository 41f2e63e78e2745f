"""How many calibration models does a verdict need? Verdicts versus the calibration's size.

    python benchmarks/calibration_size.py --preset cpu --sizes 3,6,9,12 --extra-references 6

Keeps the preset's fingerprint (``cae.experiments.extract``: the C-IGM keys and natural
mistakes) and calibrates it again on the first k validation surrogates and the first k
validation references for each k of ``--sizes`` (D1, not in the C-IGM ensemble; the
preset's validation groups cycled through its architectures up to the largest k, the
models beyond the preset's own trained and cached like any model; a preset without
validation models gets them in its testing models' architectures), each reference also
behind every input transformation that costs the source at most 10 points, as
``cae extract`` does. Then it judges the same held-out suspects with each calibration:
the testing surrogates and references, ``--extra-references`` independent references
with other recipes and the ``--attacks`` removal models (the paper's by default). It
prints, per size and statistic: θ, the usable derived models flagged (within 10 points
of the source's test accuracy), the independent models accused, and the leave-one-out
self-check (``Calibration.self_check``); then every suspect's p-values per size.

The question behind it (issue "One verification you can trust"): are the distillations
that stay *inconclusive* short of evidence the defender could buy with more calibration
models, or is their agreement with the keys within what independent models show? The
calibration models are the defender's; the held-out suspects only score. Needs the
dataset (``$CAE_DATA_DIR``).
"""

import argparse
import dataclasses
import logging


def _parse(argv=None):
    from cae import presets, removal, scripts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    parser.add_argument("--sizes", default="2,3", help="comma-separated calibration sizes k (k surrogates and k "
                                                       "references each)")
    parser.add_argument("--extra-references", type=scripts.count, default=0,
                        help="independent references with other recipes among the suspects")
    parser.add_argument("--attacks", default="paper",
                        help="removal attacks among the suspects: 'paper', 'all', 'none' or a comma-separated list")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)

    from cae import benchmark, evaluation, experiments, fingerprint, presets, removal

    preset = presets.get(args.preset)
    try:
        sizes = sorted({int(k) for k in args.sizes.split(",")})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] < 2:
        raise SystemExit(f"--sizes {args.sizes!r}: give calibration sizes of 2 or more, comma-separated "
                         "(e.g. 3,6,9,12); the self-check leaves one model out of each group.")
    try:
        attacks = [a for a in removal.attack_list(args.attacks, "--attacks") if a not in removal.OTHER_TASK]
    except ValueError as err:
        raise SystemExit(str(err)) from None
    groups = ("valid_surrogates", "valid_references")
    # A preset without validation models (smoke) gets them here, in its testing models' architectures.
    architectures = {group: getattr(preset, group) or getattr(preset, group.replace("valid", "test"))
                     for group in groups}
    grown = dataclasses.replace(preset, **{group: presets._cycle(architectures[group], sizes[-1]) for group in groups})

    context = experiments.prepare(preset, verbose=False)
    fp = experiments.extract(context)
    specs = experiments.model_specs(grown, context.specs["source"])
    calibrating = [[context.store.get(spec, verbose=False) for spec in specs[group]] for group in groups]
    # All of them once, behind the transformations cae extract covers; each size is a slice.
    behind = experiments.affordable_transformations(context)
    full = fingerprint.calibrate(fp, *calibrating, alpha=fp.calibration.alpha, transformations=behind)

    derived, independent, skipped = benchmark.suspects(context, attacks, args.extra_references)
    suspects = [(d["name"], "derived", d["model"]) for d in derived]
    suspects += [(name, "independent", model) for name, model in independent]

    def accuracy(model):
        return evaluation.test_accuracy(model, context.dataset, preset.evaluate_on)

    source_accuracy = accuracy(context.models["source"])
    usable = [kind == "independent" or source_accuracy - accuracy(m) <= experiments.MAX_ACCURACY_DROP + 1e-12
              for _, kind, m in suspects]
    num_classes = context.dataset.num_classes
    suspect_rows = [fingerprint.predict_labels(m, fp.x, num_classes)[0] == fp.keys for _, _, m in suspects]

    print(f"# preset {preset.name}: {fp.n} keys; calibration sizes {', '.join(map(str, sizes))} (validation models, "
          f"architectures in turn: {', '.join(architectures['valid_surrogates'])}); references also behind "
          f"{len(behind)} transformations; source test accuracy {source_accuracy:.3f}"
          + "".join(f"; {attack} skipped ({why})" for attack, why in skipped.items()) + "\n")
    print("| k | statistic | θ | usable derived flagged | independent accused | self-check: surrogates flagged "
          "(smallest p) | self-check: references accused (smallest p) |")
    print("|---|---|---|---|---|---|---|")
    p_values = {}
    for k in sizes:
        calibration = full.with_models(range(k), range(k))
        for statistic in ("retention", "lr"):
            judged = [calibration.assess(rows, statistic) for rows in suspect_rows]
            for (name, _, _), j in zip(suspects, judged):
                p_values.setdefault(name, {}).setdefault(k, {})[statistic] = j
            flagged = [j["verdict"] == "surrogate" for j in judged]
            derived = [f for f, (_, kind, _), u in zip(flagged, suspects, usable) if kind == "derived" and u]
            independent = [f for f, (_, kind, _) in zip(flagged, suspects) if kind == "independent"]
            check = calibration.self_check(statistic)
            own = {kind: [row for row in check if row["kind"] == kind] for kind in ("surrogate", "reference")}
            theta = calibration.threshold(statistic)
            theta = "–" if theta is None else f"{theta:.3f}"
            print(f"| {k} | {statistic} | {theta} | {sum(derived)}/{len(derived)} | "
                  f"{sum(independent)}/{len(independent)} | "
                  + " | ".join(f"{sum(r['verdict'] == 'surrogate' for r in rows)}/{len(rows)} "
                               f"({min(r['p_value'] for r in rows):.2g})" for rows in own.values()) + " |", flush=True)
    print("\nEvery suspect's p-value per calibration size, retention / likelihood ratio (bold: flagged; "
          "'usable': within 10 points of the source's test accuracy).\n")
    print("| suspect | kind | " + " | ".join(f"k = {k}" for k in sizes) + " |")
    print("|---" * (2 + len(sizes)) + "|")
    for (name, kind, _), u in zip(suspects, usable):
        cells = [" / ".join(f"**{j['p_value']:.2g}**" if j["verdict"] == "surrogate" else f"{j['p_value']:.2g}"
                            for j in p_values[name][k].values()) for k in sizes]
        print(f"| {name} | {kind}{'' if u else ' (not usable)'} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
