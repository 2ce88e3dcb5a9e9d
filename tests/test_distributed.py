"""Two processes under torch.distributed (gloo, CPU, 127.0.0.1) produce bit-identical LR traces, noise
included, for every scheduler class x {epoch, update} x adapter."""

import json
import subprocess
import sys

import pytest
import torch.distributed

from support import HELPERS, free_port, worker_environment

WORLD_SIZE = 2


@pytest.mark.release_independent("the ranks agreeing is torch.distributed (gloo) and seeded noise, which "
                                "every release seeds the same way; each schedule itself is checked on every release "
                                "by test_timing_matrix.py")
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_ranks_run_bit_identical_lr_traces(tmp_path):
    port = str(free_port())
    env = worker_environment()
    ranks = [subprocess.Popen([sys.executable, str(HELPERS / "distributed_worker.py"), str(rank), str(WORLD_SIZE), port,
                               str(tmp_path / f"rank{rank}.json")], env=env, stderr=subprocess.PIPE, text=True)
             for rank in range(WORLD_SIZE)]
    try:
        errors = [rank.communicate(timeout=300)[1] for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(error[-3000:] for error in errors)
    traces = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert traces[0].keys() == traces[1].keys()
    differing = [case for case in traces[0] if traces[0][case] != traces[1][case]]
    steps = sum(len(trace) for trace in traces[0].values())
    print(f"\ndistributed: {len(traces[0])} cases, {steps} steps per rank, {len(differing)} cases differing")
    assert not differing, differing
    moving = [case for case, trace in traces[0].items() if len(set(map(tuple, trace))) > 2]
    assert len(moving) == len(traces[0]), "every schedule must move, or equal traces would prove nothing"
