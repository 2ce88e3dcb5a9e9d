"""Running a script or module in this process the way ``python script.py args...`` (or ``python -m module``) runs
it, as ``coverage run`` and ``python -m cProfile`` do: as ``__main__``, with its own ``sys.argv``, an absolute
``__file__`` and ``sys.path[0]``, its exit code and exceptions its own. Shared by ``timm-sched-fix run``
(runner/cli.py) and ``timm-sched-fix audit``; knows nothing of schedulers.
"""

from __future__ import annotations

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


class TargetNotFound(Exception):
    """The script or module to run does not exist; nothing was run. ``exit_code`` is what Python itself exits
    with for it: 2 for a missing file, 1 for a missing module."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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
