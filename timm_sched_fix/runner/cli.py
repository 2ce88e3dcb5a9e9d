"""``timm-sched-fix run [options] script.py [args...]`` (or ``-m module``): run a training script, unedited,
with ``patch()`` active, in this process and in the Python processes it starts.

Like ``python -m cProfile`` and ``coverage run``, the script is run in this process the way Python runs it
(the module resolved by :mod:`runpy` for ``-m``): it sees its own ``sys.argv`` (a ``--`` included), an absolute
``__file__`` and ``sys.path[0]``, runs as ``__main__``, and its exit code and exceptions are the command's;
targets Python cannot run get Python's own one-line message and exit code. The
processes it starts (torchrun's workers, ``torch.multiprocessing.spawn``'s, ``subprocess``) inherit
``TIMM_SCHED_FIX=1`` and the options, which the start-up hook (timm_sched_fix/runner/startup.py) turns into ``patch()``.
Running the script is runner/execute.py's, shared with ``timm-sched-fix audit``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence

from timm_sched_fix._patching import patched
from timm_sched_fix.options import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    DEFAULT_ON_LAG,
    ENV_REPORT,
    ENV_SWITCH,
    LAG_POLICIES,
    Options,
    env_of,
    flag_from_env,
    options_from_env,
)
from timm_sched_fix.runner import report, startup
from timm_sched_fix.runner.execute import TargetNotFound, environ, execute

DESCRIPTION = """\
Run a training script (or, with -m, a module) unedited, with every timm
scheduler it builds fixed, as if it began with `import timm_sched_fix.auto`.

The script runs in this process the way `python script.py args...` runs it: it
sees its own sys.argv, runs as __main__, and its exit code is the command's.
Options go before the script; everything after the script is the script's."""

EPILOG = """\
examples:
  timm-sched-fix run train.py --model resnet50 --sched cosine --epochs 300
  timm-sched-fix run --on-lag fix my_lightning_script.py --max-epochs 10
  timm-sched-fix run -m mypackage.train --config config.yaml"""


def add_patch_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--convention``, ``--auto`` and ``--on-lag``: the options of ``patch()``."""
    parser.add_argument("--convention", choices=CONVENTIONS, default=DEFAULT_CONVENTION,
                        help="when the script calls the scheduler: end = after the epoch or update, with the "
                        "next index (timm's train.py); begin = before it, with the current one")
    parser.add_argument("--auto", action="store_true",
                        help="apply each optimizer step's LR right before the step, so update schedules need no "
                        "step_update() calls (epoch schedules still need step())")
    parser.add_argument("--on-lag", choices=LAG_POLICIES, default=DEFAULT_ON_LAG,
                        help="what an index one behind the convention does (Lightning's documented override "
                        "passes one): warn once, fix it (shift by one), raise ScheduleLagError, or ignore it")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """``-m``, the script (or module) and its arguments: everything after the script belongs to it."""
    parser.add_argument("-m", dest="module", action="store_true", help="run TARGET as a module, like python -m")
    parser.add_argument("target", metavar="TARGET", nargs="?", help="the script to run (with -m: the module)")
    parser.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help="the script's own arguments")
    parser.set_defaults(usage_error=parser.error)


def require_target(args: argparse.Namespace, command: str) -> None:
    """Exit with a usage error (2) when no script was given."""
    if args.target is None:
        what = "module" if args.module else "script"
        args.usage_error(f"no {what} to run: give it after the options, e.g. timm-sched-fix {command} "
                         + ("-m package.module [ARGS ...]" if args.module else "train.py [ARGS ...]"))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a Python script or module with every timm scheduler fixed",
        description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
    )
    add_patch_arguments(parser)
    parser.add_argument("--no-children", action="store_true",
                        help="patch this process only, not the Python processes the script starts")
    parser.add_argument("--report", action="store_true",
                        help="each patched process says on stderr, at exit, which schedulers it fixed "
                        "(also TIMM_SCHED_FIX_REPORT=1)")
    add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the target with the patch active; its ``SystemExit`` and exceptions propagate as they are."""
    require_target(args, "run")
    try:
        reports = args.report or flag_from_env(os.environ, ENV_REPORT)
    except ValueError as error:
        print(f"timm-sched-fix run: {error}", file=sys.stderr)
        return 2
    options = Options(convention=args.convention, auto=args.auto, on_lag=args.on_lag)
    children = {} if args.no_children else env_of(options, report=reports)
    _warn_about_children(options, children)
    reporting = report.reporting() if reports else contextlib.nullcontext()
    with patched(convention=args.convention, auto=args.auto, on_lag=args.on_lag), reporting, environ(children):
        try:
            execute(args.target, args.args, module=args.module)
        except TargetNotFound as error:
            print(f"timm-sched-fix run: {error}", file=sys.stderr)
            return error.exit_code
    return 0


def split_target(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``argv`` of ``run`` or ``audit`` split into the command's options and the target with its arguments, as
    ``python [options] script.py args...`` splits: the first argument that is neither an option nor an option's
    value starts the target, and everything from there on is the script's, ``--`` included (argparse would drop
    a ``--`` right after the script). One ``--`` before the target only ends the options."""
    takes_value = {option: action.nargs != 0 for action in parser._actions for option in action.option_strings}
    position = 0
    while position < len(argv):
        arg = argv[position]
        if arg == "--":
            return list(argv[:position]), list(argv[position + 1:])
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.split("=", 1)[0]
        if name not in takes_value:  # an unknown option: argparse says so
            return list(argv), []
        position += 2 if takes_value[name] and "=" not in arg else 1
    return list(argv[:position]), list(argv[position:])


def _warn_about_children(options: Options, children: Mapping[str, str]) -> None:
    """Say when the processes the script starts will not run with this command's options."""
    if children and not startup.hook_installed():
        print(f"timm-sched-fix run: {startup.PTH_NAME} is not in this Python's site-packages, so the Python "
              "processes the script starts run stock timm; install the package (pip install timm-sched-fix, or "
              "pip install -e . in a checkout), or pass --no-children", file=sys.stderr)
    if startup.switched_on(ENV_SWITCH):
        try:
            inherited: object = options_from_env(os.environ)
        except ValueError as error:
            inherited = f"refused ({error})"
        if inherited != options:
            whose = "this command's" if children else f"the environment's ({ENV_SWITCH}=1)"
            print(f"timm-sched-fix run: the environment's options, {inherited}, are not this command's, "
                  f"{options}: the processes the script starts run with {whose}", file=sys.stderr)


