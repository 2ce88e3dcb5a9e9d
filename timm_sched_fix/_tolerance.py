"""When two learning rates count as the same: the relative tolerances of every comparison of LRs (audit, check,
trace, golden files) and the one comparison of per-group LR lists. Kept free of torch and timm imports."""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Relative tolerance between LRs of the same schedule computed twice (stock vs fixed, v(t) vs the LR a step ran
#: with, two runs of a script): a few float64 ulps, no absolute floor (LRs near 0 compare relatively too).
REL_TOL = 1e-12
#: The default relative tolerance of golden trace files (``timm_sched_fix.golden``), which may come from another
#: machine or release.
GOLDEN_REL_TOL = 1e-9


def close(a: Sequence[float], b: Sequence[float], rel_tol: float = REL_TOL) -> bool:
    """Whether two per-group LR lists are the same: as many values, each pair within ``rel_tol`` of each other."""
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=rel_tol, abs_tol=0.0) for x, y in zip(a, b))
