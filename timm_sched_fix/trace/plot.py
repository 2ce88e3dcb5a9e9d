"""LR against optimizer steps, one panel per schedule: two lines (stock vs fixed for ``trace``, what ran vs the
schedule for ``audit``), differing steps shaded, epoch boundaries and the end of warmup marked.

matplotlib is the optional extra ``timm-sched-fix[plot]``; nothing here imports it before it is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from timm_sched_fix._usage import UsageError

if TYPE_CHECKING:
    from timm_sched_fix.trace.compute import Trace

#: The PNG of one panel is FIGSIZE * DPI pixels: 1200 x 600; each further panel adds PANEL_HEIGHT inches.
FIGSIZE = (12.0, 6.0)
PANEL_HEIGHT = 4.0
DPI = 100
#: Epoch boundaries are drawn as lines up to this many epochs (more would paint the plot grey).
MAX_EPOCH_LINES = 60
#: A shaded differing region is at least this fraction of the x range wide, so one differing step shows.
MIN_SPAN_FRACTION = 0.004
#: Differing steps get dots (``Panel.dots``) up to this many: a difference too small for the y scale still shows.
MAX_DOTS = 200


@dataclass
class Line:
    """One LR per optimizer step, drawn as a step function."""

    values: Sequence[float]
    label: str
    color: str
    width: float = 1.6
    dashed: bool = False


@dataclass
class Panel:
    """One schedule: ``first`` is drawn solid, ``second`` (if any) dashed over it; ``differs`` (a flag per step)
    shaded."""

    title: str
    first: Line
    second: Line | None
    differs: Sequence[bool]
    shade_label: str
    boundaries: Sequence[int] = ()  # optimizer steps where an epoch starts
    updates_per_epoch: int | None = None  # regular epochs: an epoch axis on top
    markers: list[tuple[int, str]] = field(default_factory=list)  # (step, label), e.g. the end of warmup
    dots: bool = False  # both values drawn as dots in the middle of each shaded step (up to MAX_DOTS steps)
    note: tuple[int, str] | None = None  # (step, text) pointed at with an arrow, e.g. the first wrong step


def require_matplotlib(error: type[Exception]) -> None:
    """Raise ``error`` with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise error("--plot needs matplotlib: pip install 'timm-sched-fix[plot]'") from None


def differing_runs(differs: torch.Tensor | Sequence[bool]) -> list[tuple[int, int]]:
    """[start, stop) step ranges where the two lines differ."""
    flags = torch.as_tensor(differs, dtype=torch.bool)
    flags = torch.cat([torch.tensor([False]), flags, torch.tensor([False])]).to(torch.int8)
    edges = (flags[1:] - flags[:-1]).nonzero().flatten().tolist()
    return list(zip(edges[0::2], edges[1::2]))


def draw(panels: Sequence[Panel], path: str) -> None:
    """Write the panels, one above the other, as a PNG; raises UsageError when the file cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = FIGSIZE[1] + PANEL_HEIGHT * (len(panels) - 1)
    figure, axes_list = plt.subplots(len(panels), 1, figsize=(FIGSIZE[0], height), dpi=DPI, squeeze=False)
    try:
        for axes, panel in zip(axes_list[:, 0], panels):
            _draw_panel(axes, panel)
        figure.tight_layout()
        figure.savefig(path, dpi=DPI)
    except OSError as error:
        raise UsageError(f"--plot {path}: cannot write it ({error.strerror})") from None
    finally:
        plt.close(figure)


def _draw_panel(axes: object, panel: Panel) -> None:
    from matplotlib.ticker import MaxNLocator

    steps = len(panel.first.values)
    min_width = MIN_SPAN_FRACTION * max(steps, 1)
    for i, (start, stop) in enumerate(differing_runs(panel.differs)):
        axes.axvspan(start, start + max(stop - start, min_width), color="tab:red", alpha=0.15, lw=0,
                     label=panel.shade_label if i == 0 else None)
    if len(panel.boundaries) < MAX_EPOCH_LINES:
        for boundary in panel.boundaries:
            axes.axvline(boundary, color="0.85", lw=0.6, zorder=0)
    for step, label in panel.markers:
        axes.axvline(step, color="tab:green", ls="--", lw=1.2, label=label)
    x = list(range(steps + 1))
    for line in (panel.first, panel.second) if panel.second else (panel.first,):
        # one extra point so the last step's value is drawn as a full step
        values = [*line.values, line.values[-1]] if steps else []
        axes.plot(x if steps else [], values, drawstyle="steps-post", color=line.color, lw=line.width,
                  ls=(0, (4, 2)) if line.dashed else "-", label=line.label)
    flagged = [k for k, differs in enumerate(panel.differs) if differs]
    if panel.dots and panel.second and 0 < len(flagged) <= MAX_DOTS:
        middles = [k + 0.5 for k in flagged]
        axes.plot(middles, [panel.first.values[k] for k in flagged], "o", color=panel.first.color, ms=5, zorder=3)
        axes.plot(middles, [panel.second.values[k] for k in flagged], "o", mfc="none", color=panel.second.color,
                  ms=8, zorder=3)
    if panel.note is not None:
        step, text = panel.note
        axes.annotate(text, xy=(step + 0.5, panel.first.values[step]), xytext=(40, 40), textcoords="offset points",
                      fontsize=9, arrowprops={"arrowstyle": "->", "color": "0.3"})
    axes.set_xlim(0, max(steps, 1))
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate the step runs with")
    per_epoch = panel.updates_per_epoch
    if per_epoch:
        top = axes.secondary_xaxis("top", functions=(lambda k: k / per_epoch, lambda e: e * per_epoch))
        top.set_xlabel("epoch")
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title(panel.title, fontsize=11)
    axes.legend(loc="best", fontsize=9)


def plot_trace(trace: Trace, path: str) -> None:
    """``trace --plot``: stock vs fixed for every optimizer step of the run."""
    per_epoch = trace.updates_per_epoch
    warmup = trace.settings.warmup_epochs
    unit = "epoch" if trace.on_epochs else "update"
    panel = Panel(
        title=f"--sched {trace.settings.sched} (per {unit}), {trace.epochs} epochs x {per_epoch} updates: "
              "stock vs fixed",
        first=Line(trace.stock_lr.tolist(), f"stock timm (--loop {trace.loop})", "tab:red"),
        second=Line(trace.fixed_lr.tolist(), "fixed (timm_sched_fix)", "tab:blue", width=1.2, dashed=True),
        differs=trace.differs,
        shade_label="stock differs from fixed",
        boundaries=[epoch * per_epoch for epoch in range(1, trace.epochs)] if trace.epochs <= MAX_EPOCH_LINES else [],
        updates_per_epoch=per_epoch,
        markers=[(warmup * per_epoch, f"end of warmup (epoch {warmup})")] if 0 < warmup < trace.epochs else [],
    )
    draw([panel], path)
