"""The ``timm-sched-fix`` command: one subcommand per module, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

#: Subcommand name -> module (relative to this package) defining ``add_parser(subparsers)`` and ``run(args)``.
SUBCOMMANDS: dict[str, str] = {"run": "runner", "check": "check", "trace": "trace", "audit": "audit"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timm-sched-fix", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {name: importlib.import_module(f".{module}", __package__) for name, module in SUBCOMMANDS.items()}
    for module in modules.values():
        module.add_parser(subparsers)
    args = parser.parse_args(argv)
    return int(modules[args.command].run(args) or 0)
