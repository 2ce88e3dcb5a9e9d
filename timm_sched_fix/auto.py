"""``import timm_sched_fix.auto`` at the top of a training script patches timm (see ``patch()``).

Options come from ``TIMM_SCHED_FIX_CONVENTION``, ``TIMM_SCHED_FIX_AUTO`` and ``TIMM_SCHED_FIX_ON_LAG``;
a bad value raises ValueError at import, before anything is patched.
"""

import os

from .options import options_from_env
from .patching import patch

_options = options_from_env(os.environ)
patch(convention=_options.convention, auto=_options.auto, on_lag=_options.on_lag)
