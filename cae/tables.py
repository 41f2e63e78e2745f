"""Tables: our measurements beside the paper's numbers, written as CSV and Markdown.

The paper's numbers are quoted from the paper (Tables V, VI here; Table II's with each
attack in :data:`cae.attacks.REGISTRY`; Figure 4's text) for comparison only; every
other number in a table comes from a run.
"""

import csv
import io
import logging
import math
import sys

from cae import paths

log = logging.getLogger(__name__)

# Tables V / VI: attack -> (test accuracy, fidelity, fingerprint retention).
PAPER_REMOVAL = {
    "cinic10": {
        "jagielski": (0.756, 0.840, 0.995), "papernot": (0.735, 0.810, 0.97),
        "knockoff": (0.730, 0.815, 0.99), "ftll": (0.775, 0.935, 1.00), "ftal": (0.773, 0.922, 1.00),
        "rtll": (0.720, 0.799, 0.985), "rtal": (0.668, 0.65, 0.98), "adv_fgm": (0.757, 0.842, 1.00),
        "adv_pgd": (0.768, 0.920, 1.00), "ensemble": (0.742, 0.8287, 0.970),
    },
    "imagenet32": {
        "jagielski": (0.532, 0.714, 0.98), "papernot": (0.509, 0.670, 0.90),
        "knockoff": (0.474, 0.622, 0.98), "ftll": (0.573, 0.886, 1.00), "ftal": (0.613, 0.881, 1.00),
        "rtll": (0.590, 0.853, 1.00), "rtal": (0.45, 0.5696, 0.82), "adv_fgm": (0.554, 0.862, 1.00),
        "adv_pgd": (0.556, 0.853, 1.00), "ensemble": (0.505, 0.672, 0.80),
    },
}


def _fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown(rows, columns=None):
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows, columns=None):
    columns = columns or list(rows[0])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write(name, preset_name, rows, title, notes="", columns=None):
    """Write ``results/<preset>/<name>.csv`` and ``.md``; print the Markdown."""
    folder = paths.results_dir(preset_name)
    text = f"# {title}\n\n{markdown(rows, columns)}\n{notes}".rstrip() + "\n"
    paths.atomic_write_bytes(folder / f"{name}.csv", to_csv(rows, columns).encode())
    paths.atomic_write_bytes(folder / f"{name}.md", text.encode())
    sys.stdout.write(text)
    log.info("wrote %s/%s.{csv,md}", folder, name)
    return folder / f"{name}.md"
