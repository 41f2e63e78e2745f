"""Figure 6 (7 for ImageNet32): the conferrability score of every generated example,
per attack, at the preset's ε (0.15), on the testing models."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cae import attacks, experiments, paths, scores, scripts, tables  # noqa: E402

if __name__ == "__main__":
    args, preset = scripts.script_args("Figure 6: conferrability per generated example")
    context = experiments.prepare(preset, verbose=not args.quiet)
    per_method, rows = {}, []
    for method, entry in attacks.REGISTRY.items():
        result = experiments.run_attack(context, method, preset.epsilon)
        ok = result["success"]
        values = scores.confer(result["test_surrogates"][:, ok], result["test_references"][:, ok], result["t"][ok])
        per_method[entry.name] = values
        rows.append({"method": entry.name, "successful": int(ok.sum()),
                     "mean": float(values.mean()) if len(values) else float("nan"),
                     "share = 1": float(np.mean(values >= 1.0)) if len(values) else float("nan"),
                     "share = 0": float(np.mean(values <= 0.0)) if len(values) else float("nan")})
    tables.write("figure6", preset.name, rows, f"Figure 6 data: conferrability per example (ε = {preset.epsilon:g})")
    figure, axis = plt.subplots(figsize=(8, 4))
    rng = np.random.default_rng(0)
    for i, (name, values) in enumerate(per_method.items()):
        jitter = rng.uniform(-0.25, 0.25, len(values))
        axis.scatter(np.full(len(values), i) + jitter, values, s=8, alpha=0.5)
        if len(values):
            axis.hlines(values.mean(), i - 0.35, i + 0.35, color="black")
    axis.set_xticks(range(len(per_method)), [f"{n}\n(n={len(v)})" for n, v in per_method.items()])
    axis.set_ylabel("conferrability (testing models)")
    axis.set_ylim(-0.05, 1.05)
    axis.set_title(f"Figure 6 — conferrability per example, ε = {preset.epsilon:g}, preset {preset.name}")
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    out = paths.results_dir(preset.name) / "figure6.png"
    figure.savefig(out, dpi=120)
    print(f"wrote {out}")
