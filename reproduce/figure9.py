"""Figure 9: fingerprints from C-IGM at ε = 0.1 (the paper's Figure 9 is on ImageNet32).

Runs (or loads from the cache) Extract (Alg. 2) at ε = 0.1 on the preset's dataset and
shows its first examples: the original with the source's label, the perturbation (shown
as 0.5 + δ / (2ε), so ±ε spans black to white) and the fingerprint with its key.
This is reproduce/figure8.py at ε = 0.1.
"""

import figure8

if __name__ == "__main__":
    figure8.main(9)
