"""The ``cae`` command line.

One sub-command group per noun or verb (``cae data``, ``cae zoo``, ``cae extract``,
``cae verify``, ``cae inspect``, ``cae remove``, ``cae preprocess``). To add a group:

1. write ``_add_<group>(subparsers)`` that calls ``subparsers.add_parser("<group>")``,
   adds its sub-commands, and gives each one ``set_defaults(handler=_<group>_<verb>)``;
2. write one ``_<group>_<verb>(args) -> int`` per sub-command: it does the work, prints
   the result to stdout and returns the exit status (0 on success);
3. append ``_add_<group>`` to ``_GROUPS``.

Handlers import heavy modules (Keras, ART, and cae's modules that import them) inside
themselves, so that ``cae data`` stays fast. Expected failures are raised as
``ValueError`` (``cae.data.DataError`` is one): :func:`main` prints them as one line
on stderr and exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import zipfile
from collections.abc import Sequence

import numpy as np

from cae import __version__, data, fingerprint, paths, presets, remote, removal, zoo

# cae's modules that import Keras (attacks, experiments, models, plan, preprocessing) are
# imported inside the handlers that need them, so that `cae data` and `cae --help` start
# without Keras and TensorFlow.

log = logging.getLogger(__name__)

USAGE_ERROR = 2


# --------------------------------------------------------------------------- data
def _add_data(subparsers):
    group = subparsers.add_parser("data", help="inspect and fetch the datasets")
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = commands.add_parser(
        "info", help="split sizes, classes and images per class of a dataset",
        description="Load a dataset (decoding it once; later runs read the decoded cache) "
                    "and print its split sizes, classes and images per class.",
    )
    info.add_argument("name", choices=data.names(), metavar="NAME",
                      help=f"dataset: {', '.join(data.names())}")
    info.add_argument("--path", help="read this file or folder instead of looking in $CAE_DATA_DIR")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(handler=_data_info)

    fetch = commands.add_parser(
        "fetch", help="download a dataset's official archive (checksum verified)",
        description="Download the official archive into the data folder and verify its "
                    "SHA-256; a copy that fails the check is not kept.",
    )
    fetch.add_argument("name", choices=data.names(), metavar="NAME",
                       help=f"dataset: {', '.join(data.names())}")
    fetch.add_argument("--dir", help="folder to save into (default: $CAE_DATA_DIR or the user cache)")
    fetch.add_argument("--if-missing", action="store_true",
                       help="do nothing when the folder already holds a file the dataset is read from")
    fetch.add_argument("--timeout", type=float, default=data.FETCH_TIMEOUT,
                       help="seconds to wait to connect and for each read (default: %(default)s)")
    fetch.set_defaults(handler=_data_fetch)


def _data_info(args):
    source = data.locate(args.name, args.path)
    info = data.load(args.name, args.path).info()
    info["source"] = str(source)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']}: {info['num_classes']} classes, "
          f"images {'x'.join(map(str, info['image_shape']))}, from {info['source']}")
    print(f"content key (sha256): {info['sha256']}")
    width = max(len("class"), *(len(c) for c in info["train_per_class"]))
    print(f"{'class':<{width}}  {'train':>7}  {'test':>7}")
    for name, count in info["train_per_class"].items():
        print(f"{name:<{width}}  {count:>7}  {info['test_per_class'][name]:>7}")
    print(f"{'total':<{width}}  {info['train']:>7}  {info['test']:>7}")
    return 0


def _data_fetch(args):
    print(data.fetch(args.name, args.dir, timeout=args.timeout, if_missing=args.if_missing))
    return 0


# --------------------------------------------------------------------------- extract
def _add_extract(subparsers):
    parser = subparsers.add_parser(
        "extract", help="extract a fingerprint of a preset's source model (Alg. 2)",
        description="Train (or reuse) the preset's source and training models, run C-IGM on "
                    "their ensemble and keep the examples with conferrability >= tau. With --model "
                    "and --data, fingerprint a model of your own: the surrogates and references are "
                    "trained on your data, with the preset's counts and epochs.",
    )
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    parser.add_argument("--out", required=True, help="fingerprint path (writes OUT.npz and OUT.json)")
    parser.add_argument("--model", help="fingerprint this .keras model instead of the preset's source "
                                        "(needs --data)")
    parser.add_argument("--data", help="with --model: .npz with 'x' (images) and 'y' (labels), ideally the "
                                       "model's training data; half trains the ensemble, half calibrates θ")
    parser.add_argument("--test", help="with --model: optional .npz with 'x' and 'y' for the zoo's test accuracy")
    parser.add_argument("--architecture", default="clone", choices=("clone", "preset"),
                        help="with --model: surrogates and references copy the model's architecture "
                             "(clone, default) or use the preset's")
    parser.add_argument("--eps", type=float, help="L-inf bound (default: the preset's, 0.15)")
    parser.add_argument("--tau", type=float, help="conferrability threshold (default: the preset's, 1.0)")
    parser.add_argument("--target", default="most_conferrable", help="C-IGM target-class rule")
    parser.add_argument("--transform", default=None,
                        help="C-IGM's random input transformation at each step, e.g. none (the paper's) or "
                             "shift+flip or scale+flip (default: the preset's)")
    parser.add_argument("--smooth", type=float, default=None, metavar="PIXELS",
                        help="C-IGM's translation-invariant gradient blur, 0 (the paper's) to "
                             "4 pixels (default: the preset's)")
    parser.add_argument("--mistakes", type=int, default=None, metavar="N",
                        help="beyond the paper: also key N natural images the source misclassifies (from the "
                             "preset's images in neither D1 nor D2) by its wrong label (default: the preset's "
                             "mistakes, 0 with --model; 0 is the paper's fingerprint)")
    parser.add_argument("--mistakes-stable", default=None, metavar="KIND:STRENGTH,...",
                        help="keep only mistakes the source repeats behind these input transformations, e.g. "
                             "flip:1 or flip:1,blur:0.5 ('none': every mistake; default: the preset's)")
    parser.set_defaults(handler=_extract)


def _extract(args):
    from cae import attacks, ensemble, experiments, preprocessing

    preset = presets.get(args.preset)
    # Checked before the zoo is trained, which can take hours.
    eps = preset.epsilon if args.eps is None else args.eps
    tau = preset.tau if args.tau is None else args.tau
    if not 0 < eps <= 1:
        raise ValueError(f"--eps {eps!r} is not allowed; expected an L-inf bound in (0, 1] "
                         f"(pixels lie in [0, 1]; the preset's is {preset.epsilon}).")
    if not 0 <= tau <= 1:
        raise ValueError(f"--tau {tau!r} is not allowed; expected a conferrability threshold in [0, 1] "
                         f"(the preset's is {preset.tau}).")
    if args.target not in attacks.CIGM.TARGETS:
        raise ValueError(f"--target {args.target!r} is not allowed; choose one of "
                         f"{', '.join(attacks.CIGM.TARGETS)}.")
    if args.transform is not None:
        try:
            ensemble.parse_transform(args.transform)
        except ValueError as err:
            raise ValueError(f"--{err}") from None
    if args.smooth is not None and not 0 <= args.smooth <= attacks.MAX_SMOOTH:  # NaN fails too
        raise ValueError(f"--smooth {args.smooth!r} is not allowed; expected a gradient blur of 0 (the paper's) to "
                         f"{attacks.MAX_SMOOTH:g} pixels (the preset's is {preset.smooth:g}).")
    if args.mistakes is not None and (args.mistakes < 0 or (args.mistakes and args.model)):
        raise ValueError(f"--mistakes {args.mistakes} is not allowed; expected 0 or more, and only for a preset's "
                         "source (its images outside D1 and D2 supply them; with --model there are none).")
    stable = None if args.mistakes_stable is None else preprocessing.parse(args.mistakes_stable, "--mistakes-stable")
    if (args.model is None) != (args.data is None) or (args.test and not args.model):
        raise ValueError("--model and --data go together (and --test needs them): the model to fingerprint "
                         "and its labelled data; without them cae extract fingerprints the preset's source.")
    if args.model:
        source, (x, y), test = _own_model_and_data(args, ["x", "y"])
        context = experiments.external_context(
            source, x, y, preset, test=test, verbose=args.verbose,
            architecture=zoo.CLONE if args.architecture == "clone" else None)
    else:
        context = experiments.prepare(preset, verbose=args.verbose)
    fp = experiments.extract(context, eps=args.eps, tau=args.tau, target=args.target, mistakes=args.mistakes,
                             mistakes_stable=stable, transform=args.transform, smooth=args.smooth)
    npz, manifest = fingerprint.save(fp, args.out)
    mistakes = fp.manifest["created_with"].get("mistakes", 0)
    behind = fp.manifest["created_with"].get("mistakes_stable") or []
    stable_text = f", repeated behind {preprocessing.describe(behind)}" if mistakes and behind else ""
    print(f"fingerprint: {fp.n} examples ({fp.n - mistakes} C-IGM + {mistakes} natural mistakes{stable_text}; eps "
          f"{fp.manifest['epsilon']:g}, tau {fp.manifest['tau']:g}) "
          f"of source {fp.manifest['source_model_hash']} -> {npz}, {manifest}")
    return 0


# --------------------------------------------------------------------------- verify
def _add_verify(subparsers):
    parser = subparsers.add_parser(
        "verify", help="verify a suspect model against a fingerprint (Alg. 1), label-only",
        description="Query the suspect on the fingerprint and compare its labels with the keys. "
                    "The suspect is a local .keras file (loaded with safe_mode=True) or a model "
                    "served over HTTP in the TensorFlow Serving REST format.",
    )
    parser.add_argument("--fingerprint", required=True, help="fingerprint path (FP, FP.npz or FP.json)")
    suspect = parser.add_mutually_exclusive_group(required=True)
    suspect.add_argument("--model", help="suspect .keras file")
    suspect.add_argument("--url", help="suspect's predict URL, e.g. http://host:8501/v1/models/m:predict")
    choices = [f"{s.name} ({s.summary})" if s.summary else s.name for s in fingerprint.STATISTICS.values()]
    parser.add_argument("--statistic", choices=tuple(fingerprint.STATISTICS), default=fingerprint.DEFAULT_STATISTIC,
                        help=" or ".join([", ".join(choices[:-1]), choices[-1]]) if len(choices) > 1 else choices[0])
    parser.add_argument("--threshold", type=float, default=None,
                        help="theta for the statistic (default: the calibration's, else 0.75 for retention)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="largest p-value behind a verdict (default: the calibration's, 0.01)")
    parser.add_argument("--max-queries", type=int, default=None, help="query budget (never exceeded; nothing is sent if the fingerprint needs more)")
    parser.add_argument("--keys", type=int, default=None, metavar="N",
                        help="verify with the fingerprint's first N keys in order of evidence (N queries; "
                             "θ and p-values recomputed for them; default: every key)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP request (--url)")
    parser.add_argument("--batch-size", type=int, default=64, help="inputs per request")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_verify)


def _load_suspect(path, num_classes):
    """The suspect ``.keras`` model, checked against the fingerprint's ``num_classes``; any
    failure to read it becomes a ValueError that names the file and the fix (so ``cae``
    reports it in one line)."""
    import pathlib
    import zipfile

    path = pathlib.Path(path)
    fix = ("pass a Keras 3 .keras file written by model.save(...) (copied completely) whose "
           "layers are Keras built-ins or cae's")
    if not path.is_file():
        raise ValueError(f"suspect model {path} does not exist or is not a file; {fix}.")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ValueError(f"suspect model {path} is not a .keras archive (not a zip file: truncated, "
                         f"corrupted or another format); {fix}.")
    import keras

    from cae import models, preprocessing  # noqa: F401  (registers cae's layers)

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - a hostile file makes Keras raise almost anything
        # (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile, h5py errors).
        detail = " ".join(str(err).split())[:300]
        raise ValueError(f"cannot load suspect model {path} ({type(err).__name__}: {detail}); "
                         f"{fix}.") from None
    return models.check_interface(model, where=f"suspect model {path}", num_classes=num_classes)


def _verify(args):
    fp = fingerprint.load(args.fingerprint)
    if args.keys is not None:
        if not 1 <= args.keys <= fp.n:
            raise ValueError(f"--keys is {args.keys}; the fingerprint has {fp.n} keys: give 1..{fp.n}.")
        fp = fingerprint.head(fp, args.keys)
    if args.max_queries is not None and args.max_queries < 0:
        raise ValueError(f"--max-queries is {args.max_queries}; give a number of queries >= 0.")
    statistic = fingerprint.STATISTICS[args.statistic]
    if statistic.calibrated and fp.calibration is None:
        raise ValueError(f"fingerprint {args.fingerprint} carries no calibration (format 1, or made without "
                         f"calibration models), so it has no {statistic.title}; use --statistic "
                         f"{fingerprint.DEFAULT_STATISTIC} or re-create it with cae extract.")
    if args.model:
        if args.max_queries is not None and fp.n > args.max_queries:
            # A local model gets the same budget rule as a remote one: all or nothing.
            raise ValueError(f"verifying needs {fp.n} queries (one per fingerprint) but "
                             f"--max-queries is {args.max_queries}; nothing was sent. Raise "
                             "--max-queries, or verify with the keys of most evidence that fit it (--keys N, "
                             f"N <= {args.max_queries}).")
        suspect = _load_suspect(args.model, fp.num_classes)
    else:
        suspect = remote.TFServingClient(args.url, timeout=args.timeout, batch_size=args.batch_size,
                                         max_queries=args.max_queries, num_classes=fp.num_classes)
    result = fingerprint.verify(suspect, fp, threshold=args.threshold, batch_size=args.batch_size,
                                statistic=args.statistic, alpha=args.alpha)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
        return 0
    print(describe(result))
    return 0


def describe(result: fingerprint.VerifyResult) -> str:
    """One line that says what a :class:`cae.fingerprint.VerifyResult` means."""
    name = fingerprint.get_statistic(result.statistic).description
    line = (f"{result.verdict.upper()}: {name} {result.score:.3f} vs threshold {result.threshold:.3f} "
            f"({result.threshold_source}); retention {result.retention:.3f} ({result.matches}/{result.n})")
    if result.calibrated:
        line += (f"; p-value {result.p_value:.3g} against {result.references} calibration references' "
                 f"per-fingerprint rates (empirical {result.p_value_empirical:.3g}); p-value of a derived model "
                 f"matching this few {result.p_value_derived:.3g} ({result.surrogates} calibration surrogates)")
    elif result.p_value is not None:
        line += f"; p-value {result.p_value:.3g} (no calibration: the null given)"
    else:
        line += "; no calibration stored: the paper's rule alone, no p-value"
    if result.left_out is not None:
        line += f"; the suspect is calibration reference {result.left_out}, left out"
    return line + f"; queries {result.queries}"


# --------------------------------------------------------------------------- inspect
def _add_inspect(subparsers):
    parser = subparsers.add_parser(
        "inspect", help="what a fingerprint holds and what its calibration promises (no suspect needed)",
        description="Print a fingerprint's keys by origin, its calibration (models, θ per statistic, the "
                    "transformations it covers) and a leave-one-out self-check: each calibration surrogate and "
                    "reference judged by the calibration without it, the defender's own forecast of how often a "
                    "derived model is flagged and whether an independent one is accused.",
    )
    parser.add_argument("--fingerprint", required=True, help="fingerprint path (FP, FP.npz or FP.json)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_inspect)


def inspection(fp: fingerprint.Fingerprint) -> dict:
    """What ``cae inspect`` reports on ``fp`` (JSON-compatible)."""
    manifest = fp.manifest
    out = {"sha256": fp.sha256, "keys": fp.n, "num_classes": fp.num_classes, "attack": manifest.get("attack"),
           "epsilon": manifest.get("epsilon"), "tau": manifest.get("tau"),
           "source_model_hash": manifest.get("source_model_hash"),
           "key_groups": {name: len(keys) for name, keys in fingerprint.key_groups(fp).items()},
           "key_order": "key_order" in manifest, "calibration": None}
    calibration = fp.calibration
    if calibration is None:
        return out
    statistics = fingerprint.available_statistics(calibration)
    out["calibration"] = {
        "models": calibration.models, "surrogates": len(calibration.surrogate_matches),
        "references": len(calibration.reference_matches), "alpha": calibration.alpha,
        "conditions": list(calibration.conditions),
        "threshold": {s: calibration.threshold(s) for s in statistics},
        "self_check": None}
    if len(calibration.surrogate_matches) >= 2 and len(calibration.reference_matches) >= 2:
        checks = {}
        for statistic in statistics:
            rows = calibration.self_check(statistic)
            checks[statistic] = {
                "surrogates_flagged": sum(r["verdict"] == "surrogate" for r in rows if r["kind"] == "surrogate"),
                "references_flagged": sum(r["verdict"] == "surrogate" for r in rows if r["kind"] == "reference"),
                "models": rows}
        out["calibration"]["self_check"] = checks
    return out


def _inspect(args):
    fp = fingerprint.load(args.fingerprint)
    result = inspection(fp)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    groups = " + ".join(f"{count} {name}" for name, count in result["key_groups"].items())
    print(f"fingerprint {result['sha256'][:16]}: {result['keys']} keys ({groups}), {result['num_classes']} classes, "
          f"eps {result['epsilon']}, tau {result['tau']}; source {result['source_model_hash']}; "
          f"{'keys ranked by evidence' if result['key_order'] else 'keys in stored order'}")
    calibration = result["calibration"]
    if calibration is None:
        print("no calibration: verify applies the paper's rule alone (θ 0.75, no p-value); re-create it with "
              "cae extract")
        return 0
    print(f"calibration: {calibration['models']}; alpha {calibration['alpha']:g}; "
          f"{len(calibration['conditions']) - 1} input transformations covered")
    for statistic, theta in calibration["threshold"].items():
        name = fingerprint.get_statistic(statistic).description
        check = (calibration["self_check"] or {}).get(statistic)
        line = f"  {name}: θ {'none' if theta is None else f'{theta:.3f}'}"
        if check:
            surrogates = [r["p_value"] for r in check["models"] if r["kind"] == "surrogate"]
            references = [r["p_value"] for r in check["models"] if r["kind"] == "reference"]
            line += (f"; self-check, leave-one-out: {check['surrogates_flagged']} of {len(surrogates)} calibration "
                     f"surrogates flagged (p-values {min(surrogates):.3g} to {max(surrogates):.3g}), "
                     f"{check['references_flagged']} of {len(references)} references accused (smallest p-value "
                     f"{min(references):.3g})")
        print(line)
    if calibration["self_check"] is None:
        print("  no self-check: it needs at least two calibration surrogates and two references")
    return 0


# --------------------------------------------------------------------------- remove
def _add_remove(subparsers):
    parser = subparsers.add_parser(
        "remove", help="run a removal attack on a model of your own (.keras) with the adversary's images",
        description="Derive a model from --model the way an adversary would (model extraction, fine-tuning, "
                    "adversarial training, ensemble; beyond the paper: fine-pruning, transfer learning, "
                    "extraction into another architecture, adversarial extraction), to check that a fingerprint "
                    "survives it. The derived model is cached in the zoo ($CAE_CACHE_DIR) and written to --out.",
    )
    parser.add_argument("attack", choices=list(removal.REMOVAL_ATTACKS))
    parser.add_argument("--model", required=True, help="the source model (.keras, loaded with safe_mode=True)")
    parser.add_argument("--data", required=True,
                        help="the adversary's images: .npz with array 'x', (N, 32, 32, 3) uint8 or float in [0, 1]")
    parser.add_argument("--test", help="optional .npz with 'x' and 'y' (integer labels) for the test accuracy")
    parser.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS),
                        help="sizes and schedules of the attack (epochs, fine-tuning examples, ...)")
    parser.add_argument("--architecture", default=zoo.CLONE,
                        help="architecture of the models trained from scratch: 'clone' (the source's) or a cae one")
    parser.add_argument("--mapping", metavar="CLASSES",
                        help="transfer only: the task class of each of the source's classes, comma-separated "
                             f"(default {','.join(map(str, removal.TRANSFER_MAPPING))}, CIFAR-10's five pairs)")
    parser.add_argument("--out", required=True, help="where to write the derived model (.keras)")
    parser.set_defaults(handler=_remove)


def _npz_arrays(path, names, what):
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read {path} as an .npz file ({err}); save the arrays with numpy.savez.") from err
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds one array, not an .npz archive; save it with numpy.savez({names[0]}=...).")
    with arrays:
        missing = [n for n in names if n not in arrays.files]
        if missing:
            raise ValueError(f"{path} has arrays {arrays.files}; {what} needs {', '.join(map(repr, names))}.")
        return [arrays[n] for n in names]


def _own_model_and_data(args, names):
    """``--model`` (loaded with safe_mode=True), the ``names`` arrays of ``--data`` and
    ``--test``'s ``(x, y)`` or None: the inputs of ``cae extract --model`` and ``cae remove``."""
    from cae import models

    source = models.load(args.model)
    arrays = _npz_arrays(args.data, names, "--data")
    test = tuple(_npz_arrays(args.test, ["x", "y"], "--test")) if args.test else None
    return source, arrays, test


