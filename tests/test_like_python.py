"""``run`` and ``audit`` run their target as ``python target args`` does: the same ``sys.argv`` (a ``--`` kept),
``__name__``, ``__file__``, ``sys.path[0]`` and ``__spec__``, the same exit code, and for targets Python cannot run
Python's own one-line message. Every row runs the same command line under plain ``python`` and under the runner,
in subprocesses, and compares what the script saw and how the process ended."""

import json
import os
import signal
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.release_independent("how a script is run: no timm scheduler involved")

#: Prints what the script sees, then ends as SHOW_END says.
SHOW = """\
import json, os, sys
print("SAW", json.dumps({"name": __name__, "file": __file__, "argv": sys.argv, "path0": sys.path[0],
                         "spec": getattr(__spec__, "name", None), "main": sys.modules["__main__"].__dict__ is globals()}))
sys.stdout.flush()
end = os.environ.get("SHOW_END", "")
if end == "exit3":
    sys.exit(3)
if end == "exit-text":
    sys.exit("stopped: a message")
if end == "raise":
    raise KeyError("from the script")
if end == "os_exit":
    os._exit(4)
if end == "sigterm":
    os.kill(os.getpid(), 15)
"""

#: A script that changes directory, then reads a file next to itself and starts a spawn worker that re-imports it.
CHDIR_SPAWN = """\
import multiprocessing, os, sys

def work(queue):
    queue.put("worker ran")

if __name__ == "__main__":
    os.chdir(sys.argv[1])
    with open(os.path.join(os.path.dirname(__file__), "data.txt")) as stream:
        print("SAW", stream.read().strip())
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=work, args=(queue,))
    process.start()
    print("SAW", queue.get(timeout=60))
    process.join()
    sys.exit(process.exitcode)
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Every kind of target Python runs (or refuses), in one folder."""
    root = tmp_path_factory.mktemp("targets")
    (root / "show.py").write_text(SHOW)
    (root / "sub").mkdir()
    (root / "sub" / "show.py").write_text(SHOW)
    (root / "link.py").symlink_to(root / "sub" / "show.py")
    (root / "withmain").mkdir()
    (root / "withmain" / "__main__.py").write_text(SHOW)
    (root / "nomain").mkdir()
    for name, main in (("pkgmain", True), ("pkgnomain", False)):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text("")
        if main:
            (root / name / "__main__.py").write_text(SHOW)
    (root / "pkgmain" / "mod.py").write_text(SHOW)
    with zipfile.ZipFile(root / "app.zip", "w") as archive:
        archive.writestr("__main__.py", SHOW)
    with zipfile.ZipFile(root / "nomain.zip", "w") as archive:
        archive.writestr("other.py", SHOW)
    (root / "chdir_spawn.py").write_text(CHDIR_SPAWN)
    (root / "data.txt").write_text("the file next to the script")
    (root / "elsewhere").mkdir()
    return root


def python(folder, command, end=""):
    env = dict(os.environ, SHOW_END=end)
    return subprocess.run([sys.executable, *command], cwd=folder, capture_output=True, text=True, env=env,
                          check=False, timeout=120)


def seen(result):
    """What the script printed, the exit code, and the last line of stderr without the program's name."""
    saw = [line for line in result.stdout.splitlines() if line.startswith("SAW ")]
    last = (result.stderr.strip().splitlines() or [""])[-1]
    for prefix in (f"{sys.executable}: ", "python: ", "timm-sched-fix run: ", "timm-sched-fix audit: "):
        last = last.removeprefix(prefix)
    return saw, last


TARGETS = [
    (["show.py"], ""), (["./show.py"], ""), (["sub/show.py"], ""), (["link.py"], ""), (["withmain"], ""),
    (["app.zip"], ""), (["-m", "show"], ""), (["-m", "pkgmain"], ""), (["-m", "pkgmain.mod"], ""),
    (["nomain"], ""), (["nomain.zip"], ""), (["missing.py"], ""), (["-m", "missing"], ""),
    (["-m", "pkgnomain"], ""), (["-m", "missing.child"], ""), (["-m", "pkgmain.missing"], ""), (["-m", ".show"], ""),
    (["chdir_spawn.py", "elsewhere"], ""),
    (["show.py"], "exit3"), (["show.py"], "exit-text"), (["show.py"], "raise"), (["show.py"], "os_exit"),
    (["show.py"], "sigterm"),
]
ARGV_SHAPES = [["--", "--tag"], ["x", "--", "y"], ["-m", "--report", "-h"], ["--", "--"]]


@pytest.mark.parametrize(("target", "end"), TARGETS, ids=lambda value: " ".join(value) if isinstance(value, list)
                         else value or "-")
def test_run_is_python(folder, target, end):
    plain, runner = python(folder, target, end), python(folder, ["-m", "timm_sched_fix", "run", *target], end)
    assert runner.returncode == plain.returncode, runner.stderr
    assert seen(runner) == seen(plain)
    if end == "sigterm":
        assert runner.returncode == -signal.SIGTERM


@pytest.mark.parametrize("args", ARGV_SHAPES, ids=" ".join)
@pytest.mark.parametrize("target", [["show.py"], ["-m", "pkgmain"], ["--", "show.py"]], ids=" ".join)
def test_run_keeps_the_scripts_argv(folder, target, args):
    plain = python(folder, [*target[target[0] == "--":], *args])  # one `--` before the target only ends run's options
    runner = python(folder, ["-m", "timm_sched_fix", "run", "--on-lag", "fix", *target, *args])
    assert runner.returncode == plain.returncode == 0, runner.stderr
    assert seen(runner) == seen(plain)
    assert json.loads(seen(runner)[0][0][4:])["argv"][1:] == args


@pytest.mark.parametrize("target", [["show.py", "--", "--tag"], ["nomain"], ["chdir_spawn.py", "elsewhere"]],
                         ids=" ".join)  # each audit imports torch: the runner's table above covers the rest
def test_audit_runs_the_target_as_python_does(folder, target):
    plain, audit = python(folder, target), python(folder, ["-m", "timm_sched_fix", "audit", *target])
    assert seen(audit) == seen(plain)
    if plain.returncode:  # a target Python cannot run: its message and exit code
        assert audit.returncode == plain.returncode
    else:  # no timm scheduler built: the audit says it checked nothing
        assert "built no timm scheduler" in audit.stdout
