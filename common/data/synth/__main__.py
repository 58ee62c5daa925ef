"""`python -m common.data.synth <command>`: write ShapesWorld datasets in real on-disk formats, pretrain tiny backbones.

Each command lives in its own module, which defines ``cli_commands()`` returning
``{name: (help, add_arguments(parser), run(args) -> int | None)}``. Modules that are not there yet are skipped.
The commands are thin wrappers: datamodules call the writer functions themselves (``write_kinetics400``,
``write_ssv2``, ``write_pascal_mt``, ``write_coco_panoptic``,
``write_vtab_like``; :func:`common.data.synth.write_once`), never argv.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable

#: modules that contribute commands (each defines ``cli_commands()``)
COMMAND_MODULES = (
    "common.models.pretrain",
    "common.data.synth.video_writers",
    "common.data.synth.pascal_mt",
    "common.data.synth.coco_panoptic",
    "common.data.synth.vtab",
)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int | None]]]:
    """The ``python -m common.data.synth`` parser with one sub-command per writer, and the runner of each."""
    parser = argparse.ArgumentParser(prog="python -m common.data.synth", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runners = {}
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as err:
            if err.name == mod_name:
                continue
            raise
        for name, (help_text, add_args, run) in mod.cli_commands().items():
            p = sub.add_parser(name, help=help_text, description=help_text)
            add_args(p)
            runners[name] = run
    return parser, runners


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv`` None: ``sys.argv``); returns its exit status."""
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    rc = runners[args.command](args)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
