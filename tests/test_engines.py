"""DeepSpeed on CPU (one rank, gloo): every parameter update of a DeepSpeed engine runs with v(k) and is counted
once, for ZeRO stages 0-3 in fp32 and bf16, with the scheduler on the optimizer ``deepspeed.initialize`` returns
(a wrapper that is no torch optimizer), on the torch optimizer before ``initialize`` (bf16 without ZeRO makes a
zero-gradient set-up ``step()`` there, which must not move an auto-mode schedule), or passed as
``lr_scheduler=`` through ``TorchScheduler``; under patch(), wrap() and the drop-ins, explicit and auto mode.

All cases run in one subprocess (tests/helpers/engine_worker.py). Marked ``engines``: the ``engines`` nox session
runs them with DeepSpeed installed (the ``engines`` extra), against the newest timm; the version matrix leaves them
out.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

import engine_worker
from support import HELPERS, worker_environment

pytestmark = pytest.mark.engines

CASES = [engine_worker.case_id(stage, bf16, *case) for stage, bf16 in engine_worker.CONFIGS
         for case in engine_worker.CASES]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install -e '.[engines]')")
    out = tmp_path_factory.mktemp("engines") / "results.json"
    env = {**worker_environment(), "DS_ACCELERATOR": "cpu", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    run = subprocess.run([sys.executable, str(HELPERS / "engine_worker.py"), str(out)], env=env, capture_output=True,
                         text=True, timeout=1200, check=False)
    assert run.returncode == 0, run.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", CASES)
def test_every_engine_update_runs_with_its_value_and_is_counted_once(results, case):
    result = results["cases"][case]
    assert result["error"] is None, result["error"]
    expected = results["expected"]
    assert result["counted"] == result["performed"] == len(expected), "one count per parameter update"
    assert len(result["ran"]) == len(expected)
    for k, (ran, want) in enumerate(zip(result["ran"], expected)):
        assert ran == pytest.approx(want, rel=1e-12, abs=0), f"update {k} ran with {ran}, v({k}) is {want}"


def test_the_cases_cover_the_stacks(results):
    """ZeRO-1/2/3 hand back a DeepSpeed wrapper (no torch optimizer), bf16 without ZeRO a wrapper too."""
    wrappers = {case.split("-")[0] + "-" + case.split("-")[1]: result.get("wrapper")
                for case, result in results["cases"].items()}
    assert wrappers["zero0-fp32"] == "SGD" and wrappers["zero0-bf16"] == "FP16_UnfusedOptimizer"
    assert {wrappers[f"zero{stage}-fp32"] for stage in (1, 2)} == {"DeepSpeedZeroOptimizer"}
    assert wrappers["zero3-bf16"] == "DeepSpeedZeroOptimizer_Stage3"
    assert os.environ.get("DS_ACCELERATOR") in (None, "cpu")
