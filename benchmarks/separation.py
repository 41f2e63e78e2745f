"""Does the fingerprint tell derived models from independent ones, on models it never saw?

    python benchmarks/separation.py --preset cpu --eps 0.08,0.15 --transforms none,shift+flip \
        --select train,valid --extra-references 6 --removal all

For every ε, C-IGM variant (``--transforms``, see :class:`cae.attacks.CIGM`; ``--aggregates``,
see :func:`cae.ensemble.compose`; ``--targets``; ``--members``: the paper's ensemble or
the robust one with adversarially trained members, :func:`cae.experiments.cigm_ensemble`;
``--iterations`` with ``--steps``: the number and size of C-IGM's steps; ``--smooth``: its
translation-invariant gradient blur) and
selection rule (``--select``), the fingerprint is extracted and scored on held-out
models only:

* ``train``: Alg. 2, conferrability >= τ on the training models (the ensemble);
* ``valid``: Alg. 2 and also Confer(validation surrogates, validation references) >=
  ``--tau-valid`` (the preset's validation models are trained on D1 like the training
  models but are not in the ensemble).

Columns: examples kept; C-IGM's conferrability on the training, validation and testing
models (Table II's column, over all successful examples); the retention of the lowest
testing surrogate and of the highest testing reference; the lowest derived and highest
independent score; ROC-AUC of derived models (testing surrogates and the removal
attacks that keep their test accuracy within 10 points of the source's) against
independent ones (testing references and ``--extra-references`` more, some with other
training recipes, :data:`cae.experiments.EXTRA_RECIPES`), for the paper's retention
and for the per-fingerprint likelihood ratio (:func:`cae.stats.likelihood_ratio`, its
rates from the validation models); how many derived and independent models cae
verify's rule would call surrogates (score >= θ and p-value <= 1 %, calibrated on the
validation models, untransformed); with ``--mistakes N``, the AUCs when N natural test
images the source misclassifies are added as keys (a derived model tends to copy the
source's mistakes). Nothing here is tuned on the testing models: they are what the rows
are judged on, so choose a row by its training and validation columns, or report them
all. The report goes to ``results/<preset>/separation.{md,csv}`` (``--name`` another).
"""

import argparse
import dataclasses
import logging
import time


def _parse(argv=None):
    from cae import attacks, experiments, presets, removal, scripts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(presets.PRESETS))
    parser.add_argument("--eps", default=None, help="comma-separated ε (default: the preset's)")
    parser.add_argument("--transforms", default="none,shift+flip", help="comma-separated C-IGM transforms")
    parser.add_argument("--dropouts", default=None,
                        help="comma-separated rates of the ensemble's dropout (default: the preset's, the paper's 0.5)")
    parser.add_argument("--aggregates", default="mean",
                        help="comma-separated ways the C-IGM ensemble combines its members: mean (the paper's), "
                             "geometric, worst (cae.ensemble.compose)")
    parser.add_argument("--members", default="paper",
                        help="comma-separated ensembles: paper (the training models), robust (plus the preset's "
                             "adversarially trained members, cae.experiments.robust_models)")
    parser.add_argument("--robust-members", type=scripts.count, default=None, metavar="N",
                        help="with --members robust: N adversarially trained surrogates and N references "
                             "(default: the preset's robust_members)")
    parser.add_argument("--training-models", type=scripts.count, default=None, metavar="N",
                        help="N training surrogates and N training references (the ensemble's), the preset's "
                             "architectures in turn (default: the preset's)")
    parser.add_argument("--architecture-epochs", default=None, metavar="ARCH:E,...",
                        help="epochs of every model of these architectures, suspects included "
                             "(Preset.architecture_epochs; e.g. allconv:20)")
    parser.add_argument("--validation-models", type=scripts.count, default=None, metavar="N",
                        help="the first N of the preset's validation surrogates and of its validation references "
                             "(default: all; 0: none, which leaves the validation columns and the verdicts out)")
    parser.add_argument("--training-epochs", type=scripts.count, default=None, metavar="E",
                        help="epochs of the training models only (default: the preset's)")
    parser.add_argument("--iterations", default=None,
                        help="comma-separated numbers of C-IGM steps (default: the preset's attack_iterations); "
                             "with --steps, each row's step size")
    parser.add_argument("--steps", default=None,
                        help="comma-separated C-IGM step sizes, one per --iterations entry (default: the paper's 0.01)")
    parser.add_argument("--smooth", default="0",
                        help="comma-separated widths (pixels) of C-IGM's translation-invariant gradient blur "
                             "(cae.attacks.CIGM; 0, the default, is the paper's)")
    parser.add_argument("--targets", default="most_conferrable",
                        help="comma-separated C-IGM target rules (cae.attacks.CIGM.TARGETS)")
    parser.add_argument("--select", default="train,valid", help="comma-separated selection rules: train, valid")
    parser.add_argument("--tau-valid", type=float, default=0.6, help="conferrability bar on the validation models")
    parser.add_argument("--extra-references", type=scripts.count, default=0, metavar="N")
    parser.add_argument("--removal", default="",
                        help=f"comma-separated removal attacks among the derived models, or 'all' "
                             f"({', '.join(removal.REMOVAL_ATTACKS)}; 'paper' for the paper's ten)")
    parser.add_argument("--mistakes", type=scripts.count, default=0, metavar="N",
                        help="also score the fingerprint plus N test images the source misclassifies (keyed by "
                             "its wrong label; none of the images the zoo's metrics use)")
    parser.add_argument("--per-model", action="store_true", help="also print every model's scores")
    parser.add_argument("--name", default="separation",
                        help="report name: results/<preset>/NAME.{md,csv} (and NAME_models.* with --per-model)")
    args = parser.parse_args(argv)
    args.schedules = _schedules(args.iterations, args.steps)
    args.architecture_epochs = _architecture_epochs(args.architecture_epochs)
    try:
        args.smooths = [float(w) for w in args.smooth.split(",")]
    except ValueError:
        args.smooths = [-1.0]
    if any(not 0 <= w <= attacks.MAX_SMOOTH for w in args.smooths):
        raise SystemExit(f"--smooth {args.smooth!r}: give comma-separated widths in pixels, 0 to "
                         f"{attacks.MAX_SMOOTH:g} (0: no blur).")
    if not args.name.isidentifier():
        parser.error(f"--name {args.name!r} is not allowed; use letters, digits and underscores (a file name).")
    return args


