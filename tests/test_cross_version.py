"""Checkpoints saved under one timm release load under another where the class exists (fixed and stock
state dicts, both directions), with the loading release's own LRs; timm 0.4.12's renamed Cosine/Tanh
arguments are refused with a clear error and nothing changed.

The releases are installed at run time with ``pip install --no-deps --target`` into ``.nox/timm-releases``
(never committed). The test drives its own releases whatever timm is installed, and takes ~45 s, so it runs
once per CI: only where the installed timm is the environment's own (site-packages, not a version-matrix
``--target`` copy on PYTHONPATH) and at least the newest of ``RELEASES`` (the nox ``matrix`` session of the
environment's own timm); elsewhere it is skipped, saying so. It is also skipped, saying why, if a release cannot be downloaded.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm

import timm_sched_fix

from support import HELPERS, site_package_dirs

CACHE = Path(__file__).resolve().parent.parent / ".nox" / "timm-releases"
RELEASES = ("0.4.12", "0.9.16", "1.0.3", "1.0.31")


def release(version: str) -> tuple[int, ...]:
    return tuple(int(re.match(r"\d*", part).group() or 0) for part in version.split(".")[:3])


def installed_timm_is_the_environments_newest() -> bool:
    return (Path(timm.__file__).resolve().parent.parent in site_package_dirs()
            and release(timm.__version__) >= release(RELEASES[-1]))


pytestmark = pytest.mark.skipif(
    not installed_timm_is_the_environments_newest(),
    reason=f"runs once per CI, against the environment's own timm >= {RELEASES[-1]}; this is timm "
           f"{timm.__version__} from {Path(timm.__file__).parent.parent} (it would drive the same releases again)")


def release_dir(version: str) -> Path:
    target = CACHE / f"timm-{version}"
    if not (target / "timm" / "__init__.py").exists():
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                                 f"timm=={version}"], capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            pytest.skip(f"could not download timm {version} into {target}: {result.stderr.strip()[-500:]}")
    return target


def run(version: str, *args: str) -> None:
    """version_worker.py under timm ``version``, with the timm_sched_fix this process imported (a checkout's
    own, not an installed copy that PYTHONPATH would otherwise leave first)."""
    package_dir = Path(timm_sched_fix.__file__).resolve().parent.parent
    paths = [release_dir(version), HELPERS, *([] if package_dir in site_package_dirs() else [package_dir])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    result = subprocess.run([sys.executable, str(HELPERS / "version_worker.py"), *args], capture_output=True,
                            text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, f"timm {version} {args[0]}:\n{result.stderr[-4000:]}"


def test_state_dicts_move_between_timm_releases(tmp_path):
    for version in RELEASES:
        run(version, "save", str(tmp_path / f"{version}.pt"))
    loaded, refused, mismatches = [], [], []
    for target in RELEASES[1:]:  # 0.4.12 only saves: loading into it is not a supported direction here
        sources = [source for source in RELEASES if source != target]
        report_path = tmp_path / f"into-{target}.json"
        run(target, "load", str(report_path), *(str(tmp_path / f"{source}.pt") for source in sources))
        for source, report in zip(sources, json.loads(report_path.read_text())):
            assert report["from"] == source and report["to"] == target
            loaded += [f"{source}->{target} {item}" for item in report["loaded"]]
            refused += [f"{source}->{target} {item}" for item in report["refused"]]
            mismatches += [f"{source}->{target} {item}" for item in report["mismatches"]]
    print(f"\ncross-release state dicts: {len(loaded)} loaded, {len(refused)} refused (0.4.12 Cosine/Tanh), "
          f"{len(mismatches)} wrong LRs, all of them stock timm loading 0.4.12 Cosine/Tanh")

    def renamed_quirk(item):  # 0.4.12's Cosine/Tanh (t_mul, decay_rate, cycle_limit=0 meaning "unlimited")
        return item.startswith("0.4.12->") and ("CosineLRScheduler" in item or "TanhLRScheduler" in item)

    # a fixed scheduler refuses them, saying why, with its LRs unchanged ...
    assert refused and all(renamed_quirk(item) and "->fixed" in item and "timm 0.5" in item
                           and "LRs unchanged: True" in item for item in refused), "\n".join(refused)
    # ... where stock timm loads them silently and runs at lr_min: the reason for refusing, not renaming
    assert mismatches and all(renamed_quirk(item) and item.split(":")[0].endswith("->stock")
                              for item in mismatches), "\n".join(mismatches[:20])
    assert len(loaded) > 50
