"""Does a better training recipe widen the gap between a distillation and an independent model?

    python benchmarks/recipe.py --preset cpu --recipes default,onecycle+ema --architectures cnn

For each recipe (zoo options applied to every model it trains: ``onecycle`` is the
one-cycle learning rate, ``ema`` a weight average with momentum 0.99, ``smooth`` label
smoothing 0.1, ``long`` twice the epochs), a source of the preset's architecture and
epochs, and for each of ``--architectures`` one testing surrogate (D2, the source's
answers) and one testing reference (D2, ground truth), all with that recipe. Reported on
test images none of the zoo's metrics use: test accuracy, agreement with the recipe's own
source, agreement on the source's mistakes, each with and without test-time flips (the
prediction averaged over the image and its mirror). The gap (surrogate minus reference)
bounds what any fingerprint can separate (``benchmarks/agreement.py``). Only the
preset's testing models' specs are reused; nothing is chosen here on the preset's
testing models' fingerprint scores.
"""

import argparse
import logging
import time

RECIPES = {
    "default": {},
    "onecycle": {"options": (("schedule", "onecycle"),)},
    "ema": {"options": (("ema", 0.99),)},
    "smooth": {"options": (("label_smoothing", 0.1),)},
}


def recipe_changes(name, epochs):
    """TrainSpec changes for a ``+``-joined recipe name (``long`` doubles ``epochs``)."""
    options, changes = {}, {}
    for part in name.split("+"):
        if part == "long":
            changes["epochs"] = 2 * epochs
        elif part in RECIPES:
            options.update(dict(RECIPES[part].get("options", ())))
        else:
            raise SystemExit(f"unknown recipe part {part!r}; use {', '.join([*RECIPES, 'long'])} joined by +.")
    return options, changes


def _parse(argv=None):
    from cae import presets, scripts

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(presets.PRESETS))
    parser.add_argument("--recipes", default="default,onecycle+ema")
    parser.add_argument("--architectures", default="cnn", help="comma-separated testing-model architectures")
    parser.add_argument("--images", type=scripts.count, default=0, metavar="N",
                        help="compare on the first N of those test images (default 0: all of them)")
    return parser.parse_args(argv)


def main(argv=None):
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    import numpy as np

    from cae import benchmark, experiments, paths, presets, tables, zoo

    preset = presets.get(args.preset)
    started = time.time()
    context = experiments.prepare(preset, verbose=False)
    x, y = benchmark.natural_pool(context)
    if args.images:
        x, y = x[: args.images], y[: args.images]
    flipped = x[:, :, ::-1]

    def labels(model, tta):
        p = zoo.predict(model, x)
        return (p + zoo.predict(model, flipped) if tta else p).argmax(axis=1)

    base = context.specs
    rows = []
    for recipe in args.recipes.split(","):
        def with_recipe(spec, parent=None):
            options, changes = recipe_changes(recipe, spec.epochs)
            return spec.with_options(**options).replace(**changes, **({"parent": parent} if parent else {}))

        began = time.time()
        source_spec = with_recipe(base["source"])
        source = context.store.get(source_spec, verbose=False)
        truths = {tta: labels(source, tta) for tta in (False, True)}
        for arch in args.architectures.split(","):
            pair = {}
            for group in ("test_surrogates", "test_references"):
                spec = next((s for s in base[group] if s.architecture == arch), None)
                if spec is None:
                    raise SystemExit(f"preset {preset.name} has no {group} of architecture {arch!r}.")
                parent = source_spec.key if spec.parent else None
                pair[group] = context.store.get(with_recipe(spec, parent), verbose=False)
            for tta, truth in truths.items():
                wrong = truth != y
                row = {"recipe": recipe, "architecture": arch, "test-time flips": "yes" if tta else "no",
                       "source accuracy": float(np.mean(truth == y))}
                for group, model in pair.items():
                    what = "surrogate" if group == "test_surrogates" else "reference"
                    got = labels(model, tta)
                    row[f"{what} accuracy"] = float(np.mean(got == y))
                    row[f"{what} agreement"] = float(np.mean(got == truth))
                    row[f"{what} on mistakes"] = float(np.mean(got[wrong] == truth[wrong]))
                row["gap"] = row["surrogate agreement"] - row["reference agreement"]
                row["gap on mistakes"] = row["surrogate on mistakes"] - row["reference on mistakes"]
                row["train + score s"] = round(time.time() - began)
                rows.append(row)
                print("# " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in row.items()), flush=True)
    tables.write("recipe", preset.name, rows, f"Training recipe and the derived/independent gap (preset {preset.name})")
    print(tables.markdown(rows))
    print(f"# {len(x)} test images; wrote {paths.results_dir(preset.name)}; {time.time() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
