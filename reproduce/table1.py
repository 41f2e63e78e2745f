"""Table I: the attack parameters, printed from the code's own attack configurations."""

from cae import attacks, presets, scripts, tables

if __name__ == "__main__":
    args, preset = scripts.script_args("Table I: parameters of the adversarial attacks")
    rows = attacks.rows()
    eps = ", ".join(f"{e:g}" for e in presets.EPSILONS)
    tables.write("table1", preset.name, rows, "Table I: attack parameters (from cae.attacks.ATTACKS)",
                 notes=f"ε swept over: {eps} (preset {preset.name} uses "
                       f"{', '.join(f'{e:g}' for e in preset.epsilons)}).\n")
