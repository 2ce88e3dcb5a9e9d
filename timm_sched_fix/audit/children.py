"""The child side of auditing the Python processes a script under ``timm-sched-fix audit`` starts (torchrun's
workers, ``torch.multiprocessing.spawn``'s, ``subprocess``), through the start-up hook (startup.py).

While the script runs, the audit sets ``TIMM_SCHED_FIX_AUDIT`` to a folder (see ``audit_compare.Children``).
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
import sys
from pathlib import Path
from typing import Any

from timm_sched_fix.options import ENV_AUDIT, ENV_AUDIT_MAX_STEPS, ENV_AUDIT_UPDATES_PER_EPOCH, Options, rank_of


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
