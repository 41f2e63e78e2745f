"""Serial zoo training against the same zoo as Ray tasks, side by side, from empty caches.

    python benchmarks/cluster.py --preset quick                  # one CPU per task
    python benchmarks/cluster.py --preset quick --cpus-per-task 2
    python benchmarks/cluster.py --preset smoke                  # a few minutes

Both runs are ``cae zoo train`` in a fresh process with its own empty cache (the decoded
dataset is linked in, so decoding is timed in neither): first serially with
``CAE_THREADS=--cpus-per-task``, then with ``--ray`` on a local Ray with
``--cpus-per-task`` CPUs per task, so that both train with the same TensorFlow thread
count and should give the same weights (see cae.cluster). Then every model's weight
hash is compared, and ``cae zoo plan`` (same thread count, measured afresh) projects
both wall times: one worker for the serial run, CPUs // cpus-per-task workers for Ray.
Prints a Markdown table; ``--out`` also writes the numbers as JSON.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time


def _parse(argv=None):
    from cae import presets

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    parser.add_argument("--cpus-per-task", type=int, default=1)
    parser.add_argument("--scratch", help="folder for the two caches (default: a temporary folder, removed after)")
    parser.add_argument("--out", help="also write the results to this JSON file")
    return parser.parse_args(argv)


def compare(specs, root_a, root_b):
    """How many models of ``specs`` have the same weights in the zoos at ``root_a`` and
    ``root_b``: ``{"models", "equal", "differ": [keys]}``."""
    from cae import models

    differ = []
    for spec in specs:
        a = models.weights_sha256(models.load(pathlib.Path(root_a) / spec.key / "model.keras"))
        b = models.weights_sha256(models.load(pathlib.Path(root_b) / spec.key / "model.keras"))
        if a != b:
            differ.append(spec.key)
    return {"models": len(specs), "equal": len(specs) - len(differ), "differ": differ}


def _cache_with_dataset(folder, dataset):
    """An empty cache that already holds the decoded ``dataset`` (hard links, or a copy)."""
    from cae import data, paths

    data.load(dataset)  # decodes once into the usual cache, untimed
    (folder / "datasets").mkdir(parents=True)
    for path in (paths.cache_dir() / "datasets").glob(f"{dataset}-*"):
        try:
            os.link(path, folder / "datasets" / path.name)
        except OSError:
            shutil.copy2(path, folder / "datasets" / path.name)
    return folder


def _timed(command, env, log):
    started = time.perf_counter()
    with open(log, "w") as handle:
        result = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed (exit {result.returncode}); see {log}")
    return seconds


def main(argv=None):
    args = _parse(argv)
    from cae import cluster, experiments, presets, scripts

    preset = presets.get(args.preset)
    specs = experiments.preset_specs(preset)
    workers = max(1, (os.cpu_count() or 1) // args.cpus_per_task)
    print(f"# cae revision {scripts.git_revision()}, preset {preset.name}: {len(specs)} models; "
          f"{os.cpu_count()} CPUs, {args.cpus_per_task} per task (Ray: {workers} at once)", flush=True)
    scratch = pathlib.Path(args.scratch or tempfile.mkdtemp(prefix="cae-cluster-benchmark-"))
    cli = [sys.executable, "-m", "cae.cli"]
    threads = {"CAE_THREADS": str(args.cpus_per_task)}
    try:
        legs = {}
        for leg, extra in (("serial", []), ("ray", ["--ray", "--cpus-per-task", str(args.cpus_per_task)])):
            cache = _cache_with_dataset(scratch / leg, preset.dataset)
            env = {**os.environ, **threads, "CAE_CACHE_DIR": str(cache)}
            env.pop(cluster.ENVIRONMENT_VARIABLE, None)
            legs[leg] = _timed(cli + ["zoo", "train", "--preset", preset.name] + extra, env, scratch / f"{leg}.log")
            print(f"{leg}: {legs[leg]:.1f} s", flush=True)
        hashes = compare(specs, scratch / "serial" / "zoo", scratch / "ray" / "zoo")
        env = {**os.environ, **threads, "CAE_CACHE_DIR": str(scratch / "plan")}
        planned = json.loads(subprocess.run(cli + ["zoo", "plan", "--preset", preset.name, "--workers", str(workers),
                                                   "--json"], env=env, capture_output=True, text=True,
                                            check=True).stdout)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    projected = {"serial": planned["totals"]["seconds"]["1"], "ray": planned["totals"]["seconds"][str(workers)]}
    print("\n| run | wall time | plan's projection | measured / projected |\n|---|---|---|---|")
    for leg in ("serial", "ray"):
        print(f"| {leg} | {legs[leg]:.1f} s | {projected[leg]:.1f} s | {legs[leg] / projected[leg]:.2f} |")
    print(f"\nRay / serial wall time: {legs['ray'] / legs['serial']:.2f} (target: at most 1.15)")
    print(f"weights: {hashes['equal']} of {hashes['models']} models identical"
          + (f"; differ: {', '.join(hashes['differ'])}" if hashes["differ"] else ""))
    result = {"preset": preset.name, "cpus_per_task": args.cpus_per_task, "workers": workers, "seconds": legs,
              "projected": projected, "hashes": hashes}
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
