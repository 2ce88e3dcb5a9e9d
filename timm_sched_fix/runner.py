"""``timm-sched-fix run [options] script.py [args...]`` (or ``-m module``): run a training script, unedited,
with ``patch()`` active.

Like ``python -m cProfile`` and ``coverage run``, the script is run with :mod:`runpy` in this process: it
sees its own ``sys.argv``, runs as ``__main__``, and its exit code and exceptions are the command's.
:func:`execute` is that way of running a script, shared with ``timm-sched-fix audit``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import runpy
import sys
from collections.abc import Sequence

from .options import CONVENTIONS, LAG_POLICIES
from .patching import patched


class TargetNotFound(Exception):
    """The script or module to run does not exist; nothing was run. ``exit_code`` is what Python itself exits
    with for it: 2 for a missing file, 1 for a missing module."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_patch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--convention``, ``--auto`` and ``--on-lag``: the options of ``patch()``."""
    parser.add_argument("--convention", choices=CONVENTIONS, default="end", help="how calls are read (default: end)")
    parser.add_argument("--auto", action="store_true", help="apply v(k) before every optimizer step (update schedules)")
    parser.add_argument("--on-lag", choices=LAG_POLICIES, default="warn", help="what a lagging index does (default: warn)")


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """``-m``, the script (or module) and its arguments: everything after the script belongs to it."""
    parser.add_argument("-m", dest="module", action="store_true", help="run TARGET as a module, like python -m")
    parser.add_argument("target", metavar="TARGET", help="the script to run (or the module, with -m)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a Python script or module with every timm scheduler fixed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_patch_arguments(parser)
    add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the target with the patch active; its ``SystemExit`` and exceptions propagate as they are."""
    try:
        with patched(convention=args.convention, auto=args.auto, on_lag=args.on_lag):
            execute(args.target, args.args, module=args.module)
    except TargetNotFound as error:
        print(f"timm-sched-fix run: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def execute(target: str, args: Sequence[str], *, module: bool) -> None:
    """Run ``target`` as ``python script.py args...`` (or ``python -m target args...``) would, in this process:
    as ``__main__``, with ``sys.argv`` and ``sys.path[0]`` as Python sets them, both restored afterwards.

    Raises :class:`TargetNotFound` before running anything when the script or module does not exist; the
    script's ``SystemExit`` and exceptions propagate as they are.
    """
    # what `python -m module` / `python script.py` put first on sys.path
    search_path = os.getcwd() if module else os.path.dirname(os.path.abspath(target))
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv[:] = [target, *args]
    sys.path.insert(0, search_path)
    try:
        if module and not _module_exists(target):
            raise TargetNotFound(f"No module named {target!r}", 1)
        if not module and not os.path.exists(target):
            raise TargetNotFound(f"can't open file {target!r}: no such file", 2)
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
    finally:
        sys.argv[:], sys.path[:] = saved_argv, saved_path


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a missing parent package, or an empty/relative name
        return False
