"""Training throughput of each architecture with and without XLA (``jit_compile``).

    python benchmarks/xla.py                               # cnn, rescnn, allconv; 6,144 images
    python benchmarks/xla.py --architectures allconv --images 2048

Keras's ``jit_compile="auto"`` leaves XLA off on a CPU-only machine; on this project's
2-core CPU XLA doubles allconv's training speed and slows cnn and rescnn by a third, so
:data:`cae.models.XLA_ON_CPU` lists allconv alone. This script measures it again on the
machine it runs on. The images are random (speed does not depend on them); one epoch of
``--images`` runs once to warm up (tracing, compilation), then ``--repeats`` times; the
best time is reported, with both settings run in this one process, side by side.
"""

import argparse
import logging
import time

import numpy as np


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--architectures", default="cnn,rescnn,allconv", help="comma list")
    parser.add_argument("--images", type=int, default=6144, help="images per timed epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    return parser.parse_args(argv)


def _images_per_second(architecture, jit, x, y, batch_size, repeats):
    import keras

    from cae import models

    model = models.build(architecture, y.shape[1], seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", jit_compile=jit)
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # warm-up: tracing and XLA compilation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    import keras

    from cae import models

    architectures = [a for a in args.architectures.split(",") if a]
    unknown = [a for a in architectures if a not in models.ARCHITECTURES]
    if unknown or not architectures:
        raise SystemExit(f"--architectures {args.architectures!r}: unknown {unknown}; choose from "
                         f"{', '.join(models.ARCHITECTURES)}.")
    if args.images < args.batch_size or args.repeats < 1:
        raise SystemExit(f"--images ({args.images}) must be at least --batch-size ({args.batch_size}) and "
                         f"--repeats ({args.repeats}) at least 1.")
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 32, 32, 3), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, args.images), 10)
    print(f"# keras {keras.__version__}, backend {keras.backend.backend()}; {args.images} images per epoch, "
          f"batch {args.batch_size}, best of {args.repeats}")
    print("| architecture | images/s, XLA off | images/s, XLA on | ratio | in cae.models.XLA_ON_CPU |")
    print("|---|---|---|---|---|")
    rows = []
    for architecture in architectures:
        off, on = (_images_per_second(architecture, jit, x, y, args.batch_size, args.repeats)
                   for jit in (False, True))
        rows.append({"architecture": architecture, "off": off, "on": on})
        print(f"| {architecture} | {off:.0f} | {on:.0f} | {on / off:.2f} | "
              f"{'yes' if architecture in models.XLA_ON_CPU else 'no'} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
