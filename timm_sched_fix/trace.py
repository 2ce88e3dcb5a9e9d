"""``timm-sched-fix trace``: the LR every optimizer step of a run uses, stock timm vs the fix.

The schedule is built by the installed timm's own factory from train.py's flags (or its args.yaml).
Epoch schedules run the real loop with one optimizer step per epoch. For update schedules, which index
t optimizer step k runs with is an integer mapping per calling pattern (``step_indices``), and v(t)
is what the stock scheduler's own ``step_update(t)`` writes, computed once per t by the schedule's own
function (``trace_steps.schedule_values``), so long runs take seconds. Tests check both against real
training loops step by step.

This module is the command line and ``trace_settings`` the settings (neither imports torch or timm, so
mistakes are reported at once); ``trace_steps`` computes and prints the trace, ``plot`` draws it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .tools import UsageError, check_suffix
from .trace_settings import LOOPS, TRAIN_DEFAULTS, resolve_settings

__all__ = ["LOOPS", "TRAIN_DEFAULTS", "UsageError", "add_parser", "resolve_settings", "run"]


# -- the command line -------------------------------------------------------------------------------

def _flag(parser: argparse.ArgumentParser, name: str, help: str, **kwargs: Any) -> None:
    """A train.py flag; absent from the namespace unless given, so args.yaml values can fill the rest."""
    dest = name.lstrip("-").replace("-", "_")
    default = TRAIN_DEFAULTS[dest]
    parser.add_argument(name, dest=dest, default=argparse.SUPPRESS, help=f"{help} (train.py default: {default})",
                        **kwargs)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace", help="the LR each optimizer step of a run uses, stock timm vs fixed, from train.py's flags",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="ARGS_YAML", help="the args.yaml train.py wrote into its output folder; "
                        "flags given here override its values")
    parser.add_argument("--updates-per-epoch", type=int, default=None, metavar="N",
                        help="optimizer steps per epoch (len(loader) // grad_accum_steps); required with "
                        "--sched-on-updates, otherwise 1")
    parser.add_argument("--loop", choices=sorted(LOOPS), default="timm",
                        help="how the stock scheduler is called: " + "; ".join(f"{k} = {v.description}"
                                                                                for k, v in LOOPS.items()))
    parser.add_argument("--per-update", action="store_true", help="one table row per optimizer step, not per epoch")
    parser.add_argument("--out", metavar="FILE.csv|FILE.json", help="write the full trace, one record per step")
    parser.add_argument("--plot", metavar="FILE.png", help="draw stock vs fixed (needs the [plot] extra)")
    group = parser.add_argument_group("train.py scheduler flags")
    _flag(group, "--sched", "scheduler name")
    _flag(group, "--epochs", "epochs to train", type=int)
    _flag(group, "--lr", "learning rate; if not given, derived from --lr-base as train.py does on one process",
          type=float)
    _flag(group, "--lr-base", "base learning rate for --lr-base-size", type=float)
    _flag(group, "--lr-base-size", "batch size of --lr-base", type=int)
    _flag(group, "--lr-base-scale", "linear or sqrt; from --opt if empty")
    _flag(group, "--batch-size", "batch size per process", type=int)
    _flag(group, "--grad-accum-steps", "gradient accumulation steps", type=int)
    _flag(group, "--opt", "optimizer name (only to pick --lr-base-scale)")
    _flag(group, "--min-lr", "lower LR bound", type=float)
    _flag(group, "--warmup-lr", "LR at the start of warmup", type=float)
    _flag(group, "--warmup-epochs", "warmup epochs", type=int)
    _flag(group, "--warmup-prefix", "warmup comes before --epochs instead of within", action="store_true")
    _flag(group, "--cooldown-epochs", "epochs at --min-lr after the schedule", type=int)
    _flag(group, "--decay-epochs", "step: decay interval in epochs", type=float)
    _flag(group, "--decay-milestones", "multistep: epochs to decay at", type=int, nargs="+")
    _flag(group, "--decay-rate", "decay factor (poly: the power)", type=float)
    _flag(group, "--patience-epochs", "plateau: patience", type=int)
    _flag(group, "--lr-noise", "noise on/off points as fractions of the schedule", type=float, nargs="+")
    _flag(group, "--lr-noise-pct", "noise limit", type=float)
    _flag(group, "--lr-noise-std", "noise std-dev", type=float)
    _flag(group, "--lr-cycle-mul", "cycle length multiplier", type=float)
    _flag(group, "--lr-cycle-decay", "LR decay per cycle", type=float)
    _flag(group, "--lr-cycle-limit", "number of cycles", type=int)
    _flag(group, "--lr-k-decay", "k-decay (cosine, poly)", type=float)
    _flag(group, "--seed", "seed (also the noise seed)", type=int)
    _flag(group, "--sched-on-updates", "step the schedule per optimizer update", action="store_true")
    _flag(group, "--eval-metric", "metric name (plateau: 'loss' in it means mode min)")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as error:
        print(f"timm-sched-fix trace: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (``| head``) has gone: stop quietly, as Unix tools do
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python flushes stdout at exit)
        return 0


def _run(args: argparse.Namespace) -> int:
    check_suffix("out", args.out, (".csv", ".json"))
    check_suffix("plot", args.plot, (".png",))
    if args.plot:
        from .plot import require_matplotlib
        require_matplotlib(UsageError)
    settings = resolve_settings(args)
    if not isinstance(settings.sched, str) or not settings.sched:
        raise UsageError(f"--sched must be a scheduler name, got {settings.sched!r}")
    if settings.sched == "none":
        raise UsageError("--sched none leaves the LR alone: there is no schedule to trace")
    updates_per_epoch = args.updates_per_epoch
    if updates_per_epoch is None:
        if settings.sched_on_updates:
            raise UsageError("--sched-on-updates needs --updates-per-epoch N (train.py: len(loader_train) // "
                             "grad_accum_steps)")
        updates_per_epoch = 1
    if updates_per_epoch <= 0:
        raise UsageError(f"--updates-per-epoch must be positive, got {updates_per_epoch}")
    from .trace_steps import compute_trace, summary_line, table_lines, write_out

    trace = compute_trace(settings, args.loop, updates_per_epoch)
    unit = "update" if not trace.on_epochs else "epoch"
    print(f"timm {trace.timm_version}: --sched {settings.sched}, per {unit}, {trace.epochs} epochs x "
          f"{updates_per_epoch:,} updates = {trace.steps:,} optimizer steps, lr {settings.lr:.6g}"
          + (" (derived from --lr-base as train.py does on one process)" if settings.lr_derived else ""))
    print(f"stock: --loop {args.loop}: {LOOPS[args.loop].description}")
    options = ", ".join(f"{k}={v!r}" for k, v in LOOPS[args.loop].fixed_options.items())
    print(f"fixed: the same calls on timm_sched_fix's scheduler{f' ({options})' if options else ''}")
    if not trace.on_epochs and not args.per_update:
        print("per-epoch rows show each epoch's first step (--per-update for every step)")
    if settings.sched == "plateau":
        print("note: without an eval metric the trace shows plateau's warmup and noise, not its decays")
    if trace.stock_compat_fixes:
        print(f"note: the stock column runs with the compat fixes {', '.join(trace.stock_compat_fixes)}, without "
              f"which stock timm {trace.timm_version} cannot run this trace here; they change no schedule value")
    print()
    for line in table_lines(trace, args.per_update):
        print(line)
    print()
    print(summary_line(trace))
    if args.out:
        write_out(trace, args.out)
        print(f"wrote {args.out}")
    if args.plot:
        from .plot import plot_trace
        plot_trace(trace, args.plot)
        print(f"wrote {args.plot}")
    return 0
