"""Table II: transferability and conferrability of C-IGM and the baselines at ε = 0.15.

Trains (or reuses) the preset's models, runs each attack once (cached per example),
and scores the successful adversarial examples on the testing models.
"""

import keras

from cae import experiments, reports, scripts, tables


def add_options(parser):
    parser.add_argument("--targets", nargs="+", default=["most_conferrable"],
                        help="C-IGM target-class rules to compare (most_conferrable, second_source, random)")


if __name__ == "__main__":
    args, preset = scripts.script_args("Table II: success rates of adversarial attacks", extra=add_options)
    context = experiments.prepare(preset, verbose=not args.quiet)
    baselines = keras.backend.backend() == "tensorflow"
    if not baselines:
        print(f"Keras runs on {keras.backend.backend()}: scoring C-IGM only. The ART baselines need "
              "TensorFlow; rerun there for them (the zoo and the C-IGM run are cached and reused).")
    rows = reports.table2_rows(context, targets=args.targets, baselines=baselines)
    tables.write("table2", preset.name, rows, f"Table II: success rates at ε = {preset.epsilon:g} "
                 f"(preset {preset.name}, {context.preset.dataset})", notes=reports.table2_notes(context, rows))
