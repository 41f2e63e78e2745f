"""Choose C-IGM's target class rule on the defender's own models (leave one pair out).

    python benchmarks/target_rule.py --preset quick --folds 3

The paper leaves the target class t open, and Table II's testing models must not be
used to choose it. Here only training models are: in fold f the ensemble holds the
source and every training surrogate and reference except surrogate f and reference f;
C-IGM attacks it once per rule (``cae.attacks.CIGM.TARGETS``), and the held-out pair
scores the successful examples: conferrability (Table II's column, over 1 + 1 models)
and, for the fingerprint (conferrability >= tau on the remaining training models), the
retention by the held-out surrogate and by the held-out reference. Runs are cached like
any attack run. Needs the dataset (``$CAE_DATA_DIR``).
"""

import argparse
import dataclasses
import logging
import time

import numpy as np


def _parse(argv=None):
    from cae import attacks, presets

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    parser.add_argument("--folds", type=int, default=3, help="held-out pairs (training surrogate f, reference f)")
    parser.add_argument("--rules", default=",".join(attacks.CIGM.TARGETS), help="comma-separated target rules")
    return parser.parse_args(argv)


def fold_context(context, f):
    """The context whose training models omit pair f and whose 'testing' models are pair f."""
    models, specs = dict(context.models), dict(context.specs)
    for role in ("surrogates", "references"):
        train = f"train_{role}"
        models[f"test_{role}"], specs[f"test_{role}"] = [models[train][f]], [specs[train][f]]
        models[train] = models[train][:f] + models[train][f + 1:]
        specs[train] = specs[train][:f] + specs[train][f + 1:]
    return dataclasses.replace(context, models=models, specs=specs)


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    from cae import experiments, presets

    preset = presets.get(args.preset)
    pairs = min(len(preset.train_surrogates), len(preset.train_references))
    if not 1 <= args.folds <= pairs or pairs < 2:
        raise SystemExit(f"--folds must be in 1..{pairs} and the preset needs at least 2 training surrogates "
                         f"and references; got {args.folds} of {pairs}.")
    context = experiments.prepare(preset, verbose=False)
    rules = args.rules.split(",")
    print(f"# preset {preset.name}: {len(context.inputs)} inputs, eps {preset.epsilon}, tau {preset.tau}, "
          f"{args.folds} folds of {pairs - 1} + {pairs - 1} training models")
    print("| rule | fold | attack s | conferrable (held-out pair) | fingerprints | retention held-out surrogate | "
          "retention held-out reference |")
    print("|---|---|---|---|---|---|---|")
    means = {rule: [] for rule in rules}
    for f in range(args.folds):
        fold = fold_context(context, f)
        for rule in rules:
            started = time.time()
            result = experiments.run_attack(fold, "cigm", preset.epsilon, target=rule)
            seconds = time.time() - started
            confer = experiments.summarise(result, "test")["conferrable"]
            keep = experiments.fingerprint_mask(result, preset.tau)
            held = [experiments.retentions(result, keep, g)[0] if keep.any() else float("nan")
                    for g in ("test_surrogates", "test_references")]
            means[rule].append((confer, *held))
            print(f"| {rule} | {f} | {seconds:.0f} | {confer:.3f} | {int(keep.sum())} | {held[0]:.3f} | "
                  f"{held[1]:.3f} |", flush=True)
    for rule, values in means.items():
        confer, surrogate, reference = np.nanmean(np.array(values), axis=0)
        print(f"| {rule} | mean | | {confer:.3f} | | {surrogate:.3f} | {reference:.3f} |")


if __name__ == "__main__":
    main()