def _architecture_epochs(text):
    """``"allconv:20,rescnn:15"`` -> (("allconv", 20), ("rescnn", 15)); None stays None."""
    from cae import models

    if text is None:
        return None
    pairs = []
    for item in text.split(","):
        name, _, epochs = item.partition(":")
        if name not in models.ARCHITECTURES or not epochs.isdigit() or int(epochs) < 1:
            raise SystemExit(f"--architecture-epochs {text!r}: give ARCHITECTURE:EPOCHS pairs, e.g. allconv:20 "
                             f"(architectures: {', '.join(models.ARCHITECTURES)}; epochs 1 or more).")
        pairs.append((name, int(epochs)))
    return tuple(pairs)


def _schedules(iterations, steps):
    """[(max_iter or None, eps_step or None)]: the C-IGM step schedules a run compares;
    [(None, None)] is the preset's."""
    try:
        counts = [None] if iterations is None else [int(i) for i in iterations.split(",")]
        sizes = [None] * len(counts) if steps is None else [float(s) for s in steps.split(",")]
    except ValueError:
        counts, sizes = [0], [0.0]
    if any(c is not None and c < 1 for c in counts) or any(s is not None and not 0 < s <= 1 for s in sizes):
        raise SystemExit(f"--iterations {iterations!r} --steps {steps!r}: give comma-separated positive ints and "
                         "step sizes in (0, 1], e.g. --iterations 50,200 --steps 0.02,0.005.")
    if len(sizes) != len(counts):
        raise SystemExit(f"--steps gives {len(sizes)} step sizes for {len(counts)} --iterations; give one each.")
    return list(zip(counts, sizes))


