"""Every process of a multi-process run is fixed: torchrun with the runner outside and inside it, ranks started
by ``torch.multiprocessing.spawn`` or ``subprocess`` from a script under the runner, and ``TIMM_SCHED_FIX=1``
in front of torchrun with a script that never imports the fix. Real processes, 2 gloo ranks on 127.0.0.1, the
package installed from its wheel into a fresh venv (tests/helpers/installed.py); each rank records the LR every
optimizer step ran with (tests/helpers/launch_worker.py), compared with v(t) and with stock timm's."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import torch
import torch.distributed
from timm.scheduler import TanhLRScheduler

from installed import environment
from launch_worker import BATCHES, EPOCHS, WORLD_SIZE
from support import HELPERS, free_port

WORKER = str(HELPERS / "launch_worker.py")
RUN = ["-m", "timm_sched_fix", "run"]

pytestmark = [
    pytest.mark.release_independent("which processes the hook reaches is the launchers' and the interpreter's "
                                    "start-up; what a fixed scheduler does is checked on every release elsewhere"),
    pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                       reason="this torch build has no gloo backend"),
]


def traces(steps_ran_with: str) -> list[str]:
    """The LR of each optimizer step of launch_worker.py's loop: under stock timm (run here, unpatched), or as
    the schedule defines it (v(e) for every step of epoch e, from a fresh stock scheduler's ``step(e)``)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = TanhLRScheduler(optimizer, t_initial=10)
    lrs = []
    for epoch in range(EPOCHS):
        if steps_ran_with == "v(t)":
            scheduler.step(epoch)
        lrs += [float(optimizer.param_groups[0]["lr"]).hex()] * BATCHES
        if steps_ran_with == "stock":
            scheduler.step(epoch + 1)
    return lrs


def launches(port: int, out: str) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Each way to start the ranks: the environment it adds, and the python command line."""
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", str(WORLD_SIZE), "--master_addr", "127.0.0.1",
                "--master_port", str(port)]
    return {
        "run outside torchrun": ({}, [*RUN, "--report", *torchrun, WORKER, "torchrun", out]),
        "run inside torchrun": ({}, [*torchrun, *RUN, WORKER, "torchrun", out]),
        "TIMM_SCHED_FIX=1 torchrun": ({"TIMM_SCHED_FIX": "1"}, [*torchrun, WORKER, "torchrun", out]),
        "run, torch.multiprocessing.spawn": ({}, [*RUN, WORKER, "spawn", out, str(port)]),
        "run, subprocess": ({}, [*RUN, WORKER, "subprocess", out, str(port)]),
        # today's behaviour, on request: only the runner's own process is patched, and the ranks run stock
        "run --no-children outside torchrun": ({}, [*RUN, "--no-children", *torchrun, WORKER, "torchrun", out]),
    }


@pytest.mark.parametrize("launch", list(launches(0, "")))
def test_every_rank_runs_every_step_with_the_schedules_lr(launch, installed_python, tmp_path):
    schedule, stock = traces("v(t)"), traces("stock")
    assert schedule[0] != stock[0], "v(0) must differ from stock's first LR, or a stock rank would pass"
    want = stock if "--no-children" in launch else schedule
    variables, arguments = launches(free_port(), str(tmp_path))[launch]
    result = subprocess.run([str(installed_python), *arguments], cwd=tmp_path, env=environment(**variables),
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    fixed = [rank["rank"] for rank in ranks if rank["lrs"] == schedule]
    print(f"\n{launch}: ranks fixed {len(fixed)}/{WORLD_SIZE}")
    assert [rank["lrs"] for rank in ranks] == [want] * WORLD_SIZE, result.stderr[-4000:]
    if "--report" in arguments:
        reports = re.findall(r"timm-sched-fix report, rank (\d) \(pid (\d+)\): patch\(\) fixed 1 scheduler\n  (.*)",
                             result.stderr)
        print("\n".join(f"rank {rank} (pid {pid}): {line}" for rank, pid, line in reports))
        assert sorted((int(rank), int(pid)) for rank, pid, _ in reports) == [(r["rank"], r["pid"]) for r in ranks]
        first, stock_first = float.fromhex(schedule[0]), float.fromhex(stock[0])
        assert all(line.startswith("TanhLRScheduler (per epoch, convention='end', auto=False, on_lag='warn') on SGD: "
                                   f"first optimizer step ran with lr {first!r}; stock timm: {stock_first!r} "
                                   "(differs in group 0)") for *_, line in reports), reports
