"""Comparisons of ``timm-sched-fix audit`` traces made in other processes: the same audit under other timm releases
(``--against-timm``), the ranks of a multi-process run, and the Python processes the script starts.

Another release is installed without dependencies into a cache folder on first use (``pip install --no-deps
--target``; the noxfile's ``.nox/timm/<version>`` copies are reused when present) and the audit runs again in a
child process with that folder first on ``PYTHONPATH``, handing back its JSON document. Ranks (``RANK`` and
``WORLD_SIZE`` in the environment, as torchrun sets them) each write their document into one folder; rank 0
waits for the others and names the ranks whose LRs differ from its own. The processes the script starts are audited
through the start-up hook (audit_children.py): :class:`Children` gives them the environment and reads their reports.
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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from timm_sched_fix._tolerance import close
from timm_sched_fix._usage import UsageError, format_table
from timm_sched_fix.options import ENV_AUDIT, ENV_AUDIT_MAX_STEPS, ENV_AUDIT_UPDATES_PER_EPOCH, Options, env_of
from timm_sched_fix.runner import startup
from timm_sched_fix.runner.cli import environ

#: A timm release as pip names it (1.0.24, 0.9.16, 1.0.0rc1, ...).
VERSION = re.compile(r"^\d+(\.\d+){1,3}((a|b|rc|\.post|\.dev)\d+)?$")
#: Environment variable naming the folder where ranks hand over their documents (else one under the temp folder).
ENV_RANKS_DIR = "TIMM_SCHED_FIX_AUDIT_RANKS_DIR"
#: Rank 0 waits this long, after its own run, for the other ranks' documents.
RANK_WAIT_SECONDS = 120.0
#: Where this audit's temporary folders go: the watcher's folder under the command line (audit._watched), which it
#: removes whatever happens to the audited process; else the system's.
SCRATCH: str | None = None
#: Differing steps shown per scheduler.
SHOWN_STEPS = 8


# -- other timm releases -------------------------------------------------------------------------------

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
    with tempfile.TemporaryDirectory(prefix="timm-sched-fix-audit-", dir=SCRATCH) as scratch:
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


# -- comparing two documents -----------------------------------------------------------------------------

def _lr(values: Sequence[float] | None) -> str:
    return "?" if not values else f"{values[0]:.8g}"


def differences(mine: Mapping[str, Any], other: Mapping[str, Any], my_label: str, other_label: str) -> list[str]:
    """Lines naming where the two runs' traces differ (every scheduler, every step); empty when they are the same."""
    lines: list[str] = []
    schedulers, others = mine["schedulers"], other["schedulers"]
    if len(schedulers) != len(others):
        lines.append(f"{my_label} built {len(schedulers)} timm scheduler(s), {other_label} {len(others)}")
    for a, b in zip(schedulers, others):
        name = f"scheduler {a['number']} ({a['class']})"
        if a["class"] != b["class"]:
            lines.append(f"{name}: {other_label} built a {b['class']}")
            continue
        ran_a, ran_b = a["trace"]["ran_lr"], b["trace"]["ran_lr"]
        differing = [k for k, (x, y) in enumerate(zip(ran_a, ran_b)) if not close(x, y)]
        if len(ran_a) != len(ran_b):
            lines.append(f"{name}: {len(ran_a)} optimizer steps under {my_label}, {len(ran_b)} under {other_label}")
        if not differing:
            continue
        lines.append(f"{name}: {len(differing):,} of {min(len(ran_a), len(ran_b)):,} optimizer steps ran with a "
                     f"different LR, first at step {differing[0]}")
        rows = []
        for k in differing[:SHOWN_STEPS]:
            expected_a, expected_b = a["trace"]["schedule_lr"][k], b["trace"]["schedule_lr"][k]
            rows.append([str(k), _t(a["trace"]["t"][k]), _lr(ran_a[k]), _lr(ran_b[k]), _lr(expected_a),
                         _lr(expected_b)])
        if len(differing) > SHOWN_STEPS:
            rows.append(f"... {len(differing) - SHOWN_STEPS:,} more")
        header = ["step", "t", f"ran ({my_label})", f"ran ({other_label})", f"v(t) ({my_label})",
                  f"v(t) ({other_label})"]
        lines += ["  " + line for line in format_table(header, rows)]
    return lines


