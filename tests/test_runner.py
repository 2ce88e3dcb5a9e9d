"""``timm-sched-fix run``: an unedited timm-style training script runs with the fix, seeing its own argv,
``__name__`` and exit code, as under ``python -m cProfile`` or ``coverage run``."""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import wrapt

import timm_sched_fix
from timm_sched_fix import _compat as compat
from timm_sched_fix import cli

from support import expected_trace, group_lrs

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "timm_style_train.py"
CONSOLE_SCRIPT = Path(sys.executable).parent / "timm-sched-fix"
EPOCHS, UPDATES_PER_EPOCH = 3, 4


def example_schedule():
    """What each optimizer step of the example must run with, and whether its schedule counts epochs: v(k) for
    step k of the per-update schedule; v(e) for every step of epoch e where the installed timm has no
    create_scheduler_v2 (before 0.9) and the example's create_scheduler counts epochs. From a stock scheduler."""
    create_lr_scheduler = runpy.run_path(str(EXAMPLE), run_name="example")["create_lr_scheduler"]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler, _ = create_lr_scheduler(optimizer, EPOCHS, UPDATES_PER_EPOCH)
    on_epochs = compat.is_epoch_schedule(scheduler)
    values = []
    for t in range(EPOCHS if on_epochs else EPOCHS * UPDATES_PER_EPOCH):
        scheduler.step(t) if on_epochs else scheduler.step_update(t)
        values.append(group_lrs(optimizer))
    trace = expected_trace(values, epochs=EPOCHS, batches=UPDATES_PER_EPOCH, on_epochs=on_epochs)
    return [lrs[0] for lrs in trace], on_epochs


def trace_of(command, tmp_path):
    trace_file = tmp_path / "trace.json"
    args = [str(EXAMPLE), "--epochs", str(EPOCHS), "--updates-per-epoch", str(UPDATES_PER_EPOCH),
            "--trace", str(trace_file)]
    result = subprocess.run(command + args, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(trace_file.read_text())


def wrong_steps(trace):
    want, _ = example_schedule()
    assert len(trace) == len(want)
    return [k for k, (got, value) in enumerate(zip(trace, want)) if got != pytest.approx(value, rel=1e-12)]


def test_stock_script_runs_its_first_step_without_the_noise(tmp_path):
    _, on_epochs = example_schedule()
    first_steps = list(range(UPDATES_PER_EPOCH)) if on_epochs else [0]  # the first epoch runs with one LR
    assert wrong_steps(trace_of([sys.executable], tmp_path)) == first_steps


def test_runner_makes_every_step_of_the_script_right(tmp_path):
    # the console script runs this script too, in tests/test_readme_integrations.py
    assert wrong_steps(trace_of([sys.executable, "-m", "timm_sched_fix", "run", "--convention", "end"], tmp_path)) == []


# -- the script's view of the world, in this process ----------------------------------------------------

SCRIPT = """
import json, sys
import timm.scheduler, torch
import timm_sched_fix
from timm_sched_fix._timing import timing_of
optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
timing = timing_of(timm.scheduler.CosineLRScheduler(optimizer, t_initial=4))
seen = dict(name=__name__, argv=sys.argv, patched=timm_sched_fix.is_patched(), options=repr(timing and timing.options))
with open(sys.argv[1], "w") as out:
    json.dump(seen, out)
if len(sys.argv) > 2 and sys.argv[2].isdigit():
    sys.exit(int(sys.argv[2]))
"""


@pytest.fixture
def script(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_train.py").write_text(SCRIPT)
    return tmp_path


def seen(script):
    return json.loads((script / "seen.json").read_text())


def test_script_sees_its_argv_main_and_the_patch_then_the_patch_is_gone(script):
    argv_before = sys.argv[:]
    assert cli.main(["run", "--convention", "begin", "--auto", "--on-lag", "fix", "my_train.py", "seen.json"]) == 0
    assert seen(script) == {"name": "__main__", "argv": ["my_train.py", "seen.json"], "patched": True,
                            "options": "Options(convention='begin', auto=True, on_lag='fix')"}
    assert not timm_sched_fix.is_patched() and sys.argv == argv_before


def test_options_after_the_script_are_the_scripts(script):
    assert cli.main(["run", "my_train.py", "seen.json", "--auto", "--convention", "begin", "-m"]) == 0
    assert seen(script)["argv"] == ["my_train.py", "seen.json", "--auto", "--convention", "begin", "-m"]
    assert seen(script)["options"] == "Options(convention='end', auto=False, on_lag='warn')"


def test_module_mode_runs_as_python_m(script):
    assert cli.main(["run", "-m", "my_train", "seen.json"]) == 0
    assert seen(script)["name"] == "__main__"
    assert seen(script)["argv"] == [str(script / "my_train.py"), "seen.json"]


def test_exit_code_and_exceptions_are_the_scripts(script):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "my_train.py", "seen.json", "3"])
    assert exit_info.value.code == 3 and not timm_sched_fix.is_patched()
    (script / "broken.py").write_text("raise KeyError('from the script')")
    with pytest.raises(KeyError, match="from the script"):
        cli.main(["run", "broken.py"])
    assert not timm_sched_fix.is_patched()


