"""What ``import timm_sched_fix.auto`` and ``patch()`` cost at a script's start.

- import: ``python -X importtime -c "import timm_sched_fix.auto"`` in fresh interpreters; the cumulative
  time of that import (wrapt included, the interpreter's own start-up excluded), median of several runs.
  It also checks that neither torch nor timm was imported.
- ``patch()`` on an already imported timm, and ``unpatch()``, timed in fresh interpreters.

    python benchmarks/import_cost.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

PATCH_TIMING = """
import time, timm, timm.scheduler, timm_sched_fix
start = time.perf_counter(); timm_sched_fix.patch(); patched = time.perf_counter() - start
start = time.perf_counter(); timm_sched_fix.unpatch(); unpatched = time.perf_counter() - start
print(patched * 1e3, unpatched * 1e3)
"""


def import_milliseconds() -> float:
    code = "import sys, timm_sched_fix.auto; assert 'torch' not in sys.modules and 'timm' not in sys.modules"
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                            check=True)
    line = next(line for line in result.stderr.splitlines() if line.rstrip().endswith("| timm_sched_fix.auto"))
    return int(line.split("|")[1]) / 1e3


def patch_milliseconds() -> tuple[float, float]:
    result = subprocess.run([sys.executable, "-c", PATCH_TIMING], capture_output=True, text=True, check=True)
    patched, unpatched = map(float, result.stdout.split())
    return patched, unpatched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    imports = [import_milliseconds() for _ in range(args.runs)]
    patches = [patch_milliseconds() for _ in range(args.runs)]
    print(f"import timm_sched_fix.auto (torch, timm not imported): median {statistics.median(imports):.1f} ms "
          f"(min {min(imports):.1f}, {args.runs} runs)")
    print(f"patch() on an imported timm: median {statistics.median(p for p, _ in patches):.2f} ms; "
          f"unpatch(): median {statistics.median(u for _, u in patches):.2f} ms")


if __name__ == "__main__":
    main()
