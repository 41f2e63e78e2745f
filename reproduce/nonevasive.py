"""Non-evasiveness (Section V-A): can an adversary detect fingerprint queries? A small CNN
is trained to tell C-IGM fingerprints from benign D1 inputs (not attack inputs) at several
ε; its held-out accuracy near 0.5 means the fingerprint cannot be told apart (evaded).
The paper states the property (non-evasive as long as small-perturbation adversarial
examples are) but reports no number for it.
"""

from cae import evaluation, experiments, scripts, tables


def add_options(parser):
    parser.add_argument("--eps", nargs="+", type=float, default=[0.05, 0.15, 0.25], help="C-IGM ε values")
    parser.add_argument("--steps", type=int, default=400, help="detector training steps (batches of 32)")


if __name__ == "__main__":
    args, preset = scripts.script_args("Non-evasiveness: a detector game", extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    rows = evaluation.detector_game(context, tuple(args.eps), steps=args.steps)
    tables.write("nonevasive", preset.name, rows, f"Non-evasiveness: detector of C-IGM fingerprints "
                 f"(preset {preset.name}, {preset.dataset})",
                 notes=("Detector: cae.models.build('cnn', 2), trained on 70 % of fingerprints + equally many benign "
                        "D1 images, accuracy on the other 30 %. 0.5 = undetectable. Paper: no number (Section V-A "
                        "defines the property only).\n"))
