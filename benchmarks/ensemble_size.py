"""How many training models does the ensemble need? C-IGM versus ensemble size.

    python benchmarks/ensemble_size.py --preset quick --sizes 2,4,6,8
    python benchmarks/ensemble_size.py --preset quick --sizes 6 --subset 0 --eps 0.15,0.25

For each size N, C-IGM attacks the ensemble of the source, N training surrogates and N
training references (the preset's first N of each, trained on demand and cached in the
zoo like any model), and the script prints, on the preset's testing models: the mean
conferrability of the successful examples (Table II's column), and the retention of
the fingerprint (examples with conferrability >= tau on the training models) by each
testing surrogate and reference. This is an ablation over the testing models, like the
paper's dropout ablation (Section IV-C); presets are not tuned on it.

``--subset`` sets the D1 sample each training model learns from (default: the
preset's ``training_subset``; 0 = all of D1). Needs the dataset (``$CAE_DATA_DIR``).
"""

import argparse
import dataclasses
import logging
import time


def _parse(argv=None):
    from cae import presets

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    parser.add_argument("--sizes", default="2,4,6", help="comma-separated N (training surrogates = references = N)")
    parser.add_argument("--subset", type=int, default=None, help="D1 examples per training model (0 = all)")
    parser.add_argument("--eps", default=None, help="comma-separated epsilons (default: the preset's)")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    from cae import experiments, presets

    base = presets.get(args.preset)
    subset = base.training_subset if args.subset is None else args.subset
    epsilons = [float(e) for e in args.eps.split(",")] if args.eps else [base.epsilon]
    print(f"# preset {base.name}, training models on {subset or 'all'} D1 examples each, tau {base.tau}")
    print("| N | eps | zoo s | attack s | kept | confer (testing) | retention testing surrogates | "
          "retention testing references |")
    print("|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        arch = base.source_architecture
        preset = dataclasses.replace(base, train_surrogates=(arch,) * size, train_references=(arch,) * size,
                                     training_subset=subset)
        started = time.time()
        context = experiments.prepare(preset, verbose=False)
        zoo_seconds = time.time() - started
        for eps in epsilons:
            started = time.time()
            result = experiments.run_attack(context, "cigm", eps)
            keep = experiments.fingerprint_mask(result, preset.tau)

            def retention(group):
                if not keep.any():
                    return "-"
                return ", ".join(f"{r:.2f}" for r in experiments.retentions(result, keep, group))

            summary = experiments.summarise(result)
            print(f"| {size} | {eps} | {zoo_seconds:.0f} | {time.time() - started:.0f} | {int(keep.sum())} | "
                  f"{summary['conferrable']:.3f} | {retention('test_surrogates')} | "
                  f"{retention('test_references')} |", flush=True)
            zoo_seconds = 0.0


if __name__ == "__main__":
    main()
