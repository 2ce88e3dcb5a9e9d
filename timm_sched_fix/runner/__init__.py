"""Running a script with the fix, without editing it: ``timm-sched-fix run`` (``cli``), the process start-up hook
that fixes child processes and ``TIMM_SCHED_FIX=1`` runs (``startup``), and the report printed at exit
(``report``). Importing this package imports nothing else: the start-up hook imports ``startup`` while Python starts.
"""
