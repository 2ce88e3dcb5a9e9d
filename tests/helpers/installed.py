"""This project installed the ways users install it, into throw-away environments, for the start-up hook's tests:
its wheel into a fresh venv, its editable wheel (what ``pip install -e .`` builds) into a fresh venv, its wheel
with ``pip install --user``.

torch, timm and wrapt (gigabytes, minutes to install) are not installed again: after the project is installed, the
environment gets the test process's copies through a path entry in a ``.pth`` file named to be processed after
``timm_sched_fix.pth``, as a dependency in a directory ``site`` adds later would be (the hook must wait for it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import timm
import torch
import wrapt

ROOT = Path(__file__).resolve().parents[2]
#: Sorts after timm_sched_fix.pth, so ``site`` adds these directories after running the hook's line.
DEPENDENCIES_PTH = "zz_test_dependencies.pth"
_NOT_SOURCE = (".git", ".venv", ".nox", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis", ".pytest_cache",
               ".ruff_cache")


def _run(command: list[str], **kwargs) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without PYTHONPATH (the installed package must be the one found), the user site
    settings and any TIMM_SCHED_FIX variable, plus ``variables``."""
    clean = {name: value for name, value in os.environ.items()
             if name not in ("PYTHONPATH", "PYTHONUSERBASE", "PYTHONNOUSERSITE") and not name.startswith("TIMM_SCHED_FIX")}
    return {**clean, "OMP_NUM_THREADS": "1", **variables}


def build(directory: Path, *, editable: bool = False) -> Path:
    """The project's wheel (or editable wheel), built from a copy of the source in ``directory`` with the
    setuptools of this environment; the copy is the editable install's source and must stay."""
    source = directory / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    dist = directory / "dist"
    if editable:  # the PEP 660 hook `pip install -e` calls (pip runs it in the target environment, which has no
        # setuptools here)
        _run([sys.executable, "-c", "import sys; from setuptools import build_meta; build_meta.build_editable(sys.argv[1])",
              str(dist)], cwd=source)
    else:
        _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
              str(source)])
    (wheel,) = dist.glob("*.whl")
    return wheel


def venv(directory: Path) -> Path:
    """A fresh venv (no pip: this environment's pip installs into it); its python."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(directory)])
    return directory / "bin" / "python"


def install(wheel: Path, python: Path, *, user_base: Path | None = None) -> Path:
    """``pip install --no-deps wheel`` for ``python`` (``--user`` into ``user_base``), then the test's torch, timm
    and wrapt made visible to it; the site-packages directory the wheel went into."""
    user = ["--user"] if user_base else []
    env = environment(PYTHONUSERBASE=str(user_base), PIP_BREAK_SYSTEM_PACKAGES="1") if user_base else environment()
    _run([sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "install", "-q",
          "--no-deps", *user, str(wheel)], env=env)
    where = "site.getusersitepackages()" if user_base else "site.getsitepackages()[0]"
    site_packages = Path(_run([str(python), "-c", f"import site; print({where})"], env=env).strip())
    dependencies = dict.fromkeys(str(Path(module.__file__).resolve().parent.parent) for module in (torch, timm, wrapt))
    (site_packages / DEPENDENCIES_PTH).write_text("".join(f"{path}\n" for path in dependencies))
    return site_packages


def base_python() -> Path:
    """The interpreter this environment's venv was made from (``pip install --user`` goes there)."""
    return Path(getattr(sys, "_base_executable", sys.executable))
