"""Both sides of auditing the Python processes a script under ``timm-sched-fix audit`` starts (torchrun's
workers, ``torch.multiprocessing.spawn``'s, ``subprocess``), through the start-up hook (runner/startup.py).

While the script runs, the audit sets ``TIMM_SCHED_FIX_AUDIT`` to a folder (:class:`Children`, the parent side).
Every Python process that starts with it calls :func:`start`: a recorder is installed when the process imports
``timm.scheduler``, and at exit a process that built a timm scheduler writes its report and JSON document into
the folder. A process that ends without running its exit handlers (``os._exit``, a fatal signal, killed) after
building a scheduler leaves only the marker ``<pid>.started``, which the audit reports as an audit that could not
finish. multiprocessing's ``fork`` children do not start Python anew, so they are not audited. Imports nothing of torch or timm before the process does.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import site
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from timm_sched_fix.options import (
    ENV_AUDIT,
    ENV_AUDIT_MAX_STEPS,
    ENV_AUDIT_UPDATES_PER_EPOCH,
    Options,
    env_of,
    rank_of,
)


def _positive(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {text!r}")
    return int(text)


def start(options: Options | None) -> None:
    """The start-up action of ``TIMM_SCHED_FIX_AUDIT``: audit this process (patched with ``options``, or stock),
    report into that folder at exit.

    Raises ValueError naming the variable for a bad value (the start-up hook says it once and goes on)."""
    import wrapt

    child = _Child(os.environ[ENV_AUDIT], options, _positive(ENV_AUDIT_UPDATES_PER_EPOCH),
                   _positive(ENV_AUDIT_MAX_STEPS))
    wrapt.register_post_import_hook(child.install, "timm.scheduler")
    atexit.register(child.finish)


class _Child:
    def __init__(self, folder: str, options: Options | None, updates_per_epoch: int | None,
                 max_steps: int | None) -> None:
        self.folder, self.options = folder, options
        self.updates_per_epoch, self.max_steps = updates_per_epoch, max_steps
        self.recorder: Any = None

    def install(self, module: Any) -> None:
        from timm_sched_fix.audit.record import Recorder

        if self.recorder is None:
            self.recorder = Recorder(max_steps=self.max_steps)
            self.recorder.on_first_record = self._started
            self.recorder.install()

    def _started(self) -> None:
        """This process built its first timm scheduler: a marker the audit reads as "owes a report" (a process
        killed, or ended by ``os._exit``, before writing it is named)."""
        (Path(self.folder) / f"{os.getpid()}.started").touch()

    def finish(self) -> None:
        """At exit: this process's report and document, into the folder (never an error of the process)."""
        if self.recorder is None:
            return
        try:
            self.recorder.uninstall()
            if self.recorder.records:
                self._write()
        except Exception as error:  # noqa: BLE001 (the process is exiting: say it, do not fail it)
            sys.stderr.write(f"timm-sched-fix audit: process {os.getpid()} could not write its report: {error!r}\n")

    def _write(self) -> None:
        from timm_sched_fix.audit.analysis import analyse
        from timm_sched_fix.audit.report import Run, audit_document, report_lines, verdict

        audits = [analyse(record, self.updates_per_epoch) for record in self.recorder.records]
        code, summary = verdict(audits)
        rank = rank_of(os.environ) or self.recorder.rank
        run = Run(list(sys.argv), False, self.options, self.updates_per_epoch, self.max_steps, None, None, rank,
                  child=True)
        document = audit_document(run, self.recorder, audits, code, summary)
        document["report"] = report_lines(run, self.recorder, audits, summary)
        partial = Path(self.folder) / f".{os.getpid()}.json"
        partial.write_text(json.dumps(document))
        partial.replace(Path(self.folder) / f"{os.getpid()}.json")


# -- the parent side: the audit around the script ------------------------------------------------------

def hook_audits_children() -> bool:
    """Whether a ``timm_sched_fix.pth`` that knows ``TIMM_SCHED_FIX_AUDIT`` is in a site-packages directory this
    interpreter processes (one installed by an earlier release of this package does not)."""
    from timm_sched_fix.runner import startup

    directories = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        directories.append(site.getusersitepackages())
    for directory in directories:
        path = Path(directory) / startup.PTH_NAME
        if path.is_file() and f'"{ENV_AUDIT}"' in path.read_text():
            return True
    return False


class Children:
    """The parent side: ``with Children(...):`` around the script, its child processes get the audit's environment;
    afterwards ``documents`` holds what they wrote (and ``unfinished`` the processes that wrote nothing)."""

    def __init__(self, options: Options | None, updates_per_epoch: int | None, max_steps: int | None) -> None:
        self.variables = {ENV_AUDIT: "", **(env_of(options) if options else {})}
        for name, value in ((ENV_AUDIT_UPDATES_PER_EPOCH, updates_per_epoch), (ENV_AUDIT_MAX_STEPS, max_steps)):
            if value is not None:
                self.variables[name] = str(value)
        self.documents: list[dict[str, Any]] = []
        self.unfinished: list[int] = []  # processes that built a scheduler and ended without their report
        self.hook_missing = False  # no start-up hook that audits them is installed
        self._folder: str | None = None
        self._environ: Any = None

    def __enter__(self) -> Children:  # noqa: PYI034 (not subclassed)
        from timm_sched_fix import audit
        from timm_sched_fix.runner.execute import environ

        if not hook_audits_children():
            self.hook_missing = True
            return self
        self._folder = tempfile.mkdtemp(prefix="timm-sched-fix-audit-", dir=audit.SCRATCH)
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

    def unreached(self, audited_here: bool) -> bool:
        """Whether it is worth saying that the child processes were not audited: no hook audits them, and this
        process audited nothing itself (:func:`report.unreached_line`)."""
        return self.hook_missing and not audited_here