def _check_keras_out(out):
    if not str(out).endswith(".keras"):
        raise ValueError(f"--out {out!r} must end in .keras.")


def _remove(args):
    _check_keras_out(args.out)
    settings = {}
    if args.mapping is not None:
        if removal.task_mapping(args.attack) is None:
            raise ValueError(f"--mapping is for the transfer attack; {args.attack} keeps the source's classes.")
        try:
            settings["transfer_mapping"] = tuple(int(c) for c in args.mapping.split(","))
        except ValueError:
            raise ValueError(f"--mapping {args.mapping!r}: give one whole number per source class, "
                             "comma-separated (e.g. 0,1,2,3,4,3,2,4,0,1).") from None
    source, (x,), test = _own_model_and_data(args, ["x"])
    if settings:
        removal.check_mapping(settings["transfer_mapping"], source.output_shape[-1])
    derived = removal.remove_model(args.attack, source, x, preset=args.preset, architecture=args.architecture,
                                   test=test, verbose=args.verbose, **settings)
    paths.atomic_save(pathlib.Path(args.out), derived.save, suffix=".keras")
    x_eval = data.to_float(test[0] if test else x[:1000])
    labels = zoo.predict(derived, x_eval).argmax(1)
    mapping = removal.task_mapping(args.attack, **settings)  # transfer learning: compared in the task's labels
    mapped = (lambda y: y) if mapping is None else (lambda y: mapping[y])
    agree = np.mean(labels == mapped(zoo.predict(source, x_eval).argmax(1)))
    accuracy = f", test accuracy {np.mean(labels == mapped(np.asarray(test[1]))):.3f}" if test else ""
    task = "" if mapping is None else f" (labels mapped to the task's {int(mapping.max()) + 1} classes)"
    print(f"{args.attack}: wrote {args.out}; agreement with the source {agree:.3f} on "
          f"{len(x_eval)} {'test' if test else 'adversary'} images{accuracy}{task}")
    return 0


