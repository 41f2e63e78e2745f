"""Figure 4: conferrability and transferability of single-model attacks versus ε.

The attacks of :data:`cae.attacks.REGISTRY` that attack the source alone (IGM, PGD,
DeepFool and CW-L2, with Table I's parameters); scores are means over the successful
examples on the testing models.
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cae import attacks, experiments, paper, paths, scripts, tables  # noqa: E402

BASELINES = [method for method, entry in attacks.REGISTRY.items() if entry.on == "source"]


def norm_label(methods):
    """Each attack's norm of ε, e.g. "L∞ for IGM, DeepFool; L2 for PGD, CW-L2"."""
    by_norm = {}
    for method in methods:
        entry = attacks.REGISTRY[method]
        by_norm.setdefault(entry.norm, []).append(entry.name)
    return "; ".join(f"{ {'inf': 'L∞', '2': 'L2'}[norm]} for {', '.join(names)}" for norm, names in by_norm.items())

if __name__ == "__main__":
    args, preset = scripts.script_args("Figure 4: conferrability and transferability versus epsilon")
    context = experiments.prepare(preset, verbose=not args.quiet)
    rows = []
    for method in BASELINES:
        for eps in preset.epsilons:
            row = experiments.summarise(experiments.run_attack(context, method, eps))
            rows.append({"method": attacks.REGISTRY[method].name, "eps": eps, **row})
    tables.write("figure4", preset.name, rows, f"Figure 4 data (preset {preset.name})",
                 columns=["method", "eps", "successful", "examples", "transferable", "conferrable"],
                 notes=paper.figure4_note())
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for method in BASELINES:
        name = attacks.REGISTRY[method].name
        mine = [r for r in rows if r["method"] == name]
        for axis, score in zip(axes, ("conferrable", "transferable")):
            axis.plot([r["eps"] for r in mine], [r[score] for r in mine], marker="o", label=name)
    for axis, score in zip(axes, ("Conferrability", "Transferability")):
        axis.set_xlabel(f"ε ({norm_label(BASELINES)})")
        axis.set_ylabel(f"mean {score.lower()} (testing models)")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"Figure 4 — single-model attacks, preset {preset.name} ({preset.dataset})")
    figure.tight_layout()
    out = paths.results_dir(preset.name) / "figure4.png"
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")
