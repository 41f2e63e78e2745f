"""Figure 8: fingerprints from C-IGM at ε = 0.25 (the paper's Figure 8 is on ImageNet32).

Runs (or loads from the cache) Extract (Alg. 2) at ε = 0.25 on the preset's dataset and
shows its first examples: the original with the source's label, the perturbation (shown
as 0.5 + δ / (2ε), so ±ε spans black to white) and the fingerprint with its key.
Figures 9 and 10 (reproduce/figure9.py, figure10.py) are this script at their own ε
(:data:`cae.paper.FINGERPRINT_FIGURES`).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cae import data, experiments, figures, paper, paths, reports, scripts, tables  # noqa: E402


def add_options(parser):
    parser.add_argument("--examples", type=int, default=12, help="examples shown (default: 12)")
    parser.add_argument("--columns", type=int, default=3, help="examples per row (default: 3)")


def main(figure_number=8, argv=None):
    """Run (or load) Extract at the figure's ε on the preset's dataset, write the figure's
    data table and a grid of its first fingerprints (original, perturbation shown as
    0.5 + δ / (2ε), fingerprint)."""
    eps, paper_dataset = paper.FINGERPRINT_FIGURES[figure_number]
    args, preset = scripts.script_args(
        f"Figure {figure_number}: C-IGM fingerprints at ε = {eps}", argv=argv, extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    fp = experiments.extract(context, eps=eps, mistakes=0)  # the paper's fingerprint
    dataset = data.title(preset.dataset)
    tables.write(f"figure{figure_number}", preset.name, [reports.fingerprint_row(fp)],
                 f"Figure {figure_number} data: C-IGM fingerprint at ε = {eps:g} (preset {preset.name}, {dataset})",
                 notes=f"The paper's Figure {figure_number} shows C-IGM fingerprints at ε = {eps:g} "
                       f"on {paper_dataset}.\n")
    figure = figures.fingerprint_figure(
        context.models["source"], fp, context.dataset.class_names, n=args.examples, columns=args.columns,
        title=f"Figure {figure_number} — C-IGM fingerprints, ε = {eps:g}, {dataset} (preset {preset.name}; "
              f"paper: {paper_dataset}); {fp.n} fingerprints, first {min(args.examples, fp.n)} shown")
    out = paths.results_dir(preset.name) / f"figure{figure_number}.png"
    figure.savefig(out, dpi=130)
    plt.close(figure)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(8)