# --------------------------------------------------------------------------- preprocess
def _add_preprocess(subparsers):
    parser = subparsers.add_parser(
        "preprocess", help="put a model behind an input transformation (a suspect that preprocesses its queries)",
        description="Write --model behind an input transformation as a new .keras file (nothing is trained), to "
                    "check a fingerprint against a suspect that transforms its inputs: 'quantize' (bits per "
                    "channel), 'blur' (Gaussian, sigma in pixels), 'median' (odd window size), 'noise' "
                    "(Gaussian, standard deviation) or 'flip' (probability of mirroring each query). See "
                    "cae.preprocessing.",
    )
    parser.add_argument("kind", help="quantize, blur, median, noise or flip")
    parser.add_argument("--strength", required=True, help="bits, sigma, window size, standard deviation or p")
    parser.add_argument("--model", required=True, help="the model (.keras, loaded with safe_mode=True)")
    parser.add_argument("--out", required=True, help="where to write the wrapped model (.keras)")
    parser.set_defaults(handler=_preprocess)


def _preprocess(args):
    from cae import models, preprocessing

    _check_keras_out(args.out)
    preprocessing.transform(args.kind, args.strength)  # a bad kind or strength fails before loading
    wrapped = preprocessing.wrap(models.load(args.model), args.kind, args.strength)
    paths.atomic_save(pathlib.Path(args.out), wrapped.save, suffix=".keras")
    print(f"wrote {args.out}: {args.model} behind {args.kind} at strength {args.strength}")
    return 0


