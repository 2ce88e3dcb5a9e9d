"""``timm-sched-fix run [options] script.py [args...]`` (or ``-m module``): run a training script, unedited,
with ``patch()`` active.

Like ``python -m cProfile`` and ``coverage run``, the script is run with :mod:`runpy` in this process: it
sees its own ``sys.argv``, runs as ``__main__``, and its exit code and exceptions are the command's.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import sys

from .options import CONVENTIONS, LAG_POLICIES
from .patching import patched


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a Python script or module with every timm scheduler fixed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--convention", choices=CONVENTIONS, default="end", help="how calls are read (default: end)")
    parser.add_argument("--auto", action="store_true", help="apply v(k) before every optimizer step (update schedules)")
    parser.add_argument("--on-lag", choices=LAG_POLICIES, default="warn", help="what a lagging index does (default: warn)")
    parser.add_argument("-m", dest="module", action="store_true", help="run TARGET as a module, like python -m")
    parser.add_argument("target", metavar="TARGET", help="the script to run (or the module, with -m)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")


def run(args: argparse.Namespace) -> int:
    """Run the target with the patch active; its ``SystemExit`` and exceptions propagate as they are."""
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
        with patched(convention=args.convention, auto=args.auto, on_lag=args.on_lag):
            if args.module:
                runpy.run_module(args.target, run_name="__main__", alter_sys=True)
            else:
                runpy.run_path(args.target, run_name="__main__")
    finally:
        sys.argv[:], sys.path[:] = saved_argv, saved_path
    return 0


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, or an empty/relative name
        return False
