"""What ``import timm_sched_fix.auto`` and ``patch()`` add to a training script's start-up.

Every figure comes from fresh interpreters, median over runs; the kinds of run are interleaved so that machine
noise hits all of them alike:

(a) ``python -X importtime -c "import timm_sched_fix.auto"``: the cumulative time of that import (wrapt included,
    the interpreter's own start-up excluded); each run also checks that neither torch nor timm was imported.
(b) the time added to a training script: ``import timm_sched_fix.auto; import timm.scheduler`` against
    ``import timm.scheduler`` alone, both under ``-X importtime``: the self-times of the modules only the first
    imports, i.e. those the script would not have imported otherwise (wrapt imports asyncio, importlib.metadata
    and inspect, but torch imports them anyway), each module's median summed (on a busy machine, some module of
    each run catches a pause, so the median of the per-run sums runs high). Two costs sit inside other modules' times
    and are shown apart: wrapt's post-import finder, which every later import passes (estimated: the number of
    modules imported after it times the cost of one call, measured in-process), and the instrumenting of
    timm's classes, which runs inside timm.scheduler's own import (as in (c)).
(c) ``patch()`` and ``unpatch()`` on an already imported timm.scheduler, and ``patch()`` split into importing
    the package's own modules it needs (compat, timing, ...) and instrumenting timm's classes; wall and CPU time
    (CPU time is what the call costs; wall time also holds the waits of a busy machine).

Modules load from their bytecode caches, as from an installed package: the interpreters run without
``PYTHONDONTWRITEBYTECODE``, and a first, unmeasured one writes the package's caches where they are missing
(else each run would time compiling the package's source).

    python benchmarks/import_cost.py [--runs N]
    python benchmarks/import_cost.py --smoke    # CI: one run of each, prints, asserts nothing about time
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys

#: The package's modules that the runs import; a warm-up run imports them to write their bytecode caches.
WARM_UP = "import timm_sched_fix.auto, timm.scheduler, timm_sched_fix._compat, timm_sched_fix._timing"
ENVIRONMENT = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}

#: (a), and the cost of one call of wrapt's post-import finder for a module it has no hook for (printed, in µs).
AUTO_ALONE = """
import sys, time, timm_sched_fix.auto
leaked = sorted({"torch", "timm"} & set(sys.modules))
if leaked:
    sys.exit(f"import timm_sched_fix.auto imported {leaked}")
finder = sys.meta_path[0]
if type(finder).__module__ != "wrapt.importer":
    sys.exit(f"expected wrapt's post-import finder first in sys.meta_path: {sys.meta_path}")
calls = 100_000
start = time.perf_counter()
for _ in range(calls):
    finder.find_spec("not_a_module")
print((time.perf_counter() - start) / calls * 1e6)
"""
WITH_FIX = "import timm_sched_fix.auto; import timm.scheduler"
WITHOUT_FIX = "import timm.scheduler"

TIMED = """
import sys, time