# --------------------------------------------------------------------------- zoo
def _add_zoo(subparsers):
    group = subparsers.add_parser("zoo", help="train and list a preset's models")
    commands = group.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = commands.add_parser("train", help="train (or resume) every model of a preset")
    train.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    train.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                       help="train one Ray task per model: on a Ray started on this machine, or on the cluster "
                            "at ADDRESS (same cache, same weights as a serial run with CAE_THREADS=--cpus-per-task)")
    train.add_argument("--cpus-per-task", type=float, default=1.0,
                       help="with --ray: CPUs of each task, and TensorFlow's threads (default: 1)")
    train.add_argument("--gpus-per-task", type=float, default=0.0,
                       help="with --ray: GPUs of each task; 0.5 puts two models on a GPU (default: 0)")
    train.add_argument("--removal", nargs="?", const="paper", metavar="ATTACKS",
                       help="also train removal attacks' models, after the source: alone, the paper's (Tables V "
                            "and VI); or 'all' (with pruning, transfer learning, extraction into other "
                            "architectures, adversarial extraction) or a comma-separated list")
    train.add_argument("--extra-references", nargs="?", type=int, const=-1, default=0, metavar="N",
                       help="also train N more independent references (other training recipes; the verification "
                            "report's negatives); alone, the preset's extra_references")
    train.set_defaults(handler=_zoo_train)
    plan = commands.add_parser(
        "plan", help="models, parameters, FLOPs and projected wall time of a preset's zoo (trains nothing)",
        description="List the preset's models with their parameters and training FLOPs per epoch, time each "
                    "architecture here for a few seconds on random images, and project the zoo's wall time "
                    "on this machine and on a GPU of the given throughput, for 1 and --workers workers.")
    plan.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    plan.add_argument("--gpu-throughput", type=float, metavar="IMG_PER_S",
                      help="ResNet-20 training images per second on one GPU (other architectures scale by FLOPs)")
    plan.add_argument("--workers", type=int, default=4, help="workers (machines or GPUs) to project for (default: 4)")
    plan.add_argument("--removal", nargs="?", const="paper", metavar="ATTACKS",
                      help="include removal attacks' models: alone, the paper's; or 'all' or a comma-separated list")
    plan.add_argument("--extra-references", nargs="?", type=int, const=-1, default=0, metavar="N",
                      help="include N extra references; alone, the preset's extra_references")
    plan.add_argument("--measure-seconds", type=float, default=3.0,
                      help="seconds of training to time per architecture (default: 3)")
    plan.add_argument("--remeasure", action="store_true", help="time the architectures again instead of reusing "
                                                               "this machine's cached measurements")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=_zoo_plan)
    listing = commands.add_parser("list", help="the preset's models, their state and metrics")
    listing.add_argument("--preset", default="quick", choices=sorted(presets.PRESETS))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_zoo_list)


