"""Peer fingerprints against this paper's, on one zoo (issue #19): for every family of
removal attacks, the ROC-AUC (and TPR at 1 % FPR) of its derived models against all
independent models, per method (C-IGM, IPGuard, SAC-w, SAC-m, natural mistakes), with
a later benchmark's published AUCs for C-IGM quoted beside ours.

    python reproduce/benchmark.py --preset cpu --methods all --removal all --extra-references 6

Writes results/<preset>/benchmark.{csv,md,png} and benchmark_models.{csv,md}; the
logic is :mod:`cae.benchmark`.
"""

from cae import benchmark, experiments, peers, removal, scripts


def add_options(parser):
    parser.add_argument("--methods", default="all", type=scripts.names(tuple(peers.PEERS), "--methods"),
                        help=f"comma-separated peer methods, or 'all' ({', '.join(peers.PEERS)})")
    parser.add_argument("--removal", default="all",
                        type=scripts.checked(lambda text: removal.attack_list(text, "--removal")),
                        help=f"comma-separated removal attacks among the derived models, 'all' or 'none' "
                             f"({', '.join(removal.REMOVAL_ATTACKS)})")
    parser.add_argument("--extra-references", type=scripts.count, default=None, metavar="N",
                        help="N more independent references (default: the preset's extra_references)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every peer's extraction (default 0)")


def main(argv=None):
    """The preset's zoo, every method, the table and the figure."""
    args, preset = scripts.script_args("Peer fingerprints benchmark (issue #19)", argv, extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    result = benchmark.run(context, methods=args.methods, attacks=args.removal,
                           extra_references=args.extra_references, seed=args.seed, verbose=not args.quiet)
    out = benchmark.write(result, preset.name)
    print(f"# wrote {out} and the tables beside it; {result['wall seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
