"""``timm-sched-fix run [options] script.py [args...]`` (or ``-m module``): run a training script, unedited,
with ``patch()`` active, in this process and in the Python processes it starts.

Like ``python -m cProfile`` and ``coverage run``, the script is run with :mod:`runpy` in this process: it
sees its own ``sys.argv``, runs as ``__main__``, and its exit code and exceptions are the command's. The
processes it starts (torchrun's workers, ``torch.multiprocessing.spawn``'s, ``subprocess``) inherit
``TIMM_SCHED_FIX=1`` and the options, which the start-up hook (timm_sched_fix/startup.py) turns into ``patch()``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import runpy
import sys
from collections.abc import Iterator, Mapping

from . import report, startup
from .options import (
    CONVENTIONS,
    ENV_REPORT,
    ENV_SWITCH,
    LAG_POLICIES,
    Options,
    env_of,
    flag_from_env,
    options_from_env,
)
from .patching import patched

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


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a Python script or module with every timm scheduler fixed",
        description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False,
    )
    parser.add_argument("--convention", choices=CONVENTIONS, default="end",
                        help="when the script calls the scheduler: end = after the epoch or update, with the "
                        "next index (timm's train.py); begin = before it, with the current one")
    parser.add_argument("--auto", action="store_true",
                        help="apply each optimizer step's LR right before the step, so update schedules need no "
                        "step_update() calls (epoch schedules still need step())")
    parser.add_argument("--on-lag", choices=LAG_POLICIES, default="warn",
                        help="what an index one behind the convention does (Lightning's documented override "
                        "passes one): warn once, fix it (shift by one), raise ScheduleLagError, or ignore it")
    parser.add_argument("--no-children", action="store_true",
                        help="patch this process only, not the Python processes the script starts")
    parser.add_argument("--report", action="store_true",
                        help="each patched process says on stderr, at exit, which schedulers it fixed "
                        "(also TIMM_SCHED_FIX_REPORT=1)")
    parser.add_argument("-m", dest="module", action="store_true", help="run TARGET as a module, like python -m")
    parser.add_argument("target", metavar="TARGET", nargs="?", help="the script to run (with -m: the module)")
    parser.add_argument("args", metavar="ARGS", nargs=argparse.REMAINDER, help="the script's own arguments")
    parser.set_defaults(usage_error=parser.error)


def run(args: argparse.Namespace) -> int:
    """Run the target with the patch active; its ``SystemExit`` and exceptions propagate as they are."""
    if args.target is None:
        what = "module" if args.module else "script"
        args.usage_error(f"no {what} to run: give it after the options, e.g. timm-sched-fix run "
                         + ("-m package.module [ARGS ...]" if args.module else "train.py [ARGS ...]"))
    # what `python -m module` / `python script.py` put first on sys.path
    search_path = os.getcwd() if args.module else os.path.dirname(os.path.abspath(args.target))
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv[:] = [args.target, *args.args]
    sys.path.insert(0, search_path)
    try:
        if args.module and not _module_exists(args.target):
            print(f"timm-sched-fix run: No module named {args.target!r}", file=sys.stderr)
            return 1
        if not args.module and not os.path.exists(args.target):
            print(f"timm-sched-fix run: can't open file {args.target!r}: no such file", file=sys.stderr)
            return 2
        try:
            reports = args.report or flag_from_env(os.environ, ENV_REPORT)
        except ValueError as error:
            print(f"timm-sched-fix run: {error}", file=sys.stderr)
            return 2
        options = Options(convention=args.convention, auto=args.auto, on_lag=args.on_lag)
        children = {} if args.no_children else env_of(options, report=reports)
        _warn_about_children(options, children)
        reporting = report.reporting() if reports else contextlib.nullcontext()
        with patched(convention=args.convention, auto=args.auto, on_lag=args.on_lag), reporting, _environ(children):
            if args.module:
                runpy.run_module(args.target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(args.target, run_name="__main__")
    finally:
        sys.argv[:], sys.path[:] = saved_argv, saved_path
    return 0


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


@contextlib.contextmanager
def _environ(variables: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``variables`` set, for the processes started in the block; restored after."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, or an empty/relative name
        return False
