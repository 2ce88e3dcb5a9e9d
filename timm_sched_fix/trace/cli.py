"""``timm-sched-fix trace``: the LR every optimizer step of a run uses, stock timm vs the fix.

The schedule is built by the installed timm's own factory from train.py's flags (or its args.yaml).
Epoch schedules run the real loop with one optimizer step per epoch. For update schedules, which index
t optimizer step k runs with is an integer mapping per calling pattern (``step_indices``), and v(t)
is what the stock scheduler's own ``step_update(t)`` writes, computed once per t by the schedule's own
function (``trace_steps.schedule_values``), so long runs take seconds. Tests check both against real
training loops step by step.

This module is the command line (no torch or timm import, so mistakes are reported at once; only an unknown
``--sched`` next to another mistake asks the installed timm first); ``trace_settings`` holds the settings and
their checks, ``trace_steps`` computes and prints the trace.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from timm_sched_fix._usage import check_output, check_suffix
from timm_sched_fix.trace.settings import (
    LOOPS,
    SCHEDULES_OF_EVERY_RELEASE,
    TRAIN_DEFAULTS,
    UsageError,
    check_trace_length,
    checked_settings,
    merged_settings,
)

DESCRIPTION = """\
Print the learning rate every optimizer step of a training run uses under stock
timm, called the way your loop calls it (--loop), next to timm_sched_fix's
scheduler given the same calls, and count the steps that differ.

The schedule is built by the installed timm's own factory from the scheduler
flags of timm's train.py (same names, same defaults) or from the args.yaml that
train.py wrote into its output folder (--config; flags given here override it).
Nothing is trained: a throwaway SGD optimizer is stepped."""

EPILOG = """\
examples:
  # Lightning's documented override, warmup + cosine: which steps run late
  timm-sched-fix trace --epochs 20 --warmup-epochs 3 --warmup-lr 1e-4 --lr 0.1 \\
      --updates-per-epoch 50 --loop lightning
  # the schedule of a finished train.py run, as train.py stepped it
  timm-sched-fix trace --config output/train/RUN/args.yaml --updates-per-epoch 1251
  # every step of a per-update schedule into a file, and a plot
  timm-sched-fix trace --sched-on-updates --epochs 30 --updates-per-epoch 500 \\
      --out trace.csv --plot trace.png

exit status: 0 when the trace was printed (differing steps are not an error);
2 for settings that cannot run, with one line naming the flag."""


# -- the command line -------------------------------------------------------------------------------

def _flag(parser: argparse.ArgumentParser, name: str, help: str, **kwargs: Any) -> None:
    """A train.py flag; absent from the namespace unless given, so args.yaml values can fill the rest. Its help
    ends with train.py's default (defaults that are not a value, such as None, are said in ``help``)."""
    dest = name.lstrip("-").replace("-", "_")
    default = TRAIN_DEFAULTS[dest]
    if kwargs.get("action") == "store_true":
        help += " (train.py default: off)"
    else:
        kwargs["metavar"] = {int: "N", float: "X"}.get(kwargs.get("type"), "NAME")
        if default not in (None, ""):
            shown = " ".join(map(str, default)) if isinstance(default, list) else default
            help += f" (train.py default: {shown})"
    parser.add_argument(name, dest=dest, default=argparse.SUPPRESS, help=help, **kwargs)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace", help="print the LR of every optimizer step of a run, stock timm vs fixed",
        description=DESCRIPTION, epilog=EPILOG,
    )
    parser.add_argument("--config", metavar="ARGS_YAML", help="the args.yaml train.py wrote into its output folder; "
                        "flags given here override its values (needs PyYAML: timm >= 0.6 brings it, else "
                        "pip install 'timm-sched-fix[config]')")
    parser.add_argument("--updates-per-epoch", type=int, default=None, metavar="N",
                        help="optimizer steps per epoch (train.py: len(loader_train) // grad_accum_steps); "
                        "required with --sched-on-updates, otherwise 1")
    parser.add_argument("--loop", choices=sorted(LOOPS), default="timm",
                        help="how your loop calls the scheduler: " + "; ".join(f"{k} = {v.description}"
                                                                             for k, v in LOOPS.items()))
    parser.add_argument("--per-update", action="store_true",
                        help="one table row per optimizer step instead of one per epoch")
    parser.add_argument("--out", metavar="FILE.csv|FILE.json", help="also write every step to a CSV or JSON file")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw stock vs fixed into a PNG (needs pip install 'timm-sched-fix[plot]')")
    group = parser.add_argument_group("train.py scheduler flags")
    _flag(group, "--sched", "scheduler name")
    _flag(group, "--epochs", "epochs to train", type=int)
    _flag(group, "--lr", "learning rate (train.py default: derived from --lr-base, as train.py does on one "
          "process)", type=float)
    _flag(group, "--lr-base", "base learning rate for --lr-base-size", type=float)
    _flag(group, "--lr-base-size", "batch size of --lr-base", type=int)
    _flag(group, "--lr-base-scale", "linear or sqrt (train.py default: sqrt when --opt contains 'ada' or 'lamb', "
          "else linear)")
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
    _flag(group, "--lr-noise", "noise on (and off) points as fractions of the schedule (train.py default: no "
          "noise)", type=float, nargs="+")
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
    # mistakes in the order a user fixes them: the settings (args.yaml, then --sched, then the numbers), then
    # the run's length, then the output files
    merged = merged_settings(args)
    try:
        settings = checked_settings(merged)
    except UsageError:
        _refuse_schedule_the_installed_timm_lacks(merged["sched"])
        raise
    updates_per_epoch = args.updates_per_epoch
    if updates_per_epoch is None:
        if settings.sched_on_updates:
            raise UsageError("--sched-on-updates needs --updates-per-epoch N (train.py: len(loader_train) // "
                             "grad_accum_steps)")
        updates_per_epoch = 1
    if updates_per_epoch <= 0:
        raise UsageError(f"--updates-per-epoch must be positive, got {updates_per_epoch}")
    check_trace_length(settings.epochs, updates_per_epoch)
    for option, suffixes in (("out", (".csv", ".json")), ("plot", (".png",))):
        check_suffix(option, getattr(args, option), suffixes)
        check_output(option, getattr(args, option))
    if args.plot:
        from timm_sched_fix.trace.plot import require_matplotlib
        require_matplotlib(UsageError)
    from timm_sched_fix.trace.compute import compute_trace, summary_line, table_lines, write_out

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
        from timm_sched_fix.trace.plot import plot_trace
        plot_trace(trace, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _refuse_schedule_the_installed_timm_lacks(name: Any) -> None:
    """Next to another mistake, a ``--sched`` the installed timm does not build is reported first (this imports
    timm, so the names every release builds are let through unasked)."""
    if isinstance(name, str) and name not in (*SCHEDULES_OF_EVERY_RELEASE, "none"):
        from timm_sched_fix.trace.compute import refuse_unknown_schedule

        refuse_unknown_schedule(name)
