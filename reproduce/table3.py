"""Table III: the zoo's models per group (training/testing × surrogate/reference × architecture):
min–max brackets of test accuracy, fidelity (D1 labelled by the source) and fingerprint retention.

The fingerprint is the paper's, ``experiments.extract(context, mistakes=0)`` (C-IGM at the preset's
ε, τ = the preset's, cached); for a preset with natural mistakes, ``cae extract``'s fingerprint
(the same examples and the mistakes) is measured beside it.
Table IV (ImageNet32) is this script with the preset ``paper-imagenet32`` (reproduce/table4.py).
"""

from cae import experiments, paper, reports, scripts, tables


def main(name="table3", default_preset="quick", table="Table III"):
    args, preset = scripts.script_args(
        f"{table}: accuracy, fidelity and retention of the zoo's models",
        extra=lambda parser: parser.set_defaults(preset=default_preset))
    context = experiments.prepare(preset, verbose=not args.quiet)
    fp = experiments.extract(context, mistakes=0)  # the paper's fingerprint
    beside = experiments.extract(context) if preset.mistakes else None  # cae extract's
    rows = reports.group_rows(context, fp, beside=beside)
    notes = (f"Fingerprint: {fp.n} {reports.cigm_variant(fp)} examples at ε = {preset.epsilon:g}, τ = {preset.tau:g}"
             + (f"; '{reports.BESIDE}': cae extract's fingerprint, the same examples and {preset.mistakes} natural "
                f"images the source misclassifies (beyond the paper)" if beside else "") + ". Fidelity: "
             f"agreement with the source on {preset.evaluate_on or 'all'} D1 images; test accuracy on "
             f"{preset.evaluate_on or 'all'} test images. Brackets are min–max over the models of a row.\n\n"
             f"{reports.TRAINING_REFERENCES_NOTE}\n\nPaper (Table III, CINIC-10, ε = 0.15, quoted): "
             f"{paper.group_retention_note()}. For ImageNet32 (Table IV) the paper's numbers are not "
             "quoted here.\n")
    tables.write(name, preset.name, rows, f"{table}: models per group (preset {preset.name}, {preset.dataset})",
                 notes=notes, columns=reports.GROUP_COLUMNS + ([reports.BESIDE] if beside else []))


if __name__ == "__main__":
    main()