def _extra_references(args, preset):
    """``--extra-references``: a count, or alone (-1) the preset's."""
    if args.extra_references < -1:
        raise SystemExit(f"--extra-references {args.extra_references}: give a number of models, 0 or more.")
    return preset.extra_references if args.extra_references == -1 else args.extra_references


def _zoo_train(args):
    from cae import experiments

    preset = presets.get(args.preset)
    experiments.train_preset(preset, address=args.ray, removal=args.removal,
                             extra_references=_extra_references(args, preset),
                             cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task, verbose=True)
    return _zoo_list(argparse.Namespace(preset=args.preset, json=False))


def _zoo_plan(args):
    from cae import plan

    zoo.set_threads_from_env()  # time the architectures with the threads training will use
    preset = presets.get(args.preset)
    result = plan.plan(preset, removal=args.removal, extra_references=_extra_references(args, preset),
                       workers=args.workers, gpu_throughput=args.gpu_throughput, seconds=args.measure_seconds,
                       remeasure=args.remeasure)
    print(json.dumps(plan.to_json(result), indent=2) if args.json else plan.describe(result))
    return 0


def _zoo_list(args):
    from cae import experiments

    preset = presets.get(args.preset)
    store = zoo.Zoo()
    specs = experiments.model_specs(preset)
    rows = []
    for group in ("source",) + experiments.GROUPS:
        for spec in ([specs[group]] if group == "source" else specs[group]):
            row = {"group": group, "key": spec.key, "architecture": spec.architecture}
            row.update(store.metrics(spec) if store.complete(spec) else {"state": "not trained"})
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        accuracy = row.get("test_accuracy")
        state = f"acc {accuracy:.3f}" if accuracy is not None else row["state"]
        fidelity = f" fidelity {row['fidelity_test']:.3f}" if "fidelity_test" in row else ""
        print(f"{row['group']:<17} {row['key']} {row['architecture']:<12} {state}{fidelity}")
    return 0


# --------------------------------------------------------------------------- entry point
_GROUPS = [_add_data, _add_zoo, _add_extract, _add_verify, _add_inspect, _add_remove, _add_preprocess]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cae",
        description="Fingerprinting deep neural networks with conferrable adversarial examples.",
    )
    parser.add_argument("--version", action="version", version=f"cae {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO level)")
    subparsers = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for add_group in _GROUPS:
        add_group(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:

    """Run ``cae`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except ValueError as err:  # DataError, FingerprintError, invalid arguments past argparse
        print(f"cae: error: {err}", file=sys.stderr)
        return USAGE_ERROR
    except (RuntimeError, OSError) as err:  # remote failures, budget exhausted, I/O
        print(f"cae: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
