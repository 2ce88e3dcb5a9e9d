"""What the start-up hook (timm_sched_fix.pth) adds to every Python process of an environment it is installed in.

(a) Switch off, exactly: the time ``site`` spends on the file, i.e. ``site.addpackage()`` of timm_sched_fix.pth
    (open, read, run its line) with ``TIMM_SCHED_FIX`` unset, in-process, mean over many calls; and that the
    line imported nothing.
(b) Whole processes: ``python -c pass`` in a throw-away venv with the hook installed, switch unset and
    ``TIMM_SCHED_FIX=1``, against the same venv without the file; median wall time of fresh interpreters,
    the three kinds interleaved so that machine noise hits them alike. Off, the difference is far below
    the noise of a process start (the figure is (a)); on, it is importing the package's start-up modules and
    wrapt (with typing, inspect, asyncio and importlib.metadata), and ``patch()`` registering its post-import
    hook: no torch, no timm. A training process imports most of those anyway: there the hook switched on costs
    what ``import timm_sched_fix.auto`` does, which benchmarks/import_cost.py measures.

The venv sees this checkout and the running environment's packages through a path entry, as an editable install
would, and gets the hook's text from the checkout (``PTH_TEXT`` of timm_sched_fix/runner/startup.py, which setup.py
writes into the wheel); modules load from their bytecode caches (a first, unmeasured run writes them).

    python benchmarks/startup_cost.py [--runs N]
    python benchmarks/startup_cost.py --smoke    # CI: one run of each, prints, asserts nothing about time
"""

from __future__ import annotations

import argparse
import os
import platform
import site
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wrapt

ROOT = Path(__file__).resolve().parent.parent
PTH = "timm_sched_fix.pth"


def site_cost(directory: Path, calls: int) -> float:
    """(a): µs per ``site.addpackage`` of the .pth with the switch off; refuses to measure if it imported anything."""
    environ = os.environ.pop("TIMM_SCHED_FIX", None)
    before = set(sys.modules)
    try:
        start = time.perf_counter()
        for _ in range(calls):
            site.addpackage(str(directory), PTH, set())
        elapsed = time.perf_counter() - start
    finally:
        if environ is not None:
            os.environ["TIMM_SCHED_FIX"] = environ
    if set(sys.modules) != before:
        sys.exit(f"the switched-off line imported {sorted(set(sys.modules) - before)}")
    return elapsed / calls * 1e6


def make_venv(directory: Path) -> tuple[Path, Path]:
    """A venv seeing this checkout and this environment's packages (a path entry processed before the hook's, as an
    editable install's is), with the hook; its python and its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    python = directory / "bin" / "python"
    site_packages = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                        check=True, capture_output=True, text=True).stdout.strip())
    (site_packages / "a_checkout.pth").write_text(f"{ROOT}\n{Path(wrapt.__file__).parent.parent}\n")
    # read by the venv's python, so that this process imports nothing of the package before (a)
    read = "from timm_sched_fix.runner import startup; print(startup.PTH_TEXT, end='')"
    text = subprocess.run([str(python), "-c", read], check=True, capture_output=True, text=True).stdout
    (site_packages / PTH).write_text(text)
    return python, site_packages


def process_ms(python: Path, switch: str | None) -> float:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("TIMM_SCHED_FIX", "PYTHON"))}
    if switch is not None:
        env["TIMM_SCHED_FIX"] = switch
    start = time.perf_counter()
    subprocess.run([str(python), "-c", "pass"], check=True, env=env)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=101, help="fresh interpreters per kind (median)")
    parser.add_argument("--smoke", action="store_true", help="one run of each: checks it runs, measures nothing")
    args = parser.parse_args()
    runs, calls = (1, 10) if args.smoke else (args.runs, 20_000)

    with tempfile.TemporaryDirectory() as work:
        python, site_packages = make_venv(Path(work) / "venv")
        added_off = site_cost(site_packages, calls)
        hooked, bare = site_packages / PTH, site_packages / f"{PTH}.off"
        process_ms(python, "1")  # writes the bytecode caches
        times: dict[str, list[float]] = {"no hook": [], "hook, switch off": [], "hook, TIMM_SCHED_FIX=1": []}
        for _ in range(runs):
            hooked.rename(bare)
            times["no hook"].append(process_ms(python, None))
            bare.rename(hooked)
            times["hook, switch off"].append(process_ms(python, None))
            times["hook, TIMM_SCHED_FIX=1"].append(process_ms(python, "1"))

    medians = {kind: statistics.median(values) for kind, values in times.items()}
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"start-up hook cost (median of {runs} fresh interpreters per kind)"
          + (" (SMOKE: numbers mean nothing)" if args.smoke else ""))
    print(f"{platform.machine()}, {os.cpu_count()} cores, load average {load}; Python {platform.python_version()}")
    print()
    print("| measurement | ms |")
    print("|---|---|")
    print(f"| (a) switch off: `site` reading and running timm_sched_fix.pth (mean of {calls} calls) "
          f"| {added_off / 1e3:.4f} |")
    for kind, value in medians.items():
        print(f"| (b) `python -c pass`, {kind} | {value:.1f} |")
    print(f"| (b) added, switch off | {medians['hook, switch off'] - medians['no hook']:+.1f} |")
    print(f"| (b) added, TIMM_SCHED_FIX=1 | {medians['hook, TIMM_SCHED_FIX=1'] - medians['no hook']:+.1f} |")


if __name__ == "__main__":
    main()
