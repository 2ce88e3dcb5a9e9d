"""The ``timm-sched-fix`` command line: one subcommand per module of ``SUBCOMMANDS``, each module with
``add_parser(subparsers)`` and ``run(args)``. The help text is written for users; module docstrings are not
shown. Building the parser imports neither torch nor timm.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import platform
import sys
from collections.abc import Sequence
from typing import Any

from timm_sched_fix import __version__
from timm_sched_fix.options import (
    CONVENTIONS,
    DEFAULT_AUTO,
    DEFAULT_CONVENTION,
    DEFAULT_ON_LAG,
    ENV_AUTO,
    ENV_CONVENTION,
    ENV_ON_LAG,
    FLAG_OFF,
    FLAG_ON,
    LAG_POLICIES,
)
from timm_sched_fix.runner.cli import split_target

#: Subcommand name -> module (relative to this package) defining ``add_parser(subparsers)`` and ``run(args)``.
SUBCOMMANDS: dict[str, str] = {"run": "runner.cli", "check": "check.cli", "trace": "trace.cli", "audit": "audit.cli"}
#: Subcommands that run a script: everything after the script is the script's (``runner.split_target``).
TARGET_COMMANDS = ("run", "audit")

DESCRIPTION = """\
Make every optimizer step run with the learning rate its timm schedule
defines. These commands show what stock timm does on your installed timm and
run a script with the fix; in your own code, `import timm_sched_fix.auto` at
the top of the training script does the same as `run`."""


def _listed(values: Sequence[str], default: str | None) -> str:
    """``a (default), b or c``: an option's accepted values for the help text, the default marked."""
    words = [f"{value} (default)" if value == default else value for value in values]
    return ", ".join(words[:-1]) + " or " + words[-1]


EPILOG = f"""\
examples:
  timm-sched-fix check
      which first optimizer steps stock timm gets wrong on the installed timm
  timm-sched-fix trace --epochs 20 --warmup-epochs 3 --loop lightning
      the LR of every step of such a run, stock vs fixed
  timm-sched-fix run train.py --epochs 300
      run an unedited training script with the fix
  timm-sched-fix audit train.py --epochs 300
      run it (stock, or --fix) and check the LR every optimizer step ran with
  timm-sched-fix COMMAND --help
      a command's options and examples

environment, read by `import timm_sched_fix.auto` (`run` takes options instead);
values are case-insensitive:
  {ENV_CONVENTION}  {_listed(CONVENTIONS, DEFAULT_CONVENTION)}
  {ENV_AUTO}        {_listed(FLAG_ON, None)}{" (default)" * DEFAULT_AUTO}; {_listed(FLAG_OFF, None)}{" (default)" * (not DEFAULT_AUTO)}
  {ENV_ON_LAG}      {_listed(LAG_POLICIES, DEFAULT_ON_LAG)}

`pytest --timm-sched-fix` (or --timm-sched-fix begin) runs a test suite with the
fix in effect. `python -m timm_sched_fix` is the same as `timm-sched-fix`."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and examples as written; every option with a default value shows it (flags that are off
    and options without a value by default do not say so)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """The parser of the command and of every subcommand: ``HelpFormatter`` unless one is given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def version_text() -> str:
    """This package's version and those of the timm, torch and Python it runs with (read without importing)."""
    found = []
    for name in ("timm", "torch"):
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return f"timm-sched-fix {__version__} ({', '.join(found)}, Python {platform.python_version()})"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """The ``timm-sched-fix`` parser and its subcommand modules, by name."""
    parser = _Parser(prog="timm-sched-fix", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print the versions of timm-sched-fix, timm, torch and Python, and exit")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    modules = {name: importlib.import_module(f".{module}", __package__) for name, module in SUBCOMMANDS.items()}
    for module in modules.values():
        module.add_parser(subparsers)
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit code. Without ``argv`` (the
    console script, ``python -m timm_sched_fix``) ``audit`` runs in a forked process it watches; with one, in
    this process."""
    parser, modules = build_parser()
    command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TARGET_COMMANDS:  # the script's arguments are its own, ``--`` included
        options, target = split_target(_subparser(parser, argv[0]), argv[1:])
        args = parser.parse_args([argv[0], *options])
        if target:
            args.target, args.args = target[0], target[1:]
    else:
        args = parser.parse_args(argv)
    args.watched = command_line  # the command line's audit watches the audited process (audit._watched)
    if args.command != "run":  # run runs the script, stock below the torch range (patch() warns)
        from timm_sched_fix._compat import unsupported_torch

        message = unsupported_torch()
        if message is not None:
            print(message, file=sys.stderr)
            return 2
    return int(modules[args.command].run(args) or 0)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return subparsers.choices[command]
