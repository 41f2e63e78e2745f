"""Is the fingerprint weak, or are the suspects? Verdicts versus the suspect's training length.

    python benchmarks/suspect_epochs.py --preset cpu --epochs 10,20 --extra-references 6 \
        --removal retraining,jagielski,knockoff

Extracts the preset's fingerprint once (``cae.experiments.extract``: Alg. 2 on the
training models, the preset's natural mistakes, calibrated on the validation models),
then trains the suspects again for each number of epochs in ``--epochs``: the preset's
testing surrogates and references, ``--extra-references`` independent references with
other recipes (``cae.experiments.extra_reference_specs``) and the ``--removal`` attacks
that train a model from scratch (cached in the zoo like any model; the preset's own
number reuses its models). It prints, per model: test accuracy, fidelity to the source and
agreement on the source's mistakes (on the zoo's test sample), retention and shift per
key group (log-odds against the calibration references' rates, ``cae.stats.model_shift``),
and ``cae verify``'s verdict and p-value for both statistics; then, per number of
epochs, how many derived models within 10 points of the source's test accuracy are
flagged, how many independent ones are accused, and the ROC-AUC. ``--behind`` judges
every suspect again behind each input transformation that costs the source at most 10
points (the calibration covers them: a thief may put any of them in front of a model).

Two questions at once. If retention were low only because the suspects are weak,
better-trained surrogates would keep more of the fingerprint while references stayed
put. And a reference trained longer than the calibration models is a suspect the
calibration never saw: it must not be accused. The fingerprint does not change across
rows, so what moves is the suspects alone. Needs the dataset (``$CAE_DATA_DIR``).
"""

import argparse
import logging


