"""Peer fingerprints against this paper's, on one zoo (issue #19): for every family of
removal attacks, the ROC-AUC (and TPR at 1 % FPR) of its derived models against all
independent models, per method (C-IGM, IPGuard, SAC-w, SAC-m, natural mistakes), with
a later benchmark's published AUCs for C-IGM quoted beside ours.

    python reproduce/benchmark.py --preset cpu --methods all --removal all --extra-references 6

Writes results/<preset>/benchmark.{csv,md,png} and benchmark_models.{csv,md}; the
logic is :mod:`cae.benchmark`.
"""

from cae import benchmark

if __name__ == "__main__":
    benchmark.main()
