"""Per-optimizer-step cost of two checkouts of timm_sched_fix, side by side in one run (before and after a change).

Runs this checkout's ``benchmarks/overhead.py --json`` once per checkout per round, each in a fresh process with
``PYTHONPATH`` set to that checkout (so ``import timm_sched_fix`` is the checkout's package and the measurement code
is the same for both), alternating which checkout goes first from round to round. Each process measures every
contender against stock timm in that same process (``overhead.py``'s per-round ratios), so a ratio compares code
measured side by side; the table gives, per contender, the median over the rounds of each checkout's ratio to stock
timm, and the median of the per-round quotient after / before.

    python benchmarks/compare_checkouts.py --against /path/to/other/checkout        # about 5 minutes
    python benchmarks/compare_checkouts.py --smoke       # CI: this checkout against itself, briefly; asserts nothing
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
THIS_CHECKOUT = HERE.parent


def run_overhead(checkout: Path, inner_rounds: int, smoke: bool) -> dict[tuple[int, bool, str], float]:
    """One fresh process of overhead.py on ``checkout``'s package: (groups, noise, contender) -> ratio to stock."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    command = [sys.executable, str(HERE / "overhead.py"), "--json", "--rounds", str(inner_rounds)]
    output = subprocess.run(command + ["--smoke"] * smoke, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(output.splitlines()[-1])
    package = Path(result["package"]).resolve()
    if not package.is_relative_to(checkout.resolve()):
        raise SystemExit(f"{checkout}: the subprocess imported timm_sched_fix from {package}, not from the checkout")
    return {(groups, noise, name): to_stock for groups, noise, name, (_, to_stock, _) in result["rows"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="the other checkout (the 'before'; its repository root)")
    parser.add_argument("--rounds", type=int, default=6, help="processes per checkout, alternating (default 6)")
    parser.add_argument("--inner-rounds", type=int, default=11, help="overhead.py's rounds per process (default 11)")
    parser.add_argument("--smoke", action="store_true", help="brief; without --against, this checkout twice")
    args = parser.parse_args()
    if args.against is None and not args.smoke:
        parser.error("--against PATH is required (the checkout to compare this one with)")
    before = (args.against or THIS_CHECKOUT).resolve()
    if not (before / "timm_sched_fix" / "__init__.py").is_file():
        parser.error(f"--against {before}: no timm_sched_fix package there (give the repository root)")
    rounds, inner = (1, 2) if args.smoke else (args.rounds, args.inner_rounds)
    checkouts = {"before": before, "after": THIS_CHECKOUT}
    samples: dict[str, list[dict[tuple[int, bool, str], float]]] = {"before": [], "after": []}
    for round_ in range(rounds):
        order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
        for which in order:
            samples[which].append(run_overhead(checkouts[which], inner, args.smoke))
        print(f"round {round_ + 1}/{rounds} done", file=sys.stderr)
    print(f"before: {before}\nafter:  {THIS_CHECKOUT}\n{rounds} rounds of one process each, alternating; "
          f"ratios to stock timm in the same process" + (" (SMOKE: numbers mean nothing)" if args.smoke else ""))
    header = (f"| {'per optimizer step':<28} | {'groups':>6} | {'noise':>5} | {'before × stock':>14} "
              f"| {'after × stock':>13} | {'after / before':>14} |")
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    for key in samples["after"][0]:
        groups, noise, name = key
        old = [sample[key] for sample in samples["before"]]
        new = [sample[key] for sample in samples["after"]]
        quotient = statistics.median(n / o for n, o in zip(new, old))
        print(f"| {name:<28} | {groups:>6} | {noise!s:>5} | {statistics.median(old):>14.2f} "
              f"| {statistics.median(new):>13.2f} | {quotient:>14.3f} |")


if __name__ == "__main__":
    main()