def _parse(argv=None):
    from cae import presets, scripts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    parser.add_argument("--epochs", default="3,8", help="comma-separated training epochs of the suspects")
    parser.add_argument("--architectures", default="",
                        help="comma-separated testing-model architectures to train (default: all of the preset's)")
    parser.add_argument("--extra-references", type=scripts.count, default=0, help="independent references with other recipes")
    parser.add_argument("--removal", default="",
                        help="comma-separated removal attacks whose models train from scratch (e.g. retraining, "
                             "jagielski, knockoff, papernot, ensemble)")
    parser.add_argument("--behind", action="store_true",
                        help="also judge every suspect behind each input transformation that costs the source at most "
                             "10 points (cae.experiments.affordable_transformations)")
    parser.add_argument("--kinds", default="derived,independent",
                        help="which suspects to train: derived, independent or both (comma-separated)")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    import numpy as np

    from cae import cluster, data, experiments, fingerprint, preprocessing, presets, removal, stats, zoo

    preset = presets.get(args.preset)
    wanted = set(filter(None, args.architectures.split(",")))
    try:
        epoch_counts = [int(e) for e in args.epochs.split(",")]
    except ValueError:
        epoch_counts = []
    if not epoch_counts or min(epoch_counts) < 1:
        raise SystemExit(f"--epochs {args.epochs!r}: give positive numbers of epochs, comma-separated (e.g. 10,20).")
    kinds = set(filter(None, args.kinds.split(",")))
    if not kinds or kinds - {"derived", "independent"}:
        raise SystemExit(f"--kinds {args.kinds!r}: give derived, independent or both, comma-separated.")
    try:
        attacks = removal.attack_list(args.removal, "--removal") if args.removal else []
    except ValueError as err:
        raise SystemExit(str(err)) from None
    tuned = [name for name in attacks if removal.REMOVAL_ATTACKS[name].fine_tune]
    if tuned:
        raise SystemExit(f"--removal {','.join(tuned)}: these fine-tune the source for the preset's own epochs, which "
                         "do not depend on how long a suspect trains; give attacks that train from scratch.")
    context = experiments.prepare(preset, verbose=False)
    fp = experiments.extract(context)
    calibration, groups = fp.calibration, fingerprint.key_groups(fp)
    store = context.store
    pick = zoo.test_subset(context.dataset, preset.evaluate_on or None)
    x_test, y_test = data.to_float(context.dataset.x_test[pick]), context.dataset.y_test[pick]
    source = zoo.predict(context.models["source"], x_test).argmax(axis=1)
    wrong = source != y_test
    rates = {name: stats.match_rates(calibration.reference_matches[:, keys]) for name, keys in groups.items()}
    names = list(groups)
    print(f"# preset {preset.name}: {fp.n} keys ({', '.join(f'{len(k)} {n}' for n, k in groups.items())}), "
          f"eps {preset.epsilon}; calibration: {calibration.models}; source mistakes on the test sample: {wrong.sum()}")
    suspects = [(f"{group[5:-1]} ({spec.architecture})", "derived" if group == "test_surrogates" else "independent",
                 spec) for group in ("test_surrogates", "test_references") for spec in context.specs[group]
                if not wanted or spec.architecture in wanted]
    suspects += [(f"extra reference {i} ({spec.architecture}, {spec.optimizer}, {spec.augment})", "independent", spec)
                 for i, spec in enumerate(experiments.extra_reference_specs(context.specs, args.extra_references))]
    source_accuracy = np.mean(source == y_test)
    behind = experiments.affordable_transformations(context) if args.behind else []
    conditions = [f"{kind} {strength:g}" for kind, strength in behind]
    num_classes = context.dataset.num_classes
    for epochs in epoch_counts:
        print(f"\n## Suspects trained {epochs} epochs\n")
        print("| suspect | epochs | test accuracy | fidelity | agreement on the source's mistakes | "
              + " | ".join(f"retention {n} | shift {n}" for n in names)
              + " | retention: verdict (p) | LR: verdict (p) | train s |")
        print("|---" * (8 + 2 * len(names)) + "|")
        made = [(name, kind, spec.replace(epochs=epochs)) for name, kind, spec in suspects]
        made += [(name, "derived", name) for name in attacks]
        counts, transformed = {}, []
        for name, kind, spec in [row for row in made if row[1] in kinds]:
            if isinstance(spec, str):  # a removal attack: its model, and every spec it trains (members, rounds)
                model = removal.remove(spec, context.specs["source"], preset, store, verbose=False, epochs=epochs)
                trained = removal.removal_spec(spec, context.specs["source"], preset, epochs=epochs)
                trained = cluster.ordered(trained if isinstance(trained, list) else [trained])
            else:
                model, trained = store.get(spec, verbose=False), [spec]
            seconds = sum(store.metrics(one).get("train_seconds", 0.0) for one in trained)
            labels = zoo.predict(model, x_test).argmax(axis=1)
            accuracy = np.mean(labels == y_test)
            usable = kind == "independent" or source_accuracy - accuracy <= experiments.MAX_ACCURACY_DROP + 1e-12
            cells = [name, str(epochs), f"{accuracy:.3f}", f"{np.mean(labels == source):.3f}",
                     f"{np.mean(labels[wrong] == source[wrong]):.3f}"]
            row = []
            for condition, (how, strength) in zip(["", *conditions], [(None, None), *behind]):
                seen = model if how is None else preprocessing.wrap(model, how, strength)
                matches = fingerprint.predict_labels(seen, fp.x, num_classes)[0] == fp.keys
                judged = {statistic: calibration.assess(matches, statistic) for statistic in ("retention", "lr")}
                for statistic, j in judged.items():
                    if usable:
                        counts.setdefault((kind, statistic, condition), []).append((j["verdict"] == "surrogate", j["score"]))
                if condition:
                    row.append(" / ".join(f"**{j['p_value']:.2g}**" if j["verdict"] == "surrogate"
                                          else f"{j['p_value']:.2g}" for j in judged.values()))
                    continue
                for group, keys in groups.items():
                    cells += [f"{np.mean(matches[keys]):.3f}", f"{stats.model_shift(matches[keys], rates[group]):+.2f}"]
                cells += [f"{j['verdict']} ({j['p_value']:.2g})" for j in judged.values()]
                print("| " + " | ".join(cells) + f" | {seconds:.0f} |", flush=True)
            transformed.append((name, row))
        print(f"\nUsable models (derived: within 10 points of the source's test accuracy, {source_accuracy:.3f}):\n")
        for condition in ["", *conditions]:
            where = f"behind {condition}" if condition else "untransformed"
            print(f"- {where}: " + "; ".join(_summary(counts, statistic, condition, stats)
                                             for statistic in ("retention", "lr")), flush=True)
        if conditions:
            print(f"\nBehind each affordable transformation ({epochs} epochs): p-value by retention / by the "
                  "likelihood ratio, bold when flagged.\n")
            print("| suspect | " + " | ".join(conditions) + " |")
            print("|---" * (1 + len(conditions)) + "|")
            for name, row in transformed:
                print(f"| {name} | " + " | ".join(row) + " |", flush=True)


def _summary(counts, statistic, condition, stats):
    """Flagged derived models, accused independent ones and ROC-AUC (usable models only)."""
    derived = counts.get(("derived", statistic, condition), [])
    independent = counts.get(("independent", statistic, condition), [])
    text = (f"{statistic}: {sum(f for f, _ in derived)}/{len(derived)} derived within 10 points flagged, "
            f"{sum(f for f, _ in independent)}/{len(independent)} independent accused")
    if derived and independent:
        text += f", AUC {stats.roc_auc([s for _, s in derived], [s for _, s in independent]):.3f}"
    return text


if __name__ == "__main__":
    main()
