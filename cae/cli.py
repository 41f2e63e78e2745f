"""The ``cae`` command line.

One sub-command group per noun (``cae data ...``; later ``cae extract``, ``cae verify``,
``cae zoo``). To add a group:

1. write ``_add_<group>(subparsers)`` that calls ``subparsers.add_parser("<group>")``,
   adds its sub-commands, and gives each one ``set_defaults(handler=_<group>_<verb>)``;
2. write one ``_<group>_<verb>(args) -> int`` per sub-command: it does the work, prints
   the result to stdout and returns the exit status (0 on success);
3. append ``_add_<group>`` to ``_GROUPS``.

Handlers import heavy modules (Keras, ART) inside themselves, so that ``cae data``
stays fast. Expected failures are raised as ``ValueError`` (``cae.data.DataError`` is
one): :func:`main` prints them as one line on stderr and exits with status 2, without
a traceback.
"""

import argparse
import json
import logging
import sys

from cae import __version__

log = logging.getLogger(__name__)

USAGE_ERROR = 2


# --------------------------------------------------------------------------- data
def _add_data(subparsers):
    from cae import data

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
    fetch.set_defaults(handler=_data_fetch)


def _data_info(args):
    from cae import data

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
    from cae import data

    print(data.fetch(args.name, args.dir))
    return 0


# --------------------------------------------------------------------------- entry point
_GROUPS = [_add_data]


def build_parser():
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


def main(argv=None):
    """Run ``cae`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.handler(args)
    except ValueError as err:  # DataError and invalid arguments found past argparse
        print(f"cae: error: {err}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
