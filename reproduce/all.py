"""Run every reproduce script of a preset and write results/<preset>/RESULTS.md.

Each stage is one script (``reproduce/<stage>.py --preset P``), run in a subprocess
and timed; its output goes to ``results/<preset>/logs/<stage>.log``. Stages run in
the paper's order (the scripts that exist in this checkout; any other ``table*.py`` /
``figure*.py`` follow). Tables IV and VI are Tables III and V on ImageNet32, so a
preset runs one of each pair: table4 / table6 on ImageNet32, table3 / table5 on any
other dataset. A failing stage is reported and the others still run; the exit status
is 1 if any failed.

RESULTS.md holds, per stage, its wall time, the Markdown tables it wrote (with the
paper's numbers beside ours, as each script prints them) and its figures as relative
image links. It is rewritten after every stage, so an interrupted run leaves a
partial report. Expensive stages (training, attacks) are cached, so a rerun only
redoes what is missing.
"""

import argparse
import datetime
import pathlib
import subprocess
import sys
import time

from cae import paths, presets, scripts

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("table1", "table2", "figure4", "figure5", "figure6", "figure8", "figure9", "figure10",
         "table3", "table4", "table5", "table6", "verification", "nonevasive", "preprocessing")
# The same script on another dataset: run only the one that matches the preset's dataset.
IMAGENET32_ONLY = ("table4", "table6")
NOT_IMAGENET32 = ("table3", "table5")


def available_stages(dataset="cifar10"):
    """Stages whose script exists, for a preset on ``dataset``: :data:`ORDER` first, then
    other tables and figures."""
    found = {path.stem for pattern in ("table*.py", "figure*.py") for path in HERE.glob(pattern)}
    found |= {stage for stage in ORDER if (HERE / f"{stage}.py").is_file()}
    found -= set(NOT_IMAGENET32 if dataset == "imagenet32" else IMAGENET32_ONLY)
    return [s for s in ORDER if s in found] + sorted(found - set(ORDER))


def _snapshot(folder):
    return {path: path.stat().st_mtime_ns for path in folder.glob("*") if path.is_file()}


def run_stage(stage, preset_name, folder, quiet=False, timeout=None):
    """Run one script; returns a dict with status, seconds and the files it wrote."""
    log_path = folder / "logs" / f"{stage}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    before = _snapshot(folder)
    command = [sys.executable, str(HERE / f"{stage}.py"), "--preset", preset_name] + (["-q"] if quiet else [])
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        try:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                  check=False).returncode
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            status = f"failed (timeout after {timeout} s)"
    seconds = time.perf_counter() - start
    after = _snapshot(folder)
    written = sorted(p for p, mtime in after.items() if before.get(p) != mtime and p.name != "RESULTS.md")
    return {"stage": stage, "status": status, "seconds": seconds, "files": written, "log": log_path}


def _demote(markdown, levels=2):
    """Push Markdown headings down so that they nest under a stage's heading."""
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in markdown.splitlines())


def _tail(path, lines=15):
    text = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    return "\n".join(line for line in text if line.strip())[-4000:].splitlines()[-lines:]


def report(preset, folder, outcomes, pending=()):
    """The text of RESULTS.md for the stages run so far."""
    total = sum(o["seconds"] for o in outcomes)
    lines = [
        f"# Results: preset {preset.name} ({preset.dataset})", "",
        f"cae revision {scripts.git_revision()}, written {datetime.datetime.now():%Y-%m-%d %H:%M}; "
        f"data {paths.data_dir()}, cache {paths.cache_dir()}.", "",
        "Regenerate with `python reproduce/all.py --preset " + preset.name + "`. Paper numbers in the "
        "tables are quoted from the paper; every other number comes from this run (attacks and models are "
        "cached, so their cost appears only in the stage that first computed them).", "",
        "## Wall time per stage", "",
        "| stage | status | wall time (s) | outputs |", "|---|---|---|---|",
    ]
    for o in outcomes:
        outputs = ", ".join(f"[{p.name}]({p.name})" for p in o["files"]) or "–"
        lines.append(f"| {o['stage']} | {o['status']} | {o['seconds']:.1f} | {outputs} |")
    lines += [f"| {stage} | not run yet | – | – |" for stage in pending]
    lines += [f"| total | | {total:.1f} | |", ""]
    for o in outcomes:
        lines += [f"## {o['stage']} ({o['status']}, {o['seconds']:.1f} s)", ""]
        if o["status"] != "ok":
            log_name = o["log"].relative_to(folder)
            lines += [f"Log: [{log_name}]({log_name}); its last lines:", "", "```", *_tail(o["log"]), "```", ""]
        for path in o["files"]:
            if path.suffix == ".md":
                lines += [_demote(path.read_text()).rstrip(), ""]
        for path in o["files"]:
            if path.suffix == ".png":
                lines += [f"![{path.stem}]({path.name})", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS),
                        help="experiment scale (default: quick)")
    parser.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages")
    parser.add_argument("--skip", nargs="+", default=[], metavar="STAGE", help="stages to leave out")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per stage")
    parser.add_argument("-q", "--quiet", action="store_true", help="pass -q (no progress bars) to the scripts")
    args = parser.parse_args()
    preset = presets.get(args.preset)
    stages = available_stages(preset.dataset)
    unknown = sorted((set(args.only or []) | set(args.skip)) - set(stages))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(stages)}")
    stages = [s for s in stages if (not args.only or s in args.only) and s not in args.skip]
    folder = paths.results_dir(preset.name)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"# reproduce/all.py: preset {preset.name}, stages {', '.join(stages)}; results in {folder}", flush=True)
    outcomes = []
    for i, stage in enumerate(stages):
        print(f"{stage} ...", end=" ", flush=True)
        outcome = run_stage(stage, preset.name, folder, quiet=args.quiet, timeout=args.timeout)
        outcomes.append(outcome)
        print(f"{outcome['status']} in {outcome['seconds']:.1f} s (log {outcome['log']})", flush=True)
        paths.atomic_write_bytes(folder / "RESULTS.md", report(preset, folder, outcomes, stages[i + 1:]).encode())
    print(f"wrote {folder / 'RESULTS.md'}")
    sys.exit(0 if all(o["status"] == "ok" for o in outcomes) else 1)
