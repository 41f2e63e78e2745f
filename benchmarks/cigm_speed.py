"""Time C-IGM's compiled loop against ART's BasicIterativeMethod on the same ensemble.

    python benchmarks/cigm_speed.py                       # 6 cnn members, 32 inputs, 20 steps
    python benchmarks/cigm_speed.py --architecture resnet20 --members 6

The members are untrained (timing does not depend on the weights). Each backend runs
once to warm up (tracing), then ``--repeats`` times; the best time is reported. Both
backends run the same iterations on the same inputs, so with dropout off they return
the same examples (checked here too).
"""

import argparse
import logging
import os
import time

import numpy as np


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architecture", default="cnn")
    parser.add_argument("--members", type=int, default=6, help="source + surrogates + references")
    parser.add_argument("--inputs", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--classes", type=int, default=10)
    return parser.parse_args(argv)


def _best_time(function, repeats):
    function()  # warm-up: tracing and first-call allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    import keras
    import tensorflow as tf

    from cae import attacks, ensemble, models

    if args.members < 2:
        raise SystemExit(f"--members={args.members}; need at least 2 (a source and a reference).")
    members = [models.build(args.architecture, args.classes, seed=i) for i in range(args.members)]
    n_surrogates = (args.members - 1) // 2
    source, surrogates, references = members[0], members[1:1 + n_surrogates], members[1 + n_surrogates:]
    x = np.random.default_rng(0).random((args.inputs, 32, 32, 3), dtype=np.float32)
    print(
        f"keras {keras.__version__}, tensorflow {tf.__version__}, devices "
        f"{[d.device_type for d in tf.config.list_logical_devices()]}, "
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}"
    )
    print(
        f"ensemble: {args.members} x {args.architecture} (1 source, {len(surrogates)} surrogates, "
        f"{len(references)} references), dropout {args.dropout}; {args.inputs} inputs x "
        f"{args.iterations} iterations, batch {args.batch_size}"
    )
    results = {}
    for rate in sorted({args.dropout, 0.0}, reverse=True):
        model = ensemble.compose(source, surrogates, references, dropout=rate)
        out = {}
        for backend in ("compiled", "art"):
            attack = attacks.CIGM(
                model, eps=0.1, max_iter=args.iterations, backend=backend, batch_size=args.batch_size
            )
            seconds, out[backend] = _best_time(lambda: attack.generate(x), args.repeats)
            results[(rate, backend)] = seconds
            per_step = seconds / args.iterations / max(1, -(-args.inputs // args.batch_size))
            print(f"dropout {rate:.2f}  {backend:8s} {seconds:8.2f} s   ({1000 * per_step:.1f} ms per batch step)")
        diff = float(np.abs(out["compiled"] - out["art"]).max())
        print(f"dropout {rate:.2f}  speed-up compiled vs art: "
              f"{results[(rate, 'art')] / results[(rate, 'compiled')]:.2f}x; max |compiled - art| = {diff:.2g}")
    return results


if __name__ == "__main__":
    main()
