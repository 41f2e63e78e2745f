"""Tables: our measurements beside the paper's numbers, written as CSV and Markdown.

The paper's numbers are quoted in :mod:`cae.paper` for comparison only; every other
number in a table comes from a run.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import pathlib
import sys
from collections.abc import Mapping, Sequence

from cae import paths

log = logging.getLogger(__name__)

def _fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        # Three decimals, but a small nonzero number (a p-value of 6e-14) keeps its size.
        return f"{value:.2g}" if 0 < abs(value) < 5e-4 else f"{value:.3f}"
    return str(value)


def markdown(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    columns = columns or list(rows[0])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write(name: str, preset_name: str, rows: Sequence[Mapping], title: str, notes: str = "",
          columns: Sequence[str] | None = None) -> pathlib.Path:
    """Write ``results/<preset>/<name>.csv`` and ``.md``; print the Markdown."""
    folder = paths.results_dir(preset_name)
    text = f"# {title}\n\n{markdown(rows, columns)}\n{notes}".rstrip() + "\n"
    paths.atomic_write_bytes(folder / f"{name}.csv", to_csv(rows, columns).encode())
    paths.atomic_write_bytes(folder / f"{name}.md", text.encode())
    sys.stdout.write(text)
    log.info("wrote %s/%s.{csv,md}", folder, name)
    return folder / f"{name}.md"
