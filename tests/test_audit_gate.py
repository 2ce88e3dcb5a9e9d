"""``timm-sched-fix audit`` as a CI gate, run as the command line runs it (a watcher process around the audited
one): a script that ends without the audit's report (``os._exit``, a fatal signal, SIGTERM or SIGINT from outside,
a process it started ending so) exits non-zero with a line saying the audit could not finish and why, never 0; no
temporary folder of the audit outlives the command. Output paths are checked before the script runs:
tests/test_audit.py (usage errors)."""

import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.release_independent("the audit's process handling: the schedule does not matter")

#: Stock timm gets step 0 wrong here (no pre-advance); the fix gets every step right. Ends as its argument says.
TRAIN = """\
import os, signal, sys, time, torch
from timm.scheduler import TanhLRScheduler
p = torch.nn.Parameter(torch.zeros(1)); o = torch.optim.SGD([p], lr=0.1); s = TanhLRScheduler(o, t_initial=4)
for e in range(4):
    p.grad = torch.ones(1); o.step(); s.step(e + 1)
end = sys.argv[1] if len(sys.argv) > 1 else ""
if end == "os_exit":
    os._exit(0)
if end == "segv":
    os.kill(os.getpid(), signal.SIGSEGV)
if end == "wait":
    print("READY", flush=True)
    time.sleep(60)
"""
#: Starts TRAIN in a new Python process, which the audit follows through the start-up hook.
PARENT = """\
import subprocess, sys
sys.exit(subprocess.run([sys.executable, "train.py", *sys.argv[1:]]).returncode)
"""


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "parent.py").write_text(PARENT)
    (tmp_path / "tmp").mkdir()
    return tmp_path


def command(*args):
    return [sys.executable, "-m", "timm_sched_fix", "audit", *args]


def environment(folder):
    return dict(os.environ, TMPDIR=str(folder / "tmp"))


def leftovers(folder):
    return sorted(path.name for path in (folder / "tmp").iterdir() if path.name.startswith("timm-sched-fix-audit"))


def audit(folder, *args):
    return subprocess.run(command(*args), cwd=folder, env=environment(folder), capture_output=True, text=True,
                          check=False, timeout=300)


def test_a_script_that_ends_normally_gets_its_verdict(folder):
    result = audit(folder, "train.py")
    assert result.returncode == 1, result.stderr  # stock timm: step 0 wrong
    assert "1 of 4 optimizer steps ran with an LR other than the schedule's" in result.stdout
    assert "could not finish" not in result.stderr
    assert leftovers(folder) == []


@pytest.mark.parametrize(("end", "code", "why"), [
    ("os_exit", 1, "the script called os._exit(0) at train.py:8"),
    ("segv", 128 + signal.SIGSEGV, "the process was ended by SIGSEGV"),
])
def test_a_script_that_skips_the_report_fails_the_gate(folder, end, code, why):
    result = audit(folder, "--fix", "train.py", end)  # every step right: only the missing verdict fails it
    assert result.returncode == code, result.stderr
    assert f"the audit could not finish: {why}" in result.stderr
    assert "every optimizer step ran" not in result.stdout
    assert leftovers(folder) == []


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_audit_ends_the_script_and_leaves_no_folder(folder, sent):
    process = subprocess.Popen(command("train.py", "wait"), cwd=folder, env=environment(folder),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "READY"
        assert len(leftovers(folder)) == 1  # the audit's folder, while it runs
        process.send_signal(sent)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + sent
    assert f"the audit could not finish: the process was ended by {signal.Signals(sent).name}" in stderr
    assert leftovers(folder) == []


def test_a_started_process_that_skips_its_report_fails_the_gate(folder):
    result = audit(folder, "--fix", "parent.py", "os_exit")
    assert result.returncode == 1, result.stderr
    assert "the audit could not finish: process" in result.stdout
    assert "ended without its report" in result.stdout
    assert leftovers(folder) == []
