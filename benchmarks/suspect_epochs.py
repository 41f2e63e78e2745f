"""Is the fingerprint weak, or are the suspects? Retention versus the suspect's training length.

    python benchmarks/suspect_epochs.py --preset quick --epochs 3,8

Extracts the preset's fingerprint once (C-IGM on the preset's training models, Alg. 2),
then trains the preset's testing surrogates and references again for each number of
epochs in ``--epochs`` (cached in the zoo like any model; the preset's own number reuses
its testing models) and prints, per model: test accuracy, fidelity to the source on the
zoo's test sample, and the retention of the fingerprint through label-only
verification (`cae.fingerprint.verify`).

If retention were low only because the suspects are weak, better-trained surrogates
would keep more of the fingerprint while references stayed put. The fingerprint does
not change across rows, so what moves is the suspects alone. Needs the dataset
(``$CAE_DATA_DIR``).
"""

import argparse
import logging
import time


def _parse(argv=None):
    from cae import presets

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    parser.add_argument("--epochs", default="3,8", help="comma-separated training epochs of the suspects")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    from cae import experiments, fingerprint, presets

    preset = presets.get(args.preset)
    context = experiments.prepare(preset, verbose=False)
    fp = experiments.extract(context)
    store = context.store
    print(f"# preset {preset.name}: {len(fp.keys)} fingerprints, eps {preset.epsilon}, tau {preset.tau}")
    print("| suspect | epochs | test accuracy | fidelity (test) | retention | train s |")
    print("|---|---|---|---|---|---|")
    for epochs in (int(e) for e in args.epochs.split(",")):
        for group in ("test_surrogates", "test_references"):
            for i, spec in enumerate(context.specs[group]):
                spec = spec.replace(epochs=epochs)
                started = time.time()
                model = store.get(spec, verbose=False)
                metrics = store.metrics(spec)
                result = fingerprint.verify(model, fp)
                fidelity = metrics.get("fidelity_test")
                print(f"| {group[5:-1]} {i} | {epochs} | {metrics['test_accuracy']:.3f} | "
                      f"{'-' if fidelity is None else f'{fidelity:.3f}'} | {result.retention:.2f} | "
                      f"{time.time() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
