"""``timm-sched-fix audit``: run a training script and check the LR every optimizer step ran with.

``cli`` is the command (arguments, the watched child process, the exit code); ``record`` observes a run
(``data`` holds what it records); ``analysis`` judges each step against v(t); ``report`` turns the judgement into
text (every sentence of the report), JSON, CSV, plots and golden files; ``releases`` reruns the audit under other
timm releases, ``ranks`` gathers the documents of torchrun's ranks, ``children`` audits the processes a script starts.
"""

#: Where this audit's temporary folders go: the watcher's folder under the command line (``cli._watched``), which it
#: removes whatever happens to the audited process; else (None) the system's.
SCRATCH: str | None = None
