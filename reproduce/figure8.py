"""Figure 8: fingerprints from C-IGM at ε = 0.25 (the paper's Figure 8 is on ImageNet32).

Runs (or loads from the cache) Extract (Alg. 2) at ε = 0.25 on the preset's dataset and
shows its first examples: the original with the source's label, the perturbation (shown
as 0.5 + δ / (2ε), so ±ε spans black to white) and the fingerprint with its key.
"""

import matplotlib

matplotlib.use("Agg")

from cae import figures  # noqa: E402

if __name__ == "__main__":
    figures.fingerprint_figure_script(8, 0.25, "ImageNet32")