def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3
"""
#: (c): patch() then unpatch(); prints their wall and CPU ms and the package modules patch() imported.
PATCH_WHOLE = TIMED + """
import timm.scheduler, timm_sched_fix
patch, unpatch = timm_sched_fix.patch, timm_sched_fix.unpatch  # the package loads them (and wrapt) on first use
before = set(sys.modules)
patched, unpatched = timed(patch), timed(unpatch)
print(*patched, *unpatched, *sorted(name for name in set(sys.modules) - before if name.startswith("timm_sched_fix")))
"""
#: (c) split: importing the modules that patch() imports (given in argv), then patch().
PATCH_SPLIT = TIMED + """
import importlib, timm.scheduler, timm_sched_fix
patch = timm_sched_fix.patch
imported = timed(lambda: [importlib.import_module(name) for name in sys.argv[1:]])
print(*imported, *timed(patch))
"""


def run_python(arguments: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *arguments], check=False, capture_output=True, text=True,
                            env=ENVIRONMENT)
    if result.returncode != 0:
        sys.exit(f"python {' '.join(arguments)[:60]}... failed:\n{result.stderr[-3000:]}")
    return result


def parse_import_times(stderr: str) -> dict[str, tuple[int, int]]:
    """``-X importtime`` output: module -> (self, cumulative) in microseconds."""
    times = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            own, cumulative, name = line.removeprefix("import time:").split("|")
            times[name.strip()] = (int(own), int(cumulative))
    return times


def import_times(code: str) -> dict[str, tuple[int, int]]:
    return parse_import_times(run_python(["-X", "importtime", "-c", code]).stderr)


def machine() -> str:
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("torch", "timm", "wrapt"))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return (f"{platform.machine()}, {os.cpu_count()} cores, load average {load}; "
            f"Python {platform.python_version()}, {versions}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="fresh interpreters per measurement (median)")
    parser.add_argument("--smoke", action="store_true", help="one run of each: checks it runs, measures nothing")
    args = parser.parse_args()
    runs = 1 if args.smoke else args.runs

    run_python(["-c", WARM_UP])
    rows: dict[str, list[float]] = {}
    added: list[dict[str, int]] = []  # per run: module -> self-time (µs) of the modules only the fix imports
    for _ in range(runs):
        alone = run_python(["-X", "importtime", "-c", AUTO_ALONE])
        with_fix, without_fix = import_times(WITH_FIX), import_times(WITHOUT_FIX)
        added.append({name: own for name, (own, _) in with_fix.items() if name not in without_fix})
        whole = run_python(["-c", PATCH_WHOLE]).stdout.split()
        patch_modules = whole[4:]
        split = run_python(["-c", PATCH_SPLIT, *patch_modules]).stdout.split()

        imported_after_finder = len(with_fix) - len(parse_import_times(alone.stderr))
        measured = {
            "a": parse_import_times(alone.stderr)["timm_sched_fix.auto"][1] / 1e3,
            "finder": imported_after_finder * float(alone.stdout) / 1e3,
            "patch": float(whole[0]), "patch_cpu": float(whole[1]),
            "unpatch": float(whole[2]), "unpatch_cpu": float(whole[3]),
            "imports": float(split[0]), "imports_cpu": float(split[1]),
            "instrument": float(split[2]), "instrument_cpu": float(split[3]),
        }
        for key, value in measured.items():
            rows.setdefault(key, []).append(value)

    def ms(key: str, digits: int = 2) -> str:
        return f"{statistics.median(rows[key]):.{digits}f}"

    module_medians = {name: statistics.median(run.get(name, 0) for run in added) / 1e3
                      for name in {name for run in added for name in run}}
    names = sorted(module_medians, key=module_medians.__getitem__, reverse=True)
    modules = sum(module_medians.values())
    total = modules + statistics.median(rows["finder"]) + statistics.median(rows["instrument"])
    print(f"import and patch() cost, median of {runs} fresh interpreters"
          + (" (SMOKE: numbers mean nothing)" if args.smoke else ""))
    print(machine())
    print()
    print("| measurement | wall ms | CPU ms |")
    print("|---|---|---|")
    print(f"| (a) `import timm_sched_fix.auto` alone, cumulative (torch and timm not imported) | {ms('a', 1)} | |")
    print(f"| (b) added to `import timm.scheduler`: self-times of the {len(names)} modules only the fix imports "
          f"| {modules:.2f} | |")
    print(f"| (b) wrapt's post-import finder, passed by the {imported_after_finder} later imports (estimate) "
          f"| {ms('finder')} | |")
    print(f"| (b) total added: modules + finder + instrumenting (c) | {total:.2f} | |")
    print(f"| (c) `patch()` on an imported timm.scheduler | {ms('patch')} | {ms('patch_cpu')} |")
    print(f"| (c) of which importing {', '.join(patch_modules) or 'nothing'} | {ms('imports')} | {ms('imports_cpu')} |")
    print(f"| (c) of which instrumenting timm's classes | {ms('instrument')} | {ms('instrument_cpu')} |")
    print(f"| (c) `unpatch()` | {ms('unpatch')} | {ms('unpatch_cpu')} |")
    print()
    print("(b) the modules only the fix imports, biggest first (median self-time, ms):")
    for name in names[:10]:
        print(f"  {module_medians[name]:6.2f}  {name}")


if __name__ == "__main__":
    main()
