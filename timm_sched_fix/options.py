"""The three per-scheduler options, validated once, and their environment-variable form.

Kept free of torch and timm imports so that ``import timm_sched_fix.auto`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Convention = Literal["end", "begin"]
LagPolicy = Literal["warn", "fix", "raise", "ignore"]

#: The accepted values and the defaults of the three options: every signature, parser and help text reads them here.
CONVENTIONS: tuple[str, ...] = ("end", "begin")
LAG_POLICIES: tuple[str, ...] = ("warn", "fix", "raise", "ignore")
DEFAULT_CONVENTION: Convention = "end"
DEFAULT_AUTO = False
DEFAULT_ON_LAG: LagPolicy = "warn"

#: The switch of the process start-up hook (timm_sched_fix/runner/startup.py): every Python process patches.
ENV_SWITCH = "TIMM_SCHED_FIX"
ENV_CONVENTION = "TIMM_SCHED_FIX_CONVENTION"
ENV_AUTO = "TIMM_SCHED_FIX_AUTO"
ENV_ON_LAG = "TIMM_SCHED_FIX_ON_LAG"
#: Each patched process reports, at exit, the schedulers it fixed (timm_sched_fix/runner/report.py).
ENV_REPORT = "TIMM_SCHED_FIX_REPORT"
#: A folder: every Python process audits the schedulers it builds and writes its report there at exit
#: (timm_sched_fix/audit/children.py), with these settings of ``timm-sched-fix audit``.
ENV_AUDIT = "TIMM_SCHED_FIX_AUDIT"
ENV_AUDIT_UPDATES_PER_EPOCH = "TIMM_SCHED_FIX_AUDIT_UPDATES_PER_EPOCH"
ENV_AUDIT_MAX_STEPS = "TIMM_SCHED_FIX_AUDIT_MAX_STEPS"
#: The folder where the ranks of an audited multi-process run hand over their documents (else one under the temp folder).
ENV_AUDIT_RANKS_DIR = "TIMM_SCHED_FIX_AUDIT_RANKS_DIR"

#: The words of an on/off variable, in any case (unset or empty is off).
FLAG_ON: tuple[str, ...] = ("1", "true", "yes", "on")
FLAG_OFF: tuple[str, ...] = ("0", "false", "no", "off")


class Options:
    """How a fixed scheduler reads its calls: see docs/reference/terms.md. Immutable, compared by value.

    Raises ``ValueError`` for an unknown ``convention`` or ``on_lag``, ``TypeError`` for an ``auto`` that is not a
    bool.
    """

    # Written out instead of a frozen dataclass: creating one generates its methods with ``exec``, about 0.7 ms
    # of ``import timm_sched_fix.auto`` (see benchmarks/import_cost.py).

    convention: Convention
    auto: bool
    on_lag: LagPolicy

    def __init__(self, convention: Convention = DEFAULT_CONVENTION, auto: bool = DEFAULT_AUTO,
                 on_lag: LagPolicy = DEFAULT_ON_LAG) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        if not isinstance(auto, bool):
            raise TypeError(f"auto must be True or False, got {auto!r}")
        if on_lag not in LAG_POLICIES:
            raise ValueError(f"on_lag must be one of {LAG_POLICIES}, got {on_lag!r}")
        vars(self).update(convention=convention, auto=auto, on_lag=on_lag)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Options are immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Options are immutable: cannot delete {name!r}")

    def _values(self) -> tuple[str, bool, str]:
        return self.convention, self.auto, self.on_lag

    def __eq__(self, other: object) -> bool:
        return self._values() == other._values() if isinstance(other, Options) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"Options(convention={self.convention!r}, auto={self.auto!r}, on_lag={self.on_lag!r})"


def options_from_env(environ: Mapping[str, str]) -> Options:
    """Options from the ``TIMM_SCHED_FIX_*`` variables; unset ones keep their defaults."""
    convention = environ.get(ENV_CONVENTION, DEFAULT_CONVENTION).strip().lower()
    on_lag = environ.get(ENV_ON_LAG, DEFAULT_ON_LAG).strip().lower()
    auto = flag_from_env(environ, ENV_AUTO)
    try:
        return Options(convention=convention, auto=auto, on_lag=on_lag)  # type: ignore[arg-type]
    except ValueError as error:
        name = ENV_CONVENTION if convention not in CONVENTIONS else ENV_ON_LAG
        raise ValueError(f"{name}: {error}") from None


def flag_from_env(environ: Mapping[str, str], name: str) -> bool:
    """An on/off variable: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``, any case; unset or empty
    is off. Raises ValueError naming the variable for anything else."""
    text = environ.get(name, "0").strip().lower()
    if text not in (*FLAG_ON, *FLAG_OFF, ""):
        raise ValueError(f"{name} must be one of {FLAG_ON + FLAG_OFF}, got {environ[name]!r}")
    return text in FLAG_ON


def env_of(options: Options, *, report: bool = False) -> dict[str, str]:
    """The variables that make every Python process started with them patch with ``options`` (and report)."""
    variables = {ENV_SWITCH: "1", ENV_CONVENTION: options.convention, ENV_AUTO: "1" if options.auto else "0",
                 ENV_ON_LAG: options.on_lag}
    return {**variables, ENV_REPORT: "1"} if report else variables


def rank_of(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """``(rank, world size)`` of a process started by torchrun (or any launcher setting RANK and WORLD_SIZE)."""
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return None
    return (rank, world) if world > 1 and 0 <= rank < world else None
