"""``import timm_sched_fix.auto`` at the top of a training script patches timm (see ``patch()``).

Options come from ``TIMM_SCHED_FIX_CONVENTION``, ``TIMM_SCHED_FIX_AUTO`` and ``TIMM_SCHED_FIX_ON_LAG``, and
``TIMM_SCHED_FIX_REPORT=1`` reports at exit what was fixed (timm_sched_fix/runner/report.py); a bad value raises
ValueError at import, before anything is patched.
"""

import os

from timm_sched_fix._patching import patch
from timm_sched_fix.options import ENV_REPORT, flag_from_env, options_from_env

_options = options_from_env(os.environ)
_report = flag_from_env(os.environ, ENV_REPORT)
patch(convention=_options.convention, auto=_options.auto, on_lag=_options.on_lag)
if _report:
    from timm_sched_fix.runner.report import enable

    enable()
