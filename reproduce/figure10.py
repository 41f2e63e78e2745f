"""Figure 10: fingerprints from C-IGM at ε = 0.15 (the paper's Figure 10 is on CINIC-10).

Runs (or loads from the cache) Extract (Alg. 2) at ε = 0.15 on the preset's dataset and
shows its first examples: the original with the source's label, the perturbation (shown
as 0.5 + δ / (2ε), so ±ε spans black to white) and the fingerprint with its key.
"""

import matplotlib

matplotlib.use("Agg")

from cae import figures  # noqa: E402

if __name__ == "__main__":
    figures.fingerprint_figure_script(10, 0.15, "CINIC-10")
