"""``timm-sched-fix audit --against-timm VERSION``: the same audit under another timm release.

The release is installed without dependencies into a cache folder on first use (``pip install --no-deps --target``;
the noxfile's ``.nox/timm/<version>`` copies are reused when present) and the audit runs again in a child process
with that folder first on ``PYTHONPATH``, handing back its JSON document (compared by :func:`report.differences`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from timm_sched_fix import audit
from timm_sched_fix._usage import UsageError

#: A timm release as pip names it (1.0.24, 0.9.16, 1.0.0rc1, ...).
VERSION = re.compile(r"^\d+(\.\d+){1,3}((a|b|rc|\.post|\.dev)\d+)?$")


def check_version(version: str) -> None:
    if not VERSION.match(version):
        raise UsageError(f"--against-timm {version!r}: not a timm release number (such as 1.0.24)")


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/timm-sched-fix/timm`` (``~/.cache/...`` without the variable)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "timm-sched-fix" / "timm"


def release_dir(version: str, cache: str | None) -> Path:
    """A folder holding timm ``version`` (``<folder>/timm``), installed there on first use.

    With ``cache`` only ``<cache>/<version>`` is used; otherwise an existing ``.nox/timm/<version>`` (of the current
    folder or of this package's checkout) is reused, else ``default_cache()/<version>``. Raises UsageError when pip
    cannot install it.
    """
    if cache:
        candidates = [Path(cache) / version]
    else:
        checkout = Path(__file__).resolve().parents[2]
        candidates = [Path.cwd() / ".nox" / "timm" / version, checkout / ".nox" / "timm" / version,
                      default_cache() / version]
    for candidate in candidates:
        if (candidate / "timm" / "__init__.py").exists():
            return candidate
    target = candidates[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
    print(f"installing timm {version} (no dependencies) into {target} ...", file=sys.stderr, flush=True)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                             "--target", str(staging), f"timm=={version}"], capture_output=True, text=True, check=False)
    if result.returncode != 0 or not (staging / "timm" / "__init__.py").exists():
        shutil.rmtree(staging, ignore_errors=True)
        raise UsageError(f"--against-timm {version}: pip could not install timm=={version} into {target}: "
                         f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    try:
        staging.rename(target)
    except OSError:  # another process installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


def audit_under(version: str, folder: Path, child_args: Sequence[str]) -> dict[str, Any]:
    """Run ``timm-sched-fix audit child_args...`` under the timm in ``folder``; its JSON document.

    Raises UsageError when the child cannot run at all; a failing script is reported in the document.
    """
    with tempfile.TemporaryDirectory(prefix="timm-sched-fix-audit-", dir=audit.SCRATCH) as scratch:
        out = Path(scratch) / "audit.json"
        package_root = Path(__file__).resolve().parents[2]
        paths = [str(folder)]
        if str(package_root) not in _site_dirs():  # a checkout: the child must import this same code
            paths.append(str(package_root))
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env["PYTHONPATH"] = os.pathsep.join(paths)
        command = [sys.executable, "-m", "timm_sched_fix", "audit", "--out", str(out), *child_args]
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if not out.exists():
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
            raise UsageError(f"--against-timm {version}: the audit under timm {version} wrote no report (exit code "
                             f"{result.returncode}):\n{tail}")
        return json.loads(out.read_text())


def _site_dirs() -> set[str]:
    dirs = set(site.getsitepackages()) if hasattr(site, "getsitepackages") else set()
    dirs.add(site.getusersitepackages())
    return {str(Path(d).resolve()) for d in dirs}