def _t(t: float | None) -> str:
    return "?" if t is None else (str(int(t)) if float(t).is_integer() else f"{t:g}")


# -- ranks -------------------------------------------------------------------------------------------------

def ranks_dir(environ: Mapping[str, str]) -> Path:
    """The folder where the ranks of this run hand over their documents."""
    if environ.get(ENV_RANKS_DIR):
        return Path(environ[ENV_RANKS_DIR])
    run = "-".join(re.sub(r"[^\w.]", "_", environ.get(key, "")) for key in
                   ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"))
    return Path(tempfile.gettempdir()) / f"timm-sched-fix-audit-{run}"


def _rank_file(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank}.json"


def forget_earlier_run(folder: Path, rank: int) -> None:
    """Remove this rank's document of an earlier run with the same address (before this run writes its own)."""
    _rank_file(folder, rank).unlink(missing_ok=True)


def hand_over(document: Mapping[str, Any], folder: Path, rank: int, world: int) -> list[Mapping[str, Any] | None]:
    """Write this rank's document; on rank 0, wait for every rank's and return them by rank (None for a rank that
    wrote none in time) and remove the folder. Other ranks return []."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".rank-{rank}.json.{os.getpid()}"
    partial.write_text(json.dumps(document))
    partial.replace(_rank_file(folder, rank))
    if rank != 0:
        return []
    deadline = time.monotonic() + RANK_WAIT_SECONDS
    while time.monotonic() < deadline and not all(_rank_file(folder, r).exists() for r in range(world)):
        time.sleep(0.1)
    documents: list[Mapping[str, Any] | None] = []
    for r in range(world):
        path = _rank_file(folder, r)
        documents.append(json.loads(path.read_text()) if path.exists() else None)
    shutil.rmtree(folder, ignore_errors=True)
    return documents


def rank_lines(documents: Sequence[Mapping[str, Any] | None]) -> tuple[list[str], bool]:
    """Rank 0's comparison of every rank with itself: the lines, and whether any rank disagrees."""
    mine = documents[0]
    assert mine is not None
    lines, disagree = [], []
    for rank, other in enumerate(documents[1:], start=1):
        if other is None:
            lines.append(f"rank {rank} handed over no report within {RANK_WAIT_SECONDS:.0f} s")
            disagree.append(rank)
            continue
        found = differences(mine, other, "rank 0", f"rank {rank}")
        if found:
            disagree.append(rank)
            lines += [f"rank {rank} disagrees with rank 0:"] + ["  " + line for line in found]
    world = len(documents)
    if disagree:
        lines.insert(0, f"ranks disagree: {', '.join(f'rank {r}' for r in disagree)} ran other LRs than rank 0 "
                        f"({world} ranks)")
    else:
        lines.insert(0, f"all {world} ranks ran the same LR at every optimizer step")
    return lines, bool(disagree)


# -- the processes the script starts ---------------------------------------------------------------------

def hook_audits_children() -> bool:
    """Whether a ``timm_sched_fix.pth`` that knows ``TIMM_SCHED_FIX_AUDIT`` is in a site-packages directory this
    interpreter processes (one installed by an earlier release of this package does not)."""
    directories = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        directories.append(site.getusersitepackages())
    for directory in directories:
        path = Path(directory) / startup.PTH_NAME
        if path.is_file() and f'"{ENV_AUDIT}"' in path.read_text():
            return True
    return False


class Children:
    """``with Children(...):`` around the script: its child processes get the audit's environment; afterwards
    ``documents`` holds what they wrote, and :meth:`unreached` says why they could not be audited."""

    def __init__(self, options: Options | None, updates_per_epoch: int | None, max_steps: int | None) -> None:
        self.variables = {ENV_AUDIT: "", **(env_of(options) if options else {})}
        for name, value in ((ENV_AUDIT_UPDATES_PER_EPOCH, updates_per_epoch), (ENV_AUDIT_MAX_STEPS, max_steps)):
            if value is not None:
                self.variables[name] = str(value)
        self.documents: list[dict[str, Any]] = []
        self.unfinished: list[int] = []  # processes that built a scheduler and ended without their report
        self._unreached: str | None = None
        self._folder: str | None = None
        self._environ: Any = None

    def __enter__(self) -> Children:  # noqa: PYI034 (not subclassed)
        if not hook_audits_children():
            self._unreached = (f"the Python processes the script started (if any) were not audited: no "
                               f"{startup.PTH_NAME} that knows {ENV_AUDIT} is in this Python's site-packages "
                               "(install this version of the package)")
            return self
        self._folder = tempfile.mkdtemp(prefix="timm-sched-fix-audit-", dir=SCRATCH)
        self.variables[ENV_AUDIT] = self._folder
        self._environ = environ(self.variables)
        self._environ.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._environ is not None:
            self._environ.__exit__(kind, error, traceback)
        if self._folder is not None:
            for path in sorted(Path(self._folder).glob("*.json")):
                self.documents.append(json.loads(path.read_text()))
            reported = {document["pid"] for document in self.documents}
            self.unfinished = sorted(pid for pid in (int(path.stem) for path in Path(self._folder).glob("*.started"))
                                     if pid not in reported)
            shutil.rmtree(self._folder, ignore_errors=True)
        self.documents.sort(key=lambda document: (document["rank"] is None, document["rank"] or 0, document["pid"]))

    def unfinished_lines(self) -> list[str]:
        """One line per process the script started that built a timm scheduler but wrote no report."""
        return [f"the audit could not finish: process {pid}, which the script started, built a timm scheduler and "
                "ended without its report (os._exit, a fatal signal, or killed): its steps have no verdict"
                for pid in self.unfinished]

    def unreached(self, audited_here: bool) -> str | None:
        """Why child processes were not audited, worth saying when this process audited nothing itself."""
        return None if audited_here else self._unreached

    def lines_and_code(self) -> tuple[list[str], int]:
        """Every child's report, the ranks that disagree, a last line over all of them, and their exit code (0:
        every step of every process ran with v(t) and the ranks agree, else 1)."""
        lines: list[str] = []
        failing = []
        for document in self.documents:
            lines += document["report"]
            if document["verdict"]["exit_code"]:
                failing.append(_process_name(document))
        disagree = False
        ranked = [document for document in self.documents if document["rank"] is not None]
        if len(ranked) > 1:
            world = max(document["world_size"] for document in ranked)
            by_rank: list[dict[str, Any] | None] = [None] * world
            for document in ranked:
                by_rank[document["rank"]] = document
            if by_rank[0] is not None:
                found, disagree = rank_lines(by_rank)
                lines += [""] + found
        count = len(self.documents)
        processes = f"{count} process{'es' if count != 1 else ''} the script started"
        if not failing and not disagree:
            lines += ["", f"audit of the {processes}: every optimizer step ran with the LR its schedule defines"]
            return lines, 0
        parts = ([f"not every step ran with v(t) in {', '.join(failing)}"] if failing else []) + (
            ["the ranks disagree"] if disagree else [])
        lines += ["", f"audit of the {processes}: {'; '.join(parts)}"]
        return lines, 1


def _process_name(document: Mapping[str, Any]) -> str:
    return f"rank {document['rank']}" if document["rank"] is not None else f"process {document['pid']}"
