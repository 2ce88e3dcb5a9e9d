"""``timm-sched-fix run [options] script.py [args...]`` (or ``-m module``): run a training script, unedited,
with ``patch()`` active, in this process and in the Python processes it starts.

Like ``python -m cProfile`` and ``coverage run``, the script is run in this process the way Python runs it
(the module resolved by :mod:`runpy` for ``-m``): it sees its own ``sys.argv`` (a ``--`` included), an absolute
``__file__`` and ``sys.path[0]``, runs as ``__main__``, and its exit code and exceptions are the command's;
targets Python cannot run get Python's own one-line message and exit code. The
processes it starts (torchrun's workers, ``torch.multiprocessing.spawn``'s, ``subprocess``) inherit
``TIMM_SCHED_FIX=1`` and the options, which the start-up hook (timm_sched_fix/runner/startup.py) turns into ``patch()``.
:func:`execute` is that way of running a script, shared with ``timm-sched-fix audit``.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import importlib.machinery
import io
import os
import pkgutil
import runpy
import sys
import types
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

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


class TargetNotFound(Exception):
    """The script or module to run does not exist; nothing was run. ``exit_code`` is what Python itself exits
    with for it: 2 for a missing file, 1 for a missing module."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


def _main_paths(target: str) -> tuple[str, str]:
    """``__file__`` (the path joined to the current directory, not normalised) and ``sys.path[0]`` (the real
    directory of the script, symbolic links resolved) as ``python script.py`` sets them (Python >= 3.9)."""
    file = os.path.join(os.getcwd(), target)
    return file, os.path.dirname(os.path.realpath(file))


def resolve(target: str, *, module: bool) -> tuple[str, Any, Any, str]:
    """What ``python target`` (or ``python -m target``) runs: the code, ``__file__``, the module spec (None for a
    plain script) and ``sys.path[0]``.

    Raises :class:`TargetNotFound` with Python's own message and exit code when Python cannot run it. With
    ``module``, the parent packages are imported, as ``python -m`` does.
    """
    if module:
        sys.path.insert(0, os.getcwd())  # where `python -m` looks first
        try:
            _, spec, code = runpy._get_module_details(target, runpy._Error)  # type: ignore[attr-defined]
        except runpy._Error as error:  # type: ignore[attr-defined] (runpy's own messages, as python -m prints them)
            raise TargetNotFound(str(error), 1) from None
        finally:
            sys.path.pop(0)
        return code, spec.origin, spec, os.getcwd()
    file, directory = _main_paths(target)
    importer = pkgutil.get_importer(file) if os.path.isdir(file) or zipfile.is_zipfile(file) else None
    if importer is not None:  # a folder or zip file with __main__.py, as python runs it
        spec = importer.find_spec("__main__")
        if spec is None:
            raise TargetNotFound(f"can't find '__main__' module in {file!r}", 1)
        return spec.loader.get_code("__main__"), spec.origin, spec, file
    try:
        with io.open_code(file) as stream:
            code = pkgutil.read_code(stream)  # a compiled .pyc, as python runs it
            if code is None:
                stream.seek(0)
                code = compile(stream.read(), file, "exec", dont_inherit=True)
    except OSError as error:
        raise TargetNotFound(f"can't open file {file!r}: [Errno {error.errno}] {error.strerror}", 2) from None
    return code, file, None, directory


def execute(target: str, args: Sequence[str], *, module: bool) -> None:
    """Run ``target`` as ``python script.py args...`` (or ``python -m target args...``) would, in this process:
    as ``__main__``, with ``sys.argv``, ``__file__`` and ``sys.path[0]`` as Python sets them, all restored
    afterwards.

    Raises :class:`TargetNotFound` before running anything when Python could not run the target; the script's
    ``SystemExit`` and exceptions propagate as they are.
    """
    code, file, spec, search_path = resolve(target, module=module)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=file, __cached__=spec.cached if spec else None, __builtins__=builtins, __spec__=spec,
                         __package__=spec.parent if spec else None,
                         __loader__=spec.loader if spec else importlib.machinery.SourceFileLoader("__main__", file))
    saved_argv, saved_path, saved_main = sys.argv[:], sys.path[:], sys.modules.get("__main__")
    sys.argv[:] = [file if module else target, *args]
    sys.path.insert(0, search_path)
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)  # noqa: S102 (running the script is what `python script.py` does)
    finally:
        sys.argv[:], sys.path[:] = saved_argv, saved_path
        if saved_main is not None:
            sys.modules["__main__"] = saved_main


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
def environ(variables: Mapping[str, str]) -> Iterator[None]:
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