def test_missing_script_or_module_is_a_clear_error(script, capsys):
    assert cli.main(["run", "nowhere.py"]) == 2  # Python's own messages: tests/test_like_python.py
    assert "can't open file '" in capsys.readouterr().err
    assert cli.main(["run", "-m", "no_such_package.train"]) == 1
    assert "No module named 'no_such_package'" in capsys.readouterr().err
    assert not timm_sched_fix.is_patched()


def test_console_script_exits_with_the_scripts_exit_code_and_imports_no_torch_for_it(tmp_path):
    (tmp_path / "exits.py").write_text(
        "import sys\nsys.exit(99 if 'torch' in sys.modules or 'timm' in sys.modules else int(sys.argv[1]))\n")
    result = subprocess.run([str(CONSOLE_SCRIPT), "run", "exits.py", "5"], cwd=tmp_path, check=False)
    assert result.returncode == 5


# -- the processes the script starts ----------------------------------------------------------------------

ENV_SCRIPT = """
import json, os, sys
with open(sys.argv[1], "w") as out:
    json.dump({name: value for name, value in os.environ.items() if name.startswith("TIMM_SCHED_FIX")}, out)
"""


@pytest.fixture
def env_script(script, monkeypatch):
    for name in list(os.environ):
        if name.startswith("TIMM_SCHED_FIX"):
            monkeypatch.delenv(name)
    (script / "my_env.py").write_text(ENV_SCRIPT)
    return script


def test_processes_the_script_starts_inherit_the_switch_and_the_options(env_script):
    assert cli.main(["run", "--no-children", "my_env.py", "seen.json"]) == 0
    assert seen(env_script) == {}
    assert cli.main(["run", "--convention", "begin", "--auto", "--report", "my_env.py", "seen.json"]) == 0
    assert seen(env_script) == {"TIMM_SCHED_FIX": "1", "TIMM_SCHED_FIX_CONVENTION": "begin", "TIMM_SCHED_FIX_AUTO": "1",
                                "TIMM_SCHED_FIX_ON_LAG": "warn", "TIMM_SCHED_FIX_REPORT": "1"}
    assert not [name for name in os.environ if name.startswith("TIMM_SCHED_FIX")]  # restored


def test_environment_with_other_options_is_overridden_and_said(env_script, monkeypatch, capsys):
    monkeypatch.setenv("TIMM_SCHED_FIX", "1")
    monkeypatch.setenv("TIMM_SCHED_FIX_CONVENTION", "begin")
    assert cli.main(["run", "--no-children", "my_env.py", "seen.json"]) == 0
    assert ("the environment's options, Options(convention='begin', auto=False, on_lag='warn'), are not this "
            "command's, Options(convention='end', auto=False, on_lag='warn'): the processes the script starts run "
            "with the environment's") in capsys.readouterr().err
    assert cli.main(["run", "my_env.py", "seen.json"]) == 0
    assert "the processes the script starts run with this command's" in capsys.readouterr().err
    assert seen(env_script)["TIMM_SCHED_FIX_CONVENTION"] == "end"
    assert os.environ["TIMM_SCHED_FIX_CONVENTION"] == "begin"  # restored


def test_bad_report_variable_is_a_clear_error(env_script, monkeypatch, capsys):
    monkeypatch.setenv("TIMM_SCHED_FIX_REPORT", "loud")
    assert cli.main(["run", "my_env.py", "seen.json"]) == 2
    assert "TIMM_SCHED_FIX_REPORT must be one of" in capsys.readouterr().err
    assert not (env_script / "seen.json").exists()


@pytest.mark.release_independent("whether site-packages holds the hook is the interpreter's, not timm's")
def test_runner_says_when_the_hook_is_not_installed(tmp_path):
    """A venv where the package is importable but not installed (a checkout on sys.path): the processes the script
    starts would run stock, and the runner says so unless --no-children."""
    import installed

    python = installed.venv(tmp_path / "venv")
    site_packages = Path(subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                        capture_output=True, text=True, check=True).stdout.strip())
    (site_packages / "checkout.pth").write_text(f"{installed.ROOT}\n{Path(wrapt.__file__).parent.parent}\n")
    (tmp_path / "empty.py").write_text("")
    for options, said in (([], True), (["--no-children"], False)):
        result = subprocess.run([str(python), "-m", "timm_sched_fix", "run", *options, "empty.py"], cwd=tmp_path,
                                env=installed.environment(), capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert ("timm_sched_fix.pth is not in this Python's site-packages, so the Python processes the script "
                "starts run stock timm" in result.stderr) == said, result.stderr
