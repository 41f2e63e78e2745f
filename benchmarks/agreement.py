"""How much closer to the source is a derived model than an independent one, before any fingerprint?

    python benchmarks/agreement.py --preset cpu --extra-references 6 --removal paper

For every model of the preset's zoo (every group, ``--extra-references`` more
independent references and the removal attacks of ``--removal``), on test images none of
the zoo's metrics use: its test accuracy, its agreement with the source (fidelity: the
same label), and its agreement on the images the source gets wrong (copying the source's
mistakes). A fingerprint can only separate what the models' functions separate: when a
group of surrogates agrees with the source hardly more often than references trained on
the same data do, no choice of keys makes the groups far apart on held-out models. The
summary rows give each group's range; nothing is trained except what the zoo lacks.
"""

import argparse
import logging
import time


def _parse(argv=None):
    from cae import presets, scripts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(presets.PRESETS))
    parser.add_argument("--extra-references", type=scripts.count, default=0, metavar="N")
    parser.add_argument("--removal", default="", help="comma-separated removal attacks, 'paper' or 'all'")
    parser.add_argument("--images", type=scripts.count, default=5_000, metavar="N",
                        help="test images to compare on (default 5,000)")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    import numpy as np

    from cae import benchmark, evaluation, experiments, paths, presets, removal, tables, zoo

    preset = presets.get(args.preset)
    started = time.time()
    context = experiments.prepare(preset, verbose=False)
    x, y = benchmark.natural_pool(context)  # test images the zoo's metrics do not use
    x, y = x[: args.images], y[: args.images]
    source = zoo.predict(context.models["source"], x).argmax(axis=1)
    wrong = source != y
    named = []
    for group in experiments.GROUPS:
        named += [(group, spec.architecture, m) for spec, m in zip(context.specs[group], context.models[group])]
    for spec in experiments.extra_reference_specs(context.specs, args.extra_references):
        named.append(("extra_references", f"{spec.architecture}, {spec.optimizer}, {spec.augment}",
                      context.store.get(spec, verbose=False)))
    attacks = [a for a in removal.attack_list(args.removal or "none") if a not in removal.OTHER_TASK]
    for name, model in evaluation.removal_models(context, attacks).items():
        named.append(("removal", removal.REMOVAL_ATTACKS[name].name, model))
    rows = []
    for group, what, model in named:
        labels = zoo.predict(model, x).argmax(axis=1)
        rows.append({"group": group, "model": what, "test accuracy": float(np.mean(labels == y)),
                     "agreement": float(np.mean(labels == source)),
                     "agreement on the source's mistakes": float(np.mean(labels[wrong] == source[wrong]))})
    summary = []
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group]
        summary.append({"group": group, "models": len(members),
                        **{f"{k} (min–max)": f"{min(r[k] for r in members):.3f}–{max(r[k] for r in members):.3f}"
                           for k in ("test accuracy", "agreement", "agreement on the source's mistakes")}})
    notes = (f"{len(y)} test images the zoo's metrics do not use; the source gets {int(wrong.sum())} wrong "
             f"(accuracy {1 - wrong.mean():.3f}). Wall time {time.time() - started:.0f} s.\n")
    tables.write("agreement", preset.name, summary, f"Agreement with the source, by group (preset {preset.name})",
                 notes=notes)
    tables.write("agreement_models", preset.name, rows, f"Agreement with the source, every model (preset {preset.name})")
    print(tables.markdown(summary))
    print(notes)
    print(f"# wrote {paths.results_dir(preset.name)}")
    return rows, summary


if __name__ == "__main__":
    main()
