"""``timm-sched-fix check``: which first optimizer steps stock timm gets wrong on the installed timm, and which
release quirks apply. ``cli`` is the command; ``first_step`` builds every scheduler class and reads its step-0 LR.
"""
