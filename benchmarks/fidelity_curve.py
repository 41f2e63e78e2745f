"""How close can a surrogate get to the source at a given scale? Epoch-by-epoch curves.

    python benchmarks/fidelity_curve.py                         # cnn, D1 = D2 = 20,000
    python benchmarks/fidelity_curve.py --source-epochs 12 --epochs 8

Trains a source on D1 (ground truth), then on D2 a Retraining surrogate (the source's
softmax, T = 1) and a reference (ground truth), and prints after every epoch the test
accuracy and the agreement with the source on the first ``--test`` test images. The
gap between the surrogate's agreement (fidelity) and the reference's is what
conferrable examples need; a preset whose gap is small cannot separate the groups.
Training follows cae.zoo (Adam, cosine decay, the same augmentation), but the models
are not cached. Needs the dataset (``$CAE_DATA_DIR``).
"""

import argparse
import time

import numpy as np


def _parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--architecture", default="cnn")
    parser.add_argument("--size", type=int, default=20_000, help="images in D1 and in D2")
    parser.add_argument("--source-epochs", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8, help="surrogate and reference epochs")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the quick preset's")
    parser.add_argument("--augment", default="flip", choices=("flip", "crop+flip", "none"))
    parser.add_argument("--test", type=int, default=5_000, help="test images for the curves")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    import keras

    from cae import data, models, presets, zoo

    if args.learning_rate is None:
        args.learning_rate = presets.get("quick").learning_rate
    dataset = data.load(args.dataset)
    d1, d2 = data.split_indices(len(dataset.x_train), (args.size, args.size), 0)[:2]
    x_test = data.to_float(dataset.x_test[: args.test])
    y_test = dataset.y_test[: args.test]
    k = dataset.num_classes

    def train(indices, targets, epochs, seed, report):
        x = data.to_float(dataset.x_train[indices])
        model = models.build(args.architecture, k, seed=seed)
        steps = epochs * int(np.ceil(len(x) / 128))
        model.compile(optimizer=keras.optimizers.Adam(
            keras.optimizers.schedules.CosineDecay(args.learning_rate, steps)), loss="categorical_crossentropy")
        rng = np.random.default_rng(seed)
        for epoch in range(epochs):
            started = time.time()
            order = rng.permutation(len(x))
            xe = x[order] if args.augment == "none" else zoo.augment_batch(x[order], rng, crop=args.augment == "crop+flip")
            model.fit(xe, targets[order], batch_size=128, epochs=1, verbose=0)
            report(model, epoch + 1, time.time() - started)
        return model

    def line(name, reference_labels=None):
        def report(model, epoch, seconds):
            labels = zoo.predict(model, x_test).argmax(axis=1)
            agreement = "" if reference_labels is None else f"  agreement {np.mean(labels == reference_labels):.3f}"
            print(f"{name:9s} epoch {epoch:2d}  {seconds:5.1f} s  accuracy {np.mean(labels == y_test):.3f}{agreement}",
                  flush=True)
        return report

    source = train(d1, np.eye(k, dtype=np.float32)[dataset.y_train[d1]], args.source_epochs, 0, line("source"))
    source_labels = zoo.predict(source, x_test).argmax(axis=1)
    soft = zoo.predict(source, data.to_float(dataset.x_train[d2])).astype(np.float32)
    train(d2, soft, args.epochs, 1, line("surrogate", source_labels))
    train(d2, np.eye(k, dtype=np.float32)[dataset.y_train[d2]], args.epochs, 2, line("reference", source_labels))


if __name__ == "__main__":
    main()
