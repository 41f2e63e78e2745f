"""Figure 5: the decision space around one conferrable adversarial example (eq. 15).

f(a, b) = x + a·δ + b·Q for a, b in [-1.25, 1.25], where δ = x_adv - x comes from IGM
at ε = 0.25 on the source (as in the paper) and Q is a random direction orthogonal to
δ (QR decomposition) with ||Q|| = ||δ||; images are clipped to [0, 1]. Each panel
colours the plane by one model's label: the source (first panel) and the testing
surrogates on top, the testing references below.

The example is chosen by rule, not by hand: among the successful IGM examples, the one
with the highest conferrability on the testing models; ties go to the smallest index
(``cae.figures.most_conferrable_example``). ``--example`` overrides it.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cae import attacks, experiments, figures, paths, scripts, tables  # noqa: E402


def add_options(parser):
    parser.add_argument("--method", default="igm", choices=tuple(attacks.REGISTRY),
                        help="attack that makes δ (default: igm, as in the paper)")
    parser.add_argument("--eps", type=float, default=0.25, help="the attack's ε (default: 0.25)")
    parser.add_argument("--resolution", type=int, default=figures.RESOLUTION,
                        help=f"grid points per axis (default: {figures.RESOLUTION}; odd puts x on the grid)")
    parser.add_argument("--example", type=int, default=None,
                        help="index into the attack inputs (default: the most conferrable successful example)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random direction Q")


if __name__ == "__main__":
    args, preset = scripts.script_args("Figure 5: decision space around a conferrable example",
                                           extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    space = figures.decision_space(context, method=args.method, eps=args.eps, example=args.example,
                                   resolution=args.resolution, seed=args.seed)
    names = space.class_names
    rule = "given by --example" if args.example is not None else \
        "the successful example with the highest conferrability on the testing models (ties: smallest index)"
    tables.write(
        "figure5", preset.name, space.rows(),
        f"Figure 5 data: decision space around attack input #{space.index} "
        f"({attacks.REGISTRY[args.method].name}, ε = {args.eps:g}, preset {preset.name})",
        notes=f"Example: {rule}; source label y = {names[space.label]}, key t = {names[space.key]}, "
              f"conferrability {space.conferrability:.3f}. Grid {args.resolution}×{args.resolution} over "
              f"a, b ∈ [−{figures.EXTENT}, {figures.EXTENT}], Q from seed {args.seed}, images clipped to [0, 1].\n"
              "Paper: the example stays adversarial around x + δ for the surrogates, while the "
              "references' decision space looks different.\n")
    figure = figures.plot_decision_space(space)
    out = paths.results_dir(preset.name) / "figure5.png"
    figure.savefig(out, dpi=130)
    plt.close(figure)
    print(f"wrote {out}")
