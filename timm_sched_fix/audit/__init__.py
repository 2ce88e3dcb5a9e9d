"""``timm-sched-fix audit``: run a training script and check the LR every optimizer step ran with.

``cli`` is the command (arguments, the watched child process, the exit code); ``record`` observes a run
(``data`` holds what it records); ``analysis`` judges each step against v(t); ``report`` turns the judgement into
text, JSON, CSV, plots and golden files; ``compare`` reruns under other timm releases and gathers torchrun ranks;
``children`` audits the processes a script starts.
"""
