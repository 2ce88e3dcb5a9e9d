"""The start-up hook (timm_sched_fix.pth, timm_sched_fix/runner/startup.py): installed by every kind of install, off and
importing nothing unless switched on, patching with the environment's options when on, refusing bad values with
the variable's name while the process's own work goes on."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import Options
from timm_sched_fix._timing import timing_of
from timm_sched_fix.options import ENV_AUDIT
from timm_sched_fix.runner import startup

import installed

INSTALLS = pytest.mark.release_independent("how the package is installed and what the interpreter's start-up "
                                           "runs: no timm code is involved")

#: Run in an installed environment: what the hook did before this code ran, then the code's own work.
PROBE = """
import json, sys
before = sorted(name for name in sys.modules if name.startswith("timm_sched_fix"))
import timm_sched_fix
from timm_sched_fix.runner import startup
print(json.dumps(dict(before=before, patched=timm_sched_fix.is_patched(), file=timm_sched_fix.__file__,
                      hook_installed=startup.hook_installed())))
print("the script's own work")
"""


def probe(python: Path, env: dict[str, str]) -> tuple[dict, list[str]]:
    result = subprocess.run([str(python), "-c", PROBE], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    first, own_work = result.stdout.splitlines()
    assert own_work == "the script's own work"
    return json.loads(first), result.stderr.splitlines()


# -- what the installs put where -----------------------------------------------------------------------------


def test_pth_line_is_gated_on_the_actions_and_off_values_of_startup():
    (line,) = startup.PTH_TEXT.splitlines()
    assert startup.PTH_TEXT == line + "\n"
    assert line.startswith("import os;")  # site executes a .pth line only when it starts with "import"
    tuples = [ast.literal_eval(node) for node in ast.walk(ast.parse(line)) if isinstance(node, ast.Tuple)]
    assert sorted(tuples) == sorted([startup.OFF, tuple(startup.ACTIONS)])
    (called,) = [node.func for node in ast.walk(ast.parse(line)) if isinstance(node, ast.Call)
                 and isinstance(node.func, ast.Attribute) and node.func.attr == "run"]
    assert eval(compile(ast.Expression(called), "<pth>", "eval")) is startup.run  # the callee only: nothing runs
    # the audit tells an install whose hook predates ENV_AUDIT by the quoted name (audit hook_audits_children)
    assert f'"{ENV_AUDIT}"' in line


@INSTALLS
@pytest.mark.parametrize("kind", ["editable", "user"])
def test_editable_and_user_installs_run_the_hook(kind, tmp_path):
    """The wheel into a fresh venv is the ``installed_python`` fixture (below); ``pip install -e .`` and
    ``pip install --user`` put the .pth where their interpreter processes it too."""
    wheel = installed.build(tmp_path, editable=kind == "editable")
    if kind == "editable":
        python, user_base = installed.venv(tmp_path / "venv"), None
    else:
        python, user_base = installed.base_python(), tmp_path / "userbase"
    site_packages = installed.install(wheel, python, user_base=user_base)
    assert (site_packages / startup.PTH_NAME).read_text() == startup.PTH_TEXT
    env = installed.environment(**({"PYTHONUSERBASE": str(user_base)} if user_base else {}))
    seen, _ = probe(python, env)
    assert seen["before"] == [] and not seen["patched"] and seen["hook_installed"]
    seen, errors = probe(python, {**env, "TIMM_SCHED_FIX": "1"})
    assert seen["patched"] and errors == []
    package = tmp_path / "source" if kind == "editable" else site_packages
    assert Path(seen["file"]).resolve() == (package / "timm_sched_fix" / "__init__.py").resolve()


@INSTALLS
def test_wheel_install_runs_the_hook_only_when_switched_on(installed_python):
    site_packages = installed_python.parent.parent / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    for off in (None, "0", "off", " False ", ""):
        env = installed.environment(**({} if off is None else {"TIMM_SCHED_FIX": off}))
        seen, errors = probe(installed_python, env)
        assert seen == dict(before=[], patched=False, file=seen["file"], hook_installed=True) and errors == [], off
    seen, errors = probe(installed_python, installed.environment(TIMM_SCHED_FIX="1"))
    assert seen["patched"] and errors == []
    assert "timm_sched_fix.runner.startup" in seen["before"] and "timm_sched_fix._patching" in seen["before"]
    assert Path(seen["file"]).is_relative_to(site_packages)


@INSTALLS
@pytest.mark.parametrize(("variables", "named"), [
    ({"TIMM_SCHED_FIX": "maybe"}, "TIMM_SCHED_FIX must be one of"),
    ({"TIMM_SCHED_FIX": "1", "TIMM_SCHED_FIX_CONVENTION": "middle"}, "TIMM_SCHED_FIX_CONVENTION: convention must"),
])
def test_bad_value_is_refused_once_naming_it_and_the_process_runs_stock(variables, named, installed_python):
    seen, errors = probe(installed_python, installed.environment(**variables))
    assert not seen["patched"]
    assert len(errors) == 1 and errors[0].startswith(f"timm-sched-fix: {named}"), errors
    assert "TIMM_SCHED_FIX is ignored in this process" in errors[0]


# -- the actions, in this process ----------------------------------------------------------------------------


def scheduler_options() -> Options | None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    timing = timing_of(timm.scheduler.TanhLRScheduler(optimizer, t_initial=10))
    return timing and timing.options


def test_switched_on_the_hook_patches_with_the_environments_options(monkeypatch):
    monkeypatch.setenv("TIMM_SCHED_FIX", "yes")
    for name, value in (("CONVENTION", "begin"), ("AUTO", "on"), ("ON_LAG", "fix")):
        monkeypatch.setenv(f"TIMM_SCHED_FIX_{name}", value)
    startup.run_actions()
    try:
        assert scheduler_options() == Options(convention="begin", auto=True, on_lag="fix")
    finally:
        timm_sched_fix.unpatch()


@pytest.mark.parametrize(("name", "value"), [
    ("TIMM_SCHED_FIX", "2"), ("TIMM_SCHED_FIX_CONVENTION", "middle"), ("TIMM_SCHED_FIX_AUTO", "maybe"),
    ("TIMM_SCHED_FIX_ON_LAG", "shout"), ("TIMM_SCHED_FIX_REPORT", "loud"),
])
def test_a_bad_value_patches_nothing_and_says_which_variable(name, value, monkeypatch, capsys):
    monkeypatch.setenv("TIMM_SCHED_FIX", "1")
    monkeypatch.setenv(name, value)
    startup.run_actions()
    assert not timm_sched_fix.is_patched() and scheduler_options() is None
    (error,) = capsys.readouterr().err.splitlines()
    assert error.startswith(f"timm-sched-fix: {name}") and f"got {value!r}" in error


@INSTALLS
def test_report_variable_reports_at_exit_what_the_patch_fixed(installed_python, tmp_path):
    """The report's contents are tests/test_report.py's; here: the variable turns it on, printed at exit."""
    script = tmp_path / "train.py"
    script.write_text("import torch\nfrom timm.scheduler import CosineLRScheduler\n"
                      "optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)\n"
                      "CosineLRScheduler(optimizer, t_initial=10, warmup_t=2, warmup_lr_init=0.01)\n"
                      "optimizer.step()\n")
    result = subprocess.run([str(installed_python), str(script)], capture_output=True, text=True, check=False,
                            env=installed.environment(TIMM_SCHED_FIX="1", TIMM_SCHED_FIX_REPORT="1"))
    assert result.returncode == 0, result.stderr
    header, line = result.stderr.splitlines()
    assert header.startswith("timm-sched-fix report, main process (pid ") and header.endswith("fixed 1 scheduler")
    assert line == ("  CosineLRScheduler (per epoch, convention='end', auto=False, on_lag='warn') on SGD: first "
                    "optimizer step ran with lr 0.01, the same as stock timm")


@INSTALLS
def test_switch_runner_and_auto_import_in_one_process_fix_once_and_report_once(installed_python, tmp_path):
    """A rank that inherits the switch, runs under the runner and imports timm_sched_fix.auto: one fix with the
    environment's options (the runner's agree), one optimizer hook, one report."""
    script = tmp_path / "train.py"
    script.write_text("import timm_sched_fix.auto\nimport torch\nfrom timm.scheduler import TanhLRScheduler\n"
                      "from timm_sched_fix._timing import timing_of\n"
                      "optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)\n"
                      "scheduler = TanhLRScheduler(optimizer, t_initial=10)\noptimizer.step()\n"
                      "print(timing_of(scheduler).options, len(optimizer._optimizer_step_pre_hooks))\n")
    env = installed.environment(TIMM_SCHED_FIX="1", TIMM_SCHED_FIX_CONVENTION="begin", TIMM_SCHED_FIX_REPORT="1")
    result = subprocess.run([str(installed_python), "-m", "timm_sched_fix", "run", "--convention", "begin",
                             str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Options(convention='begin', auto=False, on_lag='warn') 1\n"
    assert result.stderr.count("timm-sched-fix report") == 1 and "options" not in result.stderr, result.stderr
