"""Crash and resume: a training process checkpoints (model, optimizer, scheduler) every few steps, is killed
with SIGKILL at a random step, and a fresh process resumes from the last checkpoint. From the resume point
on, its per-step LR trace must equal the uninterrupted run's, for every scheduler class x {epoch, update} x
{"end", "begin"} x {patch, wrap, drop-in}, and for resumes with ``initialize=False`` and with the scheduler
built before ``optimizer.load_state_dict``. Two interpreter launches in all (see resume_worker.py)."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import resume_worker
from support import ADAPTERS, HELPERS, installed_classes, worker_environment

#: (sched_first, initialize): timm train.py's order (optimizer loaded, then the scheduler built), the same
#: with initialize=False, and the scheduler built before optimizer.load_state_dict.
RESUME_ORDERS = {"after": (False, True), "after-noinit": (False, False), "before": (True, True)}


def cases(seed: int) -> list[dict]:
    rng = random.Random(seed)
    found = []
    for name in installed_classes():
        for on_epochs in (True, False):
            if name == "PlateauLRScheduler" and not on_epochs:
                continue
            for convention in ("end", "begin"):
                for adapter in ADAPTERS + ("stock",):
                    for order, (sched_first, initialize) in RESUME_ORDERS.items():
                        drives = ["explicit", "counting"] + ([] if on_epochs else ["auto"])
                        if adapter == "stock":
                            drives = ["explicit"]  # stock timm has only calls with an index
                        every = rng.choice([2, 3])
                        unit = "epoch" if on_epochs else "update"
                        found.append(dict(
                            id=f"{name}-{unit}-{convention}-{adapter}-{order}", name=name, on_epochs=on_epochs,
                            convention=convention, adapter=adapter, sched_first=sched_first,
                            initialize=initialize, drive=rng.choice(drives), every=every,
                            kill_step=rng.randint(every, resume_worker.TOTAL_STEPS - 1)))
    return found


def run_worker(mode: str, cases_path: Path, out: Path) -> None:
    result = subprocess.run([sys.executable, str(HELPERS / "resume_worker.py"), mode, str(cases_path), str(out)],
                            capture_output=True, text=True, env=worker_environment(), timeout=600, check=False)
    assert result.returncode == 0, f"{mode} worker failed:\n{result.stderr[-4000:]}"


def test_killed_and_resumed_runs_continue_with_the_uninterrupted_lrs(tmp_path):
    seed = int(os.environ.get("TIMM_SCHED_FIX_RESUME_SEED", random.randrange(2**32)))
    all_cases = cases(seed)
    cases_path = tmp_path / "cases.json"
    cases_path.write_text(json.dumps(all_cases))
    for mode in ("crash", "resume"):
        run_worker(mode, cases_path, tmp_path)
    differing, compared, stock_differing = [], 0, 0
    for case in all_cases:
        reference = json.loads((tmp_path / f"{case['id']}.reference.json").read_text())
        resumed = json.loads((tmp_path / f"{case['id']}.resumed.json").read_text())
        start = resumed["resumed_at"]
        assert 0 < start <= case["kill_step"], case
        expected = reference[start:]
        assert len(resumed["trace"]) == len(expected), case["id"]
        if case["adapter"] == "stock":
            stock_differing += sum(got != want for got, want in zip(resumed["trace"], expected))
            continue
        compared += len(expected)
        for k, (got, want) in enumerate(zip(resumed["trace"], expected), start=start):
            if got != want:
                differing.append(f"{case['id']} ({case['drive']}): step {k} ran with {got}, uninterrupted {want}")
    fixed_cases = sum(case["adapter"] != "stock" for case in all_cases)
    print(f"\ncrash/resume (seed {seed}): {fixed_cases} fixed cases, {compared} resumed steps compared, "
          f"{len(differing)} differing; stock timm control: {stock_differing} differing steps")
    assert stock_differing, "stock timm resumed every case exactly: the harness could not see a wrong LR"
    assert not differing, f"seed {seed}:\n" + "\n".join(differing[:20])
