"""``timm-sched-fix check``: the LR the first optimizer step runs with, stock vs fixed vs the schedule.

Every row builds the installed timm's scheduler class on a real SGD optimizer and records, with an
optimizer step pre-hook, the LR the first ``optimizer.step()`` runs with: once with stock timm, once
with the drop-in class of this package; v(t) comes from ``compat.stock_writer`` (see ``first_step``).
torch and timm are imported when the command runs, not when the parser is built.
"""

from __future__ import annotations

import argparse
import json
import warnings
from typing import Any

DESCRIPTION = """\
Show, for every scheduler class of the installed timm, the learning rate the
first optimizer step runs with: under stock timm, under the fix, and the value
the schedule itself defines for that step, in representative configurations
(plain, warmup, LR noise from the start, lr_scale param groups, a multistep
milestone at 1, a resume built with initialize=False). Below the table: the
compatibility fixes that apply to this timm and torch.

Exit status 0 when the fixed column equals the schedule's value in every row
(stock timm may be wrong there, or fail), 1 otherwise."""

EPILOG = """\
examples:
  timm-sched-fix check
  timm-sched-fix check --format json > first-steps.json"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check", help="show the LR the first optimizer step gets from each timm scheduler class, stock vs fixed",
        description=DESCRIPTION, epilog=EPILOG,
    )
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="a table for people or JSON for programs")


def run(args: argparse.Namespace) -> int:
    """Print the table (or JSON); exit code 0 when the fixed column equals v(t) in every row, whether or not
    the stock column could run (stock PlateauLRScheduler of timm <= 1.0.15 cannot be built on torch 2.14)."""
    import timm
    import torch

    from timm_sched_fix import _compat as compat
    from timm_sched_fix.check.first_step import BASE_LR, check_rows, format_table

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PlateauLRScheduler is deprecated", FutureWarning)
        rows = check_rows()
    quirks = compat.active_quirks()
    ok = all(row.fixed_right for row in rows)
    if args.format == "json":
        print(json.dumps({
            "timm": compat.TIMM_VERSION,
            "torch": torch.__version__,
            "ok": ok,
            "rows": [vars(row) for row in rows],
            "compat_fixes": [{"name": q.name, "versions": q.versions, "description": q.description} for q in quirks],
        }, indent=2))
        return 0 if ok else 1
    print(f"timm {timm.__version__}, torch {torch.__version__}: the LR the first optimizer step runs with "
          f"(base LR {BASE_LR}; lr_scale groups show every group; t = the index the step should run with)")
    print()
    for line in format_table(rows):
        print(line)
    for row in rows:
        if row.error:
            print(f"{row.scheduler} [{row.config}]: {row.error}")
    print()
    print("compat fixes applied on this timm/torch:" if quirks else "compat fixes applied on this timm/torch: none")
    for quirk in quirks:
        print(f"  {quirk.name} ({quirk.versions}): {quirk.description}")
    print()
    wrong = sum(1 for row in rows if row.verdict == "stock wrong, fixed ok")
    fails = sum(1 for row in rows if row.verdict == "stock fails, fixed ok")
    if ok:
        print(f"fixed: right in all {len(rows)} rows; stock timm is wrong in {wrong} of them"
              + (f" and fails in {fails}" if fails else ""))
    else:
        bad = sum(1 for row in rows if not row.fixed_right)
        print(f"fixed: WRONG or failing in {bad} of {len(rows)} rows")
    return 0 if ok else 1
