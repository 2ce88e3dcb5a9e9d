"""Stock vs fixed LR against optimizer steps, differing steps shaded, warmup and epoch boundaries marked.

matplotlib is the optional extra ``timm-sched-fix[plot]``; nothing here imports it before it is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .trace_steps import Trace

#: The PNG is FIGSIZE * DPI pixels: 1200 x 600.
FIGSIZE = (12.0, 6.0)
DPI = 100
#: Epoch boundaries are drawn as lines up to this many epochs (more would paint the plot grey).
MAX_EPOCH_LINES = 60
#: A shaded differing region is at least this fraction of the x range wide, so one differing step shows.
MIN_SPAN_FRACTION = 0.004


def require_matplotlib(error: type[Exception]) -> None:
    """Raise ``error`` with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise error("--plot needs matplotlib: pip install 'timm-sched-fix[plot]'") from None


def differing_runs(differs: torch.Tensor) -> list[tuple[int, int]]:
    """[start, stop) step ranges where stock and fixed differ."""
    flags = torch.cat([torch.tensor([False]), differs, torch.tensor([False])]).to(torch.int8)
    edges = (flags[1:] - flags[:-1]).nonzero().flatten().tolist()
    return list(zip(edges[0::2], edges[1::2]))


def plot_trace(trace: Trace, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = torch.arange(trace.steps + 1).numpy()
    # one extra point so the last step's value is drawn as a full step
    stock = torch.cat([trace.stock_lr, trace.stock_lr[-1:]]).numpy()
    fixed = torch.cat([trace.fixed_lr, trace.fixed_lr[-1:]]).numpy()
    figure, axes = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    min_width = MIN_SPAN_FRACTION * trace.steps
    for i, (start, stop) in enumerate(differing_runs(trace.differs)):
        width = max(stop - start, min_width)
        axes.axvspan(start, start + width, color="tab:red", alpha=0.15, lw=0,
                     label="stock differs from fixed" if i == 0 else None)
    per_epoch = trace.updates_per_epoch
    if trace.epochs <= MAX_EPOCH_LINES:
        for epoch in range(1, trace.epochs):
            axes.axvline(epoch * per_epoch, color="0.85", lw=0.6, zorder=0)
    warmup = trace.settings.warmup_epochs
    if 0 < warmup < trace.epochs:
        axes.axvline(warmup * per_epoch, color="tab:green", ls="--", lw=1.2, label=f"end of warmup (epoch {warmup})")
    axes.plot(steps, stock, drawstyle="steps-post", color="tab:red", lw=1.6, label=f"stock timm (--loop {trace.loop})")
    axes.plot(steps, fixed, drawstyle="steps-post", color="tab:blue", lw=1.2, ls=(0, (4, 2)),
              label="fixed (timm_sched_fix)")
    axes.set_xlim(0, trace.steps)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate the step runs with")
    top = axes.secondary_xaxis("top", functions=(lambda k: k / per_epoch, lambda e: e * per_epoch))
    top.set_xlabel("epoch")
    top.xaxis.set_major_locator(MaxNLocator(integer=True))
    unit = "epoch" if trace.on_epochs else "update"
    axes.set_title(f"--sched {trace.settings.sched} (per {unit}), {trace.epochs} epochs x {per_epoch} updates: "
                   f"stock vs fixed", fontsize=11)
    axes.legend(loc="upper right", fontsize=9)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=DPI)
    except OSError as error:
        from .trace_settings import UsageError

        raise UsageError(f"--plot {path}: cannot write it ({error.strerror})") from None
    finally:
        plt.close(figure)
