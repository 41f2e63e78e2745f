"""Figure 10: fingerprints from C-IGM at ε = 0.15 (the paper's Figure 10 is on CINIC-10).

Runs (or loads from the cache) Extract (Alg. 2) at ε = 0.15 on the preset's dataset and
shows its first examples, in the order of the attack inputs: the original with the
source's label, the perturbation (shown as 0.5 + δ / (2ε), so ±ε spans black to white)
and the fingerprint with its verification key (and C-IGM's target when it differs).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cae import experiments, figures, paths, tables  # noqa: E402

FIGURE, EPS, PAPER_DATASET = 10, 0.15, "CINIC-10"


def add_options(parser):
    parser.add_argument("--examples", type=int, default=12, help="examples shown (default: 12)")
    parser.add_argument("--columns", type=int, default=3, help="examples per row (default: 3)")


if __name__ == "__main__":
    args, preset = experiments.script_args(f"Figure {FIGURE}: C-IGM fingerprints at ε = {EPS}", extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    fp = experiments.extract(context, eps=EPS)
    dataset = figures.dataset_title(preset.dataset)
    tables.write(f"figure{FIGURE}", preset.name, [figures.fingerprint_row(fp)],
                 f"Figure {FIGURE} data: C-IGM fingerprint at ε = {EPS:g} (preset {preset.name}, {dataset})",
                 notes=f"The paper's Figure {FIGURE} shows C-IGM fingerprints at ε = {EPS:g} on {PAPER_DATASET}.\n")
    figure = figures.fingerprint_figure(
        context.models["source"], fp, context.dataset.class_names, n=args.examples, columns=args.columns,
        title=f"Figure {FIGURE} — C-IGM fingerprints, ε = {EPS:g}, {dataset} (preset {preset.name}; "
              f"paper: {PAPER_DATASET}); {fp.n} fingerprints, first {min(args.examples, fp.n)} shown")
    out = paths.results_dir(preset.name) / f"figure{FIGURE}.png"
    figure.savefig(out, dpi=130)
    plt.close(figure)
    print(f"wrote {out}")