def preset_of(args):
    """The preset with the command line's overrides (--robust-members, --training-models,
    --training-epochs, --architecture-epochs, --validation-models)."""
    from cae import presets

    preset = presets.get(args.preset)
    if args.robust_members is not None:
        preset = dataclasses.replace(preset, robust_members=args.robust_members)
    if args.training_models:  # count against quality at equal CPU time
        cycle = lambda group: tuple(getattr(preset, group)[i % len(getattr(preset, group))]
                                    for i in range(args.training_models))
        preset = dataclasses.replace(preset, train_surrogates=cycle("train_surrogates"),
                                     train_references=cycle("train_references"))
    if args.training_epochs:
        preset = dataclasses.replace(preset, training_epochs=args.training_epochs)
    if args.architecture_epochs is not None:
        preset = dataclasses.replace(preset, architecture_epochs=args.architecture_epochs)
    if args.validation_models is not None:  # a prefix: the same models as the preset's first N
        preset = dataclasses.replace(preset, valid_surrogates=preset.valid_surrogates[:args.validation_models],
                                     valid_references=preset.valid_references[:args.validation_models])
    return preset


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    import numpy as np

    from cae import (attacks, benchmark, evaluation, experiments, fingerprint, paths, presets, removal, scores, stats,
                     tables, zoo)

    preset = preset_of(args)
    started = time.time()
    context = experiments.prepare(preset, verbose=False)
    # A model of another label set has no keys to compare.
    removals = [a for a in removal.attack_list(args.removal or "none") if a not in removal.OTHER_TASK]
    # Numbered: a preset may hold two testing models of one architecture (quick holds two CNNs).
    derived = {f"testing surrogate {i} ({s.architecture})": m for i, (s, m)
               in enumerate(zip(context.specs["test_surrogates"], context.models["test_surrogates"]))}
    derived_names = list(derived)
    derived.update({removal.REMOVAL_ATTACKS[a].name: m
                    for a, m in evaluation.removal_models(context, removals).items()})
    independent = {f"testing reference {i} ({s.architecture})": m for i, (s, m)
                   in enumerate(zip(context.specs["test_references"], context.models["test_references"]))}
    for i, spec in enumerate(experiments.extra_reference_specs(context.specs, args.extra_references)):
        recipe = "" if spec.optimizer == preset.optimizer and spec.augment == preset.augment else \
            f", {spec.optimizer}, {spec.augment}{', smoothing' if spec.options else ''}"
        independent[f"extra reference {i} ({spec.architecture}{recipe})"] = context.store.get(spec, verbose=False)
    accuracy = {name: evaluation.test_accuracy(m, context.dataset, preset.evaluate_on)
                for name, m in [("source", context.models["source"]), *derived.items()]}
    usable = [n for n in derived if accuracy["source"] - accuracy[n] <= experiments.MAX_ACCURACY_DROP + 1e-12]
    print(f"# preset {preset.name}: zoo and suspects ready in {time.time() - started:.0f} s; source accuracy "
          f"{accuracy['source']:.3f}; derived {len(derived)} ({len(usable)} usable), independent {len(independent)}")
    mistakes = None
    if args.mistakes:  # natural images the source gets wrong: a derived model tends to copy its mistakes
        x_pool, y_pool = benchmark.natural_pool(context)  # test images the zoo's metrics do not use
        source_labels = zoo.predict(context.models["source"], x_pool).argmax(axis=1)
        wrong = np.flatnonzero(source_labels != y_pool)[: args.mistakes]
        x_m, key_m = x_pool[wrong], source_labels[wrong]
        suspects_all = {**{n: derived[n] for n in usable}, **independent}
        mistakes = {"key": key_m, **{n: zoo.predict(m, x_m).argmax(axis=1) == key_m for n, m in suspects_all.items()},
                    "valid_surrogates": np.array([zoo.predict(m, x_m).argmax(axis=1) == key_m
                                                  for m in context.models["valid_surrogates"]]),
                    "valid_references": np.array([zoo.predict(m, x_m).argmax(axis=1) == key_m
                                                  for m in context.models["valid_references"]])}
        print(f"# {len(key_m)} misclassified test images as extra keys")
    epsilons = [float(e) for e in args.eps.split(",")] if args.eps else [preset.epsilon]
    rows, per_model = [], []
    for eps in epsilons:
        dropouts = [float(d) for d in args.dropouts.split(",")] if args.dropouts else [preset.dropout]
        variants = [(t, a, g, m, d, c, w) for t in args.transforms.split(",") for a in args.aggregates.split(",")
                    for g in args.targets.split(",") for m in args.members.split(",") for d in dropouts
                    for c in args.schedules for w in args.smooths]
        for transform, aggregate, target, members, dropout, (iterations, step), smooth in variants:
            began = time.time()
            extra = {} if members == "paper" else {"members": members}
            run_context = context if iterations is None else \
                dataclasses.replace(context, preset=dataclasses.replace(preset, attack_iterations=iterations))
            result = experiments.run_attack(run_context, "cigm", eps, target=target, transform=transform,
                                            aggregate=aggregate, dropout=dropout, eps_step=step, smooth=smooth,
                                            **extra)
            seconds = time.time() - began
            ok = result["success"]
            x_ok, t_ok = result["x_adv"][ok], result["t"][ok]
            suspects = {**{n: derived[n] for n in usable}, **independent}
            labels = dict(zip(suspects, scores.predict_labels(list(suspects.values()), x_ok)))
            confer = {g: experiments.summarise(result, g)["conferrable"] for g in ("train", "valid", "test")
                      if len(result[f"{g}_surrogates"])}
            for rule in args.select.split(","):
                keep = experiments.fingerprint_mask(result, preset.tau)
                if rule == "valid" and not len(result["valid_surrogates"]):
                    raise SystemExit(f"preset {preset.name} has no validation models; use --select train.")
                if rule == "valid":
                    keep &= fingerprint.extract_mask(scores.confer(result["valid_surrogates"],
                                                                   result["valid_references"], result["t"]),
                                                     args.tau_valid)
                elif rule != "train":
                    raise SystemExit(f"unknown selection rule {rule!r}; use train or valid.")
                row = {"ε": eps, "transform": transform, "aggregate": aggregate, "target": target,
                       "members": members, "dropout": dropout, **({"smooth": smooth} if args.smooth != "0" else {}),
                       **({"iterations": iterations or preset.attack_iterations,
                           "step": step or attacks.ATTACKS["igm"].eps_step} if args.iterations or args.steps else {}),
                       "select": rule, "attack s": round(seconds),
                       "kept": int(keep.sum()), **{f"confer {g}": c for g, c in confer.items()}}
                if keep.sum() == 0:
                    rows.append(row)
                    continue
                if len(result["valid_surrogates"]):  # the defender's own held-out models: what a row is chosen by
                    valid_s = (result["valid_surrogates"][:, keep] == result["t"][keep]).mean(axis=1)
                    valid_r = (result["valid_references"][:, keep] == result["t"][keep]).mean(axis=1)
                    row.update({"valid min surrogate": float(valid_s.min()), "valid max reference": float(valid_r.max()),
                                "valid AUC": stats.roc_auc(list(valid_s), list(valid_r))})
                kept = keep[ok]
                matches = {n: labels[n][kept] == t_ok[kept] for n in suspects}
                calibration, flagged = None, {}
                if len(result["valid_surrogates"]):
                    calibration = fingerprint.Calibration(result["valid_surrogates"][:, keep] == result["t"][keep],
                                                          result["valid_references"][:, keep] == result["t"][keep])
                    for statistic in fingerprint.STATISTICS:  # cae verify's rule, untransformed calibration
                        flagged[statistic] = {n for n, m in matches.items()
                                              if calibration.judge(m, statistic) == "surrogate"}
                score = {s: {n: fingerprint.STATISTICS[s].score(calibration, m) for n, m in matches.items()}
                         for s in fingerprint.available_statistics(calibration)}
                retention = score[fingerprint.DEFAULT_STATISTIC]
                positives, negatives = usable, list(independent)
                test_s = [retention[n] for n in derived_names if n in usable]
                test_r = [retention[n] for n in independent if n.startswith("testing")]
                row.update({
                    "min testing surrogate": min(test_s) if test_s else float("nan"),
                    "max testing reference": max(test_r),
                    "min derived": min(retention[n] for n in positives),
                    "max independent": max(retention[n] for n in negatives),
                    **{f"AUC {s.label}": stats.roc_auc([score[name][n] for n in positives],
                                                       [score[name][n] for n in negatives]) if name in score else None
                       for name, s in fingerprint.STATISTICS.items()},
                })
                row["gap"] = row["min derived"] - row["max independent"]
                for statistic, names in flagged.items():
                    row[f"flagged derived ({statistic})"] = f"{len(names & set(positives))}/{len(positives)}"
                    row[f"flagged independent ({statistic})"] = f"{len(names & set(negatives))}/{len(negatives)}"
                if mistakes is not None and calibration is not None:
                    plus = {n: np.concatenate([matches[n], mistakes[n]]) for n in suspects}
                    with_mistakes = fingerprint.Calibration(
                        np.concatenate([result["valid_surrogates"][:, keep] == result["t"][keep],
                                        mistakes["valid_surrogates"]], axis=1),
                        np.concatenate([result["valid_references"][:, keep] == result["t"][keep],
                                        mistakes["valid_references"]], axis=1))
                    for name, s in fingerprint.STATISTICS.items():
                        row[f"AUC {s.label} +mistakes"] = stats.roc_auc(
                            [with_mistakes.score(plus[n], name) for n in positives],
                            [with_mistakes.score(plus[n], name) for n in negatives])
                rows.append(row)
                for n in suspects:
                    per_model.append({"ε": eps, "transform": transform, "aggregate": aggregate, "target": target,
                                      "members": members, "dropout": dropout,
                                      **{k: row[k] for k in ("smooth", "iterations", "step") if k in row},
                                      "select": rule, "model": n,
                                      **{f"flagged ({s.label})": n in flagged.get(name, ())
                                         for name, s in fingerprint.STATISTICS.items()},
                                      "kind": "derived" if n in derived else "independent",
                                      "accuracy drop": accuracy["source"] - accuracy[n] if n in accuracy else None,
                                      **{f"{s.label} {s.unit}".strip(): score.get(name, {}).get(n)
                                         for name, s in fingerprint.STATISTICS.items()}})
            for row in rows[-len(args.select.split(",")):]:
                print("# " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in row.items()), flush=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    tables.write(args.name, preset.name, rows, f"Separation on held-out models (preset {preset.name})",
                 columns=columns)
    if args.per_model:
        tables.write(f"{args.name}_models", preset.name, per_model, f"Per-model scores (preset {preset.name})")
        print(tables.markdown(per_model))
    print(f"# wrote {paths.results_dir(preset.name)}; {time.time() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
