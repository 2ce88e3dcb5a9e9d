"""``timm-sched-fix check`` and ``trace``: their output and exit code.

What they compute (the first-step table, the compat fixes, how many steps a loop runs late) depends on the timm
release, so those tests run on every release, through ``cli.main`` in the test process as the console script
calls it: a new interpreter per call would import torch and timm again, ~5 s of CPU each. How the command
runs as a program (``python -m``, the console script, a terminal, files, user mistakes) is checked in
subprocesses; those the release does not change are marked release_independent (see tests/conftest.py).
"""

import argparse
import csv
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import timm.scheduler
import torch
import yaml

import timm_sched_fix
from timm_sched_fix import _compat as compat
from timm_sched_fix import cli as timm_sched_fix_cli
from timm_sched_fix.trace import compute as trace_steps
from timm_sched_fix.trace import settings as trace_settings

HAS_V2 = hasattr(timm.scheduler, "create_scheduler_v2")


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "timm_sched_fix", *args], capture_output=True, text=True,
                          check=False, env=env, timeout=300)


def in_process(capsys, *args):
    """The command run by ``cli.main`` in this process, with its output as a subprocess result."""
    returncode = timm_sched_fix_cli.main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(["timm-sched-fix", *args], returncode, captured.out, captured.err)


def assert_user_error(result, *fragments):
    """A user mistake: exit code 2, one clear line naming the problem, no traceback."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def help_of(capsys, *args):
    """What ``timm-sched-fix ARGS --help`` prints; it exits with 0."""
    with pytest.raises(SystemExit) as exit_info:
        timm_sched_fix_cli.main([*args, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


# -- the command line as a whole ------------------------------------------------------------------

def test_version_names_the_package_timm_torch_and_python(capsys):
    with pytest.raises(SystemExit) as exit_info:
        timm_sched_fix_cli.main(["--version"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out.strip()
    # the versions read without importing are those of the timm and torch this process imported
    assert printed.startswith(f"timm-sched-fix {timm_sched_fix.__version__} (timm {timm.__version__}, torch ")
    assert torch.__version__.split("+")[0] in printed and f"Python {sys.version.split()[0]}" in printed


#: Phrases of the modules' own docstrings (for developers) that the help once showed.
INTERNAL = ("add_parser", "``", ":mod:", "compat.", "first_step", "stock_writer", "runpy")


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["trace"], ["audit"]],
                         ids=["main", "run", "check", "trace", "audit"])
def test_help_is_for_users_with_examples_and_defaults(capsys, command):
    text = help_of(capsys, *command)
    assert "examples:" in text
    assert not [phrase for phrase in INTERNAL if phrase in text], text
    if command:
        parser, _ = timm_sched_fix_cli.build_parser()
        subparser = parser._subparsers._group_actions[0].choices[command[0]]
        for action in subparser._actions:  # every option with a value by default says which
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert f"(default: {action.default})" in " ".join(text.split()), action.option_strings
    else:
        for name in ("run", "check", "trace", "audit", "--version", "TIMM_SCHED_FIX_AUTO"):
            assert name in text
        # the environment variables' values as options.options_from_env accepts them
        assert "1, true, yes or on; 0, false, no or off" in text


def test_run_without_a_script_says_what_is_missing(capsys):
    for args, what in ((["run"], "no script to run"), (["run", "--auto"], "no script to run"),
                       (["run", "-m"], "no module to run"), (["audit", "--fix"], "no script to run")):
        with pytest.raises(SystemExit) as exit_info:
            timm_sched_fix_cli.main(args)
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert what in error and "required" not in error, error


# -- check -------------------------------------------------------------------------------------

#: Exit code 0 means the fixed column equals v(t) in every row; a stock column that cannot run does not count.
#: Stock PlateauLRScheduler of timm 0.4.12 - 1.0.15 cannot even be built on torch 2.14 (quirk plateau_verbose).
STOCK_PLATEAU_FAILS = compat.PLATEAU_PASSES_VERBOSE


def test_check_table_has_a_row_per_class_and_the_compat_fixes(capsys):
    result = in_process(capsys, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in compat.scheduler_classes():
        assert any(line.startswith(name) for line in lines), name
    assert "stock wrong, fixed ok" in result.stdout  # tanh's first step, at least, is wrong in stock timm
    assert "FIXED WRONG" not in result.stdout and " ERROR" not in result.stdout
    plateau_rows = [line for line in lines if line.startswith("PlateauLRScheduler ")
                    and not line.startswith("PlateauLRScheduler [")]  # table rows, not the error lines
    assert plateau_rows and all(row.endswith("stock fails, fixed ok") == STOCK_PLATEAU_FAILS for row in plateau_rows)
    if STOCK_PLATEAU_FAILS:
        assert "PlateauLRScheduler [plain]: stock: TypeError" in result.stdout and "verbose" in result.stdout
    for quirk in compat.active_quirks():
        assert quirk.name in result.stdout


def test_check_json_says_ok_and_matches_the_table(capsys):
    result = in_process(capsys, "check", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {row["scheduler"] for row in report["rows"]} == set(compat.scheduler_classes())
    assert all(row["fixed"] is not None and row["fixed"] == row["schedule"] for row in report["rows"])
    tanh = next(row for row in report["rows"] if row["scheduler"] == "TanhLRScheduler" and row["config"] == "plain")
    assert tanh["stock"] != tanh["schedule"] and tanh["fixed"] == tanh["schedule"]
    for row in report["rows"]:
        stock_fails = STOCK_PLATEAU_FAILS and row["scheduler"] == "PlateauLRScheduler"
        assert (row["stock"] is None) == stock_fails, row
        assert (row["verdict"] == "stock fails, fixed ok") == stock_fails, row
        assert (row["error"] is not None and "verbose" in row["error"]) == stock_fails, row


# -- trace: what it prints ------------------------------------------------------------------------

def test_lightning_loop_runs_15_of_18_steps_late(capsys):
    """The README's figure: 6 epochs of 3 batches, warmup 2, Lightning's documented override."""
    result = in_process(capsys, "trace", "--epochs", "6", "--updates-per-epoch", "3", "--warmup-epochs", "2",
                        "--warmup-lr", "1e-3", "--lr", "0.1", "--loop", "lightning")
    assert result.returncode == 0, result.stderr
    assert "15 of 18 optimizer steps differ, first at step 3 (epoch 1)" in result.stdout


def test_train_py_loop_differs_only_where_stock_has_a_first_step_defect(capsys):
    warm = in_process(capsys, "trace", "--epochs", "6", "--updates-per-epoch", "3", "--warmup-epochs", "2",
                      "--lr", "0.1")
    assert "0 of 18 optimizer steps differ" in warm.stdout, warm.stdout
    tanh = in_process(capsys, "trace", "--sched", "tanh", "--epochs", "6", "--updates-per-epoch", "3",
                      "--warmup-epochs", "0", "--lr", "0.1", "--per-update")
    assert "3 of 18 optimizer steps differ, first at step 0 (epoch 0)" in tanh.stdout, tanh.stdout
    rows = [line.split() for line in tanh.stdout.splitlines()
            if line.split()[:1] in (["0"], ["1"], ["2"], ["3"]) and line.split()[1].isdigit()]
    assert [row[-1] == "*" for row in rows] == [True, True, True, False]


@pytest.mark.skipif(not HAS_V2, reason="--sched-on-updates needs timm >= 0.9")
def test_per_update_enumerate_loop_lags_every_step_but_the_first(capsys):
    result = in_process(capsys, "trace", "--epochs", "4", "--sched-on-updates", "--updates-per-epoch", "5",
                        "--lr", "0.1", "--warmup-epochs", "1", "--loop", "enumerate", "--per-update")
    assert result.returncode == 0, result.stderr
    assert "19 of 20 optimizer steps differ, first at step 1 (epoch 0)" in result.stdout


@pytest.mark.release_independent("reading args.yaml and which flags override it")
def test_args_yaml_is_read_and_flags_override_it(tmp_path):
    args = {"model": "resnet50", "batch_size": 256, "opt": "sgd", "sched": "step", "epochs": 12, "lr": 0.2,
            "min_lr": 0.0, "warmup_epochs": 1, "warmup_lr": 1e-4, "decay_epochs": 3, "decay_rate": 0.5,
            "cooldown_epochs": 0, "lr_noise": None, "seed": 0}
    path = tmp_path / "args.yaml"
    path.write_text(yaml.safe_dump(args))
    result = cli("trace", "--config", str(path), "--epochs", "6")
    assert result.returncode == 0, result.stderr
    assert "--sched step" in result.stdout and "6 epochs" in result.stdout and "lr 0.2" in result.stdout


@pytest.mark.release_independent("the CLI's own --lr-base arithmetic")
def test_lr_is_derived_like_train_py_when_not_given():
    result = cli("trace", "--epochs", "3", "--warmup-epochs", "0", "--batch-size", "512", "--lr-base", "0.1")
    assert "lr 0.2 (derived from --lr-base" in result.stdout, result.stdout


# -- trace: files ---------------------------------------------------------------------------------

@pytest.mark.release_independent("writing --out files; the lightning loop's lag is checked on every "
                                "release by test_lightning_loop_runs_15_of_18_steps_late")
def test_out_csv_and_json_hold_every_step(tmp_path):
    common = ["trace", "--epochs", "5", "--updates-per-epoch", "4", "--warmup-epochs", "1", "--lr", "0.1",
              "--loop", "lightning"]
    assert cli(*common, "--out", str(tmp_path / "t.csv")).returncode == 0
    with open(tmp_path / "t.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 20
    assert rows[4]["stock_t"] == "0" and rows[4]["fixed_t"] == "1" and rows[4]["differs"] == "True"
    assert cli(*common, "--out", str(tmp_path / "t.json")).returncode == 0
    data = json.loads((tmp_path / "t.json").read_text())
    assert len(data["steps"]["fixed_lr"]) == 20 and data["summary"].startswith("16 of 20")


@pytest.mark.release_independent("matplotlib's output")
def test_plot_is_a_png_of_the_documented_size(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    path = tmp_path / "trace.png"
    result = cli("trace", "--epochs", "8", "--updates-per-epoch", "10", "--warmup-epochs", "2", "--lr", "0.1",
                 "--loop", "lightning", "--plot", str(path))
    assert result.returncode == 0, result.stderr
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1200, 600)


@pytest.mark.release_independent("the message for a missing matplotlib")
def test_plot_without_matplotlib_says_how_to_install_it(tmp_path):
    blocker = tmp_path / "matplotlib"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is not installed')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    result = cli("trace", "--epochs", "3", "--warmup-epochs", "0", "--plot", str(tmp_path / "t.png"), env=env)
    assert_user_error(result, "timm-sched-fix[plot]")
    assert not (tmp_path / "t.png").exists()


# -- trace: long runs -----------------------------------------------------------------------------

@pytest.mark.release_independent("summarising long tables and the progress line; the enumerate loop's lag is "
                                "checked on every release by test_per_update_enumerate_loop_lags_every_step_but_the_first")
@pytest.mark.skipif(not HAS_V2, reason="--sched-on-updates needs timm >= 0.9")
def test_long_trace_is_summarised_and_shows_progress_on_a_terminal():
    """300 epochs x 5,000 updates on a terminal: a progress line on stderr, a table of a few dozen rows."""
    command = [sys.executable, "-m", "timm_sched_fix", "trace", "--epochs", "300", "--sched-on-updates",
               "--updates-per-epoch", "5000", "--lr", "0.1", "--cooldown-epochs", "10", "--loop", "enumerate"]
    chunks = []

    def read(fd):
        data = os.read(fd, 65536)
        chunks.append(data)
        return data

    status = pty.spawn(command, read)
    output = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert "computing the schedule:" in output
    assert "1,500,000 of 1,550,000 optimizer steps differ, first at step 1 (epoch 0)" in output
    table = [line for line in output.splitlines() if line.strip() and "computing the schedule" not in line]
    assert len(table) < 60
    assert sum("rows" in line and line.startswith("...") for line in table) >= 2


@pytest.mark.release_independent("whether the progress line sees a terminal")
def test_no_progress_line_when_not_on_a_terminal():
    result = cli("trace", "--epochs", "3", "--warmup-epochs", "0")
    assert result.returncode == 0 and "computing" not in result.stderr and "\r" not in result.stderr


# -- trace: user mistakes -------------------------------------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["--sched", "cosin"], ["--sched 'cosin'", "valid: cosine", "step"]),
    (["--epochs", "-3"], ["--epochs must be positive"]),
    (["--epochs", "5", "--warmup-epochs", "5"],
     ["--warmup-epochs 5 is not shorter than --epochs 5", "--warmup-prefix"]),
    (["--decay-milestones", "30", "20"], ["--decay-milestones must be increasing"]),  # multistep is not in 0.4.12
    (["--lr", "-0.1"], ["--lr must be positive"]),
    (["--sched-on-updates"], ["--updates-per-epoch"]),
    (["--updates-per-epoch", "0"], ["--updates-per-epoch must be positive"]),
    (["--out", "trace.txt"], ["--out trace.txt", ".csv or .json"]),
    (["--lr-noise", "0.8", "0.2"], ["--lr-noise", "off point"]),
])
def test_impossible_settings_name_the_flag(args, fragments):
    assert_user_error(cli("trace", *args), *fragments)


@pytest.mark.parametrize("args, first, not_shown", [
    # an unknown scheduler comes before what it would make wrong (warmup as long as the run)
    (["--sched", "foo", "--epochs", "5"], "--sched 'foo' is not a scheduler of timm", "--warmup-epochs"),
    (["--epochs", "5", "--sched", "none"], "--sched none leaves the LR alone", "--warmup-epochs"),
    (["--sched", "cosin", "--lr", "-1"], "--sched 'cosin'", "--lr must be"),
    # the settings before the length of an epoch, the length of an epoch before the output files
    (["--epochs", "0", "--updates-per-epoch", "0"], "--epochs must be positive", "--updates-per-epoch"),
    (["--updates-per-epoch", "0", "--out", "trace.txt"], "--updates-per-epoch must be positive", "--out"),
    (["--lr", "-1", "--plot", "trace.jpg"], "--lr must be positive", "--plot"),
])
def test_mistakes_are_reported_in_the_order_a_user_fixes_them(capsys, args, first, not_shown):
    result = in_process(capsys, "trace", *args)
    assert_user_error(result, first)
    assert not_shown not in result.stderr


def test_names_every_release_schedules_are_schedules_of_this_release():
    """``trace`` reports a setting mistake next to these names without asking the installed timm first."""
    assert set(trace_settings.SCHEDULES_OF_EVERY_RELEASE) <= set(trace_steps._valid_schedules())


def test_yaml_that_is_not_train_py_args_is_refused(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("name: my-experiment\nlayers: [1, 2]\n")
    assert_user_error(cli("trace", "--config", str(other)), "not an args.yaml written by timm's train.py", "sched")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sched: [cosine\n")
    assert_user_error(cli("trace", "--config", str(broken)), "not valid YAML")
    assert_user_error(cli("trace", "--config", str(tmp_path / "missing.yaml")), "cannot read it")
    wrong_type = tmp_path / "args.yaml"
    wrong_type.write_text(yaml.safe_dump({"sched": "cosine", "epochs": "many", "warmup_epochs": 5, "min_lr": 0,
                                          "decay_rate": 0.1}))
    assert_user_error(cli("trace", "--config", str(wrong_type)), "--epochs must be an integer, got 'many'")


@pytest.mark.release_independent("the console-script entry point")
def test_console_script_is_installed():
    script = Path(sys.executable).with_name("timm-sched-fix")
    result = subprocess.run([str(script), "trace", "--epochs", "2", "--warmup-epochs", "0"], capture_output=True,
                            check=False, text=True, timeout=300)
    assert result.returncode == 0 and "optimizer steps differ" in result.stdout
