"""Which LR-noise settings timm can draw, without importing torch or timm (the ``trace`` command's settings check
uses it before anything is built, the fix's :func:`timm_sched_fix._compat.check_noise` at construction and load).

timm redraws a normal noise until ``|noise| < noise_pct`` (``while True``; from timm 1.0.31 the draw is scaled by
``noise_std``), so a setting whose draws are almost never accepted spins instead of failing.
"""

from __future__ import annotations

import math

#: The smallest chance per draw that timm accepts a normal LR-noise draw for which a scheduler is built, wrapped,
#: loaded or traced: below it a step with noise spins for minutes or forever (``noise_pct=0``, a huge ``noise_std``).
MIN_NOISE_ACCEPTANCE = 1e-6


def acceptance(noise_pct: float, scale: float = 1.0) -> float:
    """The chance that one draw of N(0, ``scale``) falls within ``noise_pct``: 0 for a ``noise_pct`` that is not
    positive (NaN included)."""
    if not noise_pct > 0:
        return 0.0
    return math.erf(noise_pct / (scale * math.sqrt(2))) if scale > 0 else 1.0


def smallest_drawable_pct(scale: float = 1.0) -> float:
    """The smallest ``noise_pct`` (three significant digits, rounded up) with at least :data:`MIN_NOISE_ACCEPTANCE`
    per draw (erf(x) ~ 2x / sqrt(pi) this close to 0)."""
    exact = MIN_NOISE_ACCEPTANCE * scale * math.sqrt(math.pi / 2)
    unit = 10.0 ** (math.floor(math.log10(exact)) - 2)
    return round(math.ceil(exact / unit * (1 + 1e-9)) * unit, 12)
