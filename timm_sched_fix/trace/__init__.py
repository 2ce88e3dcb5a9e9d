"""``timm-sched-fix trace``: the LR of every optimizer step of a described run, stock vs fixed, without a script.

``cli`` is the command; ``settings`` reads and checks the run's description (flags or a timm ``args.yaml``);
``compute`` builds the schedulers and drives the loop; ``plot`` draws it (the audit draws with it too).
"""
