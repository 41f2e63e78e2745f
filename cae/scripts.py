"""Plumbing shared by the scripts (``reproduce/``, ``benchmarks/``): their command line,
logging, the settings and git revision they print first, and argparse types. Nothing here
computes a result, and the scripts' own ``main`` functions and options live in the scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import subprocess
from collections.abc import Callable, Sequence
from typing import TypeVar

from cae import paths, presets

T = TypeVar("T")


def git_revision() -> str:
    """The short hash of the checkout cae runs from, with ``"+uncommitted"`` when its code
    (cae, reproduce, benchmarks) differs from that commit, or ``"unknown"``."""
    where = pathlib.Path(__file__).parent
    try:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                  check=True, cwd=where).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/cae",
                                  ":/reproduce", ":/benchmarks"], capture_output=True, text=True, check=True,
                                 cwd=where).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{revision}+uncommitted" if changed else revision


def count(text: str) -> int:
    """argparse type: a number of things, 0 or more."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; give a whole number, 0 or more.")
    return n


def names(allowed: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """argparse type: a comma-separated list of names among ``allowed``, or ``"all"``;
    ``what`` (the option) names it in the error."""
    def parse(text):
        if text == "all":
            return list(allowed)
        chosen = [item.strip() for item in text.split(",") if item.strip()]
        unknown = [item for item in chosen if item not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"{what} {text!r}: give a comma-separated list of "
                                             f"{', '.join(allowed)}, or 'all'.")
        return chosen

    return parse


def checked(parse: Callable[[str], T]) -> Callable[[str], T]:
    """argparse type from ``parse(text)``, a function that raises ValueError on bad text:
    argparse then prints its message (it prints a generic one for a plain ValueError)."""
    def wrapped(text):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return wrapped


def script_args(description: str, argv: Sequence[str] | None = None,
                extra: Callable[[argparse.ArgumentParser], object] | None = None,
                ) -> tuple[argparse.Namespace, presets.Preset]:
    """Parse a reproduce script's arguments, set up logging, print the resolved
    settings and the git revision. ``extra(parser)`` adds script-specific options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS),
                        help="experiment scale (default: quick)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    if extra:
        extra(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    preset = presets.get(args.preset)
    print(f"# {description}")
    print(f"# cae revision {git_revision()}, preset {preset.name}: "
          + json.dumps(preset.summary(), default=str, sort_keys=True))
    print(f"# data {paths.data_dir()}, cache {paths.cache_dir()}, results {paths.results_dir(preset.name)}",
          flush=True)
    return args, preset
