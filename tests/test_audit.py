"""``timm-sched-fix audit``: real training scripts (a train.py-style example, DeiT-, Swin- and Lightning-style loops,
a resume, two ranks) audited stock and under the fix, checked against what their optimizer steps ran with
(the script's own step pre-hook) and against v(t) from a stock scheduler built here.

Most audits run through ``cli.main`` in this process (a new interpreter per audit would import torch and timm
again, ~5 s of CPU each) and run on every timm release; the ones that need real processes (``python -m``, the
``--against-timm`` child, torchrun) are marked release_independent (see tests/conftest.py).
"""

import json
import os
import runpy
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import timm
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import _compat as compat
from timm_sched_fix import cli
from timm_sched_fix._timing import timing_of
from timm_sched_fix._usage import UsageError
from timm_sched_fix.audit import releases, report
from timm_sched_fix.audit.record import Recorder

from support import HELPERS, group_lrs, site_package_dirs

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "timm_style_train.py"
SCRIPTS = HELPERS / "audit_scripts"
EPOCHS, UPDATES = 4, 3


def audit(capsys, *args):
    """``timm-sched-fix audit args...`` in this process: (exit code, stdout, the --out JSON if one was asked for)."""
    code = cli.main(["audit", *map(str, args)])
    out = capsys.readouterr().out
    document = None
    if "--out" in args:
        path = Path(args[list(args).index("--out") + 1])
        document = json.loads(path.read_text()) if path.suffix == ".json" else None
    return code, out, document


def only_scheduler(document):
    (scheduler,) = document["schedulers"]
    return scheduler


def stock_values(build, periods, on_epochs):
    """v(0..periods-1) of group 0, from a stock scheduler ``build(optimizer)`` driven with step(t)/step_update(t)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build(optimizer)
    values = []
    for t in range(periods):
        scheduler.step(t) if on_epochs else scheduler.step_update(t)
        values.append(group_lrs(optimizer)[0])
    return values


def ran(scheduler):
    return [lrs[0] for lrs in scheduler["trace"]["ran_lr"]]


def wrong_steps(scheduler):
    return [k for k, wrong in enumerate(scheduler["trace"]["wrong"]) if wrong]


# -- examples/timm_style_train.py -------------------------------------------------------------------

def example_schedule():
    """v(t) per step of the example, and whether its schedule counts epochs (before timm 0.9 it does)."""
    create = runpy.run_path(str(EXAMPLE), run_name="example")["create_lr_scheduler"]
    on_epochs = compat.is_epoch_schedule(create(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), EPOCHS,
                                                UPDATES)[0])
    values = stock_values(lambda o: create(o, EPOCHS, UPDATES)[0], EPOCHS if on_epochs else EPOCHS * UPDATES,
                          on_epochs)
    return [values[k // UPDATES if on_epochs else k] for k in range(EPOCHS * UPDATES)], on_epochs


def test_example_stock_differs_where_the_script_itself_saw_it_and_fixed_matches(capsys, tmp_path):
    schedule, on_epochs = example_schedule()
    script_args = [EXAMPLE, "--epochs", EPOCHS, "--updates-per-epoch", UPDATES]
    # the script's own record of what each optimizer step ran with, without the audit
    runpy_trace = tmp_path / "plain.json"
    argv = sys.argv[:]
    sys.argv[:] = [str(EXAMPLE), "--epochs", str(EPOCHS), "--updates-per-epoch", str(UPDATES), "--trace",
                   str(runpy_trace)]
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    finally:
        sys.argv[:] = argv
    plain = json.loads(runpy_trace.read_text())

    code, out, document = audit(capsys, "--out", tmp_path / "stock.json", *script_args, "--trace",
                                tmp_path / "audited.json")
    scheduler = only_scheduler(document)
    assert code == 1, out
    assert ran(scheduler) == json.loads((tmp_path / "audited.json").read_text()) == plain  # the audit changes nothing
    assert [lrs[0] for lrs in scheduler["trace"]["schedule_lr"]] == pytest.approx(schedule, rel=1e-12, abs=0)
    first_epoch = list(range(UPDATES)) if on_epochs else [0]
    assert wrong_steps(scheduler) == first_epoch
    assert scheduler["causes"] == {"missing pre-advance": len(first_epoch)}
    assert f"{len(first_epoch)} of {EPOCHS * UPDATES} optimizer steps ran with an LR other than the schedule's" in out
    assert "likely cause: missing pre-advance" in out

    code, out, document = audit(capsys, "--fix", "--max-steps", 5, "--out", tmp_path / "fixed.json", *script_args)
    scheduler = only_scheduler(document)
    assert code == 0, out
    assert "stopped the script after 5 optimizer steps (--max-steps 5)" in out
    assert document["stopped_at_max_steps"] and scheduler["steps"] == 5 and not wrong_steps(scheduler)
    assert ran(scheduler) == pytest.approx(schedule[:5], rel=1e-12, abs=0)
    assert "every one of the 5 optimizer steps ran with the LR its schedule defines" in out


def test_the_fix_writes_through_its_inlined_step_update_while_audited():
    """The audit's observers sit on timm's methods: the fix must still find timm's own step_update behind them."""
    recorder = Recorder()
    with timm_sched_fix.patched():
        recorder.install()
        try:
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            scheduler = timm.scheduler.CosineLRScheduler(optimizer, t_initial=4, t_in_epochs=False)
            writer = timing_of(scheduler)._write_values
        finally:
            recorder.uninstall()
    assert (writer.__name__ == "step_update") is (compat.installed_base_step_update() is not None)
    assert len(recorder.records) == 1 and recorder.records[0].class_name == "CosineLRScheduler"


# -- DeiT, Swin and Lightning loops: the one-period lag ----------------------------------------------

def deit_values(epochs):
    def build(optimizer):
        import argparse
        return timm.scheduler.create_scheduler(argparse.Namespace(
            sched="cosine", epochs=epochs, warmup_epochs=2, warmup_lr=1e-3, min_lr=1e-4, lr_noise=None,
            decay_rate=0.1, cooldown_epochs=0), optimizer)[0]
    return stock_values(build, epochs, on_epochs=True)


def test_deit_and_swin_loops_run_one_period_late_and_on_lag_fix_corrects_them(capsys, tmp_path):
    v = deit_values(6)
    code, out, document = audit(capsys, "--out", tmp_path / "deit.json", SCRIPTS / "deit_style.py")
    scheduler = only_scheduler(document)
    assert code == 1 and scheduler["unit"] == "epoch"
    assert scheduler["epochs_how"].startswith("the scheduler's step() calls, where the DataLoader passes also begin")
    # epoch 0 ran with what the constructor left (v(0)), epoch e >= 1 with v(e - 1): the index of the epoch just done
    assert ran(scheduler) == pytest.approx([v[max(k // 3 - 1, 0)] for k in range(18)], rel=1e-12, abs=0)
    assert wrong_steps(scheduler) == list(range(3, 18)) and scheduler["causes"] == {"one-period lag": 15}
    assert "likely cause: one-period lag" in out and "here step(0) after optimizer step 2" in out

    code, out, document = audit(capsys, "--out", tmp_path / "swin.json", SCRIPTS / "swin_style.py")
    scheduler = only_scheduler(document)
    swin = stock_values(lambda o: timm.scheduler.CosineLRScheduler(
        o, t_initial=12, lr_min=1e-4, warmup_lr_init=1e-3, warmup_t=3, cycle_limit=1, t_in_epochs=False), 12, False)
    assert code == 1 and scheduler["unit"] == "update"
    assert ran(scheduler) == pytest.approx([swin[max(k - 1, 0)] for k in range(12)], rel=1e-12, abs=0)
    assert wrong_steps(scheduler) == list(range(1, 12)) and scheduler["causes"] == {"one-period lag": 11}
    assert "here step_update(0) after optimizer step 0" in out

    for script in ("deit_style.py", "swin_style.py"):
        code, out, document = audit(capsys, "--fix", "--on-lag", "fix", "--out", tmp_path / "fixed.json",
                                    SCRIPTS / script)
        assert code == 0 and not wrong_steps(only_scheduler(document)), out


@pytest.mark.release_independent("Lightning's calls do not depend on the timm release; the lag found on each release "
                                "is checked by test_deit_and_swin_loops_run_one_period_late_and_on_lag_fix_corrects_them")
def test_lightning_trainer_with_the_documented_override(capsys, tmp_path):
    pytest.importorskip("pytorch_lightning")
    code, out, document = audit(capsys, "--out", tmp_path / "stock.json", SCRIPTS / "lightning_style.py")
    scheduler = only_scheduler(document)
    assert code == 1 and scheduler["causes"] == {"one-period lag": 15}, out
    assert "here step(0) after optimizer step 2" in out
    assert scheduler["boundaries"] == [3, 6, 9, 12, 15]
    code, out, document = audit(capsys, "--fix", "--on-lag", "fix", "--out", tmp_path / "fixed.json",
                                SCRIPTS / "lightning_style.py")
    assert code == 0 and only_scheduler(document)["steps"] == 18, out


# -- resume -------------------------------------------------------------------------------------------

def test_resume_starts_where_the_script_or_the_checkpoint_says_or_cannot_be_decided(capsys, tmp_path):
    deit = SCRIPTS / "deit_style.py"
    v = deit_values(6)
    checkpoint = tmp_path / "stock.pt"
    assert audit(capsys, deit, "--save", checkpoint, "--stop-after", 2)[0] == 1

    # DeiT resumes with step(start_epoch): epoch 3 runs with v(3), the epochs after it one late again
    code, out, document = audit(capsys, "--out", tmp_path / "resumed.json", deit, "--resume", checkpoint)
    scheduler = only_scheduler(document)
    assert code == 1 and scheduler["start"] == 3, out
    assert scheduler["start_how"] == "step(3) before the first optimizer step (a resume)"
    assert scheduler["trace"]["t"] == [3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert ran(scheduler) == pytest.approx([v[3]] * 6 + [v[4]] * 3, rel=1e-12, abs=0)
    assert wrong_steps(scheduler) == list(range(3, 9))

    # without that call, stock timm's position is unknown: no verdict, and not called right
    code, out, document = audit(capsys, "--out", tmp_path / "unknown.json", deit, "--resume", checkpoint,
                                "--no-resume-step")
    scheduler = only_scheduler(document)
    assert code == 1 and scheduler["start"] is None and scheduler["wrong_steps"] == 0
    assert scheduler["undecided"].startswith("unknown position after a resume: a state dict was loaded")
    assert "cannot decide for scheduler 1 (unknown position after a resume)" in out

    # a fixed scheduler's checkpoint carries its position
    fixed_checkpoint = tmp_path / "fixed.pt"
    assert audit(capsys, "--fix", "--on-lag", "fix", deit, "--save", fixed_checkpoint, "--stop-after", 2)[0] == 0
    code, out, document = audit(capsys, "--fix", "--on-lag", "fix", "--out", tmp_path / "fixed.json", deit,
                                "--resume", fixed_checkpoint, "--no-resume-step")
    scheduler = only_scheduler(document)
    assert code == 0 and scheduler["start"] == 3, out
    assert scheduler["start_how"] == "the position saved in the loaded state dict"


# -- epoch boundaries ----------------------------------------------------------------------------------

FRACTIONAL = """
import torch
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader
optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
scheduler = CosineLRScheduler(optimizer, t_initial=3)
loader = DataLoader(torch.zeros(8), batch_size=2)  # 4 batches per epoch
for epoch in range(3):
    for i, batch in enumerate(loader):
        optimizer.step()
        scheduler.step(epoch + (i + 1) / len(loader))  # fractional epochs
"""


def test_epoch_boundaries_it_cannot_infer_are_said_and_updates_per_epoch_settles_them(capsys, tmp_path):
    script = tmp_path / "fractional.py"
    script.write_text(FRACTIONAL)
    code, out, document = audit(capsys, "--out", tmp_path / "a.json", script)
    scheduler = only_scheduler(document)
    assert code == 1 and scheduler["boundaries"] is None and scheduler["wrong_steps"] == 0, out
    assert "inside a DataLoader pass" in scheduler["undecided"] and "--updates-per-epoch N" in out
    code, out, document = audit(capsys, "--updates-per-epoch", 4, "--out", tmp_path / "b.json", script)
    scheduler = only_scheduler(document)
    # v(e) for all of epoch e; the fractional calls move the LR within the epoch
    assert scheduler["boundaries"] == [4, 8] and scheduler["epochs_how"] == "--updates-per-epoch 4"
    assert code == 1 and wrong_steps(scheduler) == [1, 2, 3, 5, 6, 7, 9, 10, 11], out


WRAPPED_OPTIMIZERS = """
import torch
from timm.optim import Lookahead
from timm.scheduler import CosineLRScheduler


class ClippedSGD(torch.optim.SGD):  # a subclass whose step() calls the parent's: one update, two step() calls
    def step(self, closure=None):
        torch.nn.utils.clip_grad_norm_(self.param_groups[0]["params"], 1.0)
        return super().step(closure)


for optimizer in (Lookahead(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)),
                  ClippedSGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)):
    scheduler = CosineLRScheduler(optimizer, t_initial=6, t_in_epochs=False)
    for update in range(6):
        optimizer.param_groups[0]["params"][0].grad = torch.ones(1)
        optimizer.step()
        scheduler.step_update(update + 1)
"""


def test_each_parameter_update_counts_once_behind_lookahead_and_super_step(capsys, tmp_path):
    script = tmp_path / "wrapped.py"
    script.write_text(WRAPPED_OPTIMIZERS)
    code, out, document = audit(capsys, "--out", tmp_path / "a.json", script)
    assert code == 0, out
    assert [(s["optimizer"], s["steps"]) for s in document["schedulers"]] == [("Lookahead", 6), ("ClippedSGD", 6)]


ADAPTERS = """
import warnings
import timm.scheduler, torch
import timm_sched_fix
warnings.simplefilter("ignore", timm_sched_fix.ScheduleLagWarning)
KWARGS = dict(t_initial=4, warmup_t=1, warmup_lr_init=1e-3)
optimizers = [torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1) for _ in range(3)]
dropin = timm_sched_fix.CosineLRScheduler(optimizers[0], **KWARGS)
wrapped = timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(optimizers[1], **KWARGS))
torch_style = timm_sched_fix.TorchScheduler(timm.scheduler.CosineLRScheduler(optimizers[2], **KWARGS))
for epoch in range(4):
    for _ in range(2):
        for optimizer in optimizers:
            optimizer.step()
    dropin.step(epoch)  # the index of the epoch just done: one epoch late (warned, not fixed)
    wrapped.step(epoch + 1)
    torch_style.step()
"""


def test_calls_through_every_adapter_are_seen(capsys, tmp_path):
    """A drop-in class, wrap()'s proxy and TorchScheduler: their calls reach the schedule through the fix's routing,
    not timm's methods; the audit sees them (epoch boundaries from them, the lagging call named)."""
    script = tmp_path / "adapters.py"
    script.write_text(ADAPTERS)
    code, out, document = audit(capsys, "--out", tmp_path / "a.json", script)
    dropin, wrapped, torch_style = document["schedulers"]
    assert code == 1, out
    assert [s["boundaries"] for s in document["schedulers"]] == [[2, 4, 6]] * 3
    assert [s["epochs_how"] for s in document["schedulers"]] == ["the scheduler's step() calls"] * 3
    assert dropin["causes"] == {"one-period lag": 6} and "here step(0) after optimizer step 1" in out
    assert wrapped["wrong_steps"] == torch_style["wrong_steps"] == 0


# -- golden files ----------------------------------------------------------------------------------------

def test_golden_round_trip_and_a_moved_schedule(capsys, tmp_path):
    golden = tmp_path / "golden.json"
    script = [EXAMPLE, "--epochs", EPOCHS, "--updates-per-epoch", UPDATES]
    code, out, _ = audit(capsys, "--fix", "--golden", golden, "--update-golden", *script)
    assert code == 0 and f"wrote the golden trace {golden}" in out
    stored = json.loads(golden.read_text())
    assert stored["timm"] == timm.__version__ and len(stored["lrs"]) == EPOCHS * UPDATES  # golden.py's format
    assert stored["audit"]["schedulers"][0]["lrs"] == stored["lrs"]

    code, out, _ = audit(capsys, "--fix", "--golden", golden, *script)
    assert code == 0 and "the same LR at every optimizer step" in out

    code, out, document = audit(capsys, "--fix", "--golden", golden, "--out", tmp_path / "moved.json", *script,
                                "--lr", "0.2")
    moved = [k for k, (old, new) in enumerate(zip(stored["lrs"], only_scheduler(document)["trace"]["ran_lr"]))
             if old != new]
    assert code == 1 and moved, out  # (warmup starts at warmup_lr whatever --lr is)
    assert "the trace moved" in out and f"optimizer step {moved[0]} (epoch " in out
    assert f"({len(moved)} of {EPOCHS * UPDATES} steps differ)" in out


@pytest.mark.parametrize("args, message", [
    (["--on-lag", "fix", "x.py"], "--on-lag is an option of the fix: add --fix"),
    (["--updates-per-epoch", "0", "x.py"], "--updates-per-epoch must be positive"),
    (["--out", "trace.txt", "x.py"], "--out trace.txt: the file name must end in .csv or .json"),
    (["--golden", "missing.json", "x.py"], "--golden missing.json: no such file; run once with --update-golden"),
    (["--update-golden", "x.py"], "--update-golden needs --golden"),
    (["--against-timm", "latest", "x.py"], "not a timm release number"),
    (["no_such_script.py"], "no_such_script.py': [Errno 2] No such file or directory"),  # Python's own line
    (["--out", "no/such/folder/a.json", "x.py"], "--out no/such/folder/a.json: the folder 'no/such/folder' does not"),
    (["--plot", "missing/a.png", "x.py"], "--plot missing/a.png: the folder 'missing' does not exist"),
    (["--golden", "missing/g.json", "--update-golden", "x.py"], "--golden missing/g.json: the folder 'missing'"),
    (["--out", ".json", "x.py"], "--out .json: the file name must end in"),
    (["--env", "x.py"], "run one audit, not one inside another"),
])
def test_usage_errors_exit_2_before_the_script_runs(capsys, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    if args[0] == "--env":  # started by an outer audit, through the environment
        monkeypatch.setenv("TIMM_SCHED_FIX_AUDIT", str(tmp_path))
        args = args[1:]
    assert cli.main(["audit", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err


def test_ranks_that_agree_or_disagree_are_named(capsys, tmp_path):
    documents = []
    for lr in ("0.1", "0.1", "0.2"):
        audit(capsys, "--out", tmp_path / "rank.json", EXAMPLE, "--epochs", 2, "--lr", lr)
        documents.append(json.loads((tmp_path / "rank.json").read_text()))
    lines, disagree = report.rank_lines(documents[:2])
    assert not disagree and lines == ["all 2 ranks ran the same LR at every optimizer step"]
    lines, disagree = report.rank_lines(documents)
    assert disagree and lines[0] == "ranks disagree: rank 2 ran other LRs than rank 0 (3 ranks)"
    differing = [k for k, (a, b) in enumerate(zip(ran(documents[0]["schedulers"][0]), ran(documents[2]["schedulers"][0])))
                 if a != b]  # (warmup starts at warmup_lr whatever --lr is)
    assert (f"scheduler 1 (CosineLRScheduler): {len(differing)} of 6 optimizer steps ran with a different LR, first at "
            f"step {differing[0]}") in lines[2]


def test_warnings_of_the_fix_name_the_scripts_line_under_the_audit(capsys, tmp_path):
    script = tmp_path / "lagging.py"
    script.write_text("import torch, timm.scheduler\n"
                      "optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)\n"
                      "scheduler = timm.scheduler.CosineLRScheduler(optimizer, t_initial=4)\n"
                      "for epoch in range(3):\n"
                      "    optimizer.step()\n"
                      "    scheduler.step(epoch)\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert audit(capsys, "--fix", script)[0] == 1
    lags = [w for w in caught if issubclass(w.category, timm_sched_fix.ScheduleLagWarning)]
    assert [(Path(w.filename).name, w.lineno) for w in lags] == [("lagging.py", 6)]


# -- real processes ------------------------------------------------------------------------------------

@pytest.mark.release_independent("the files written and matplotlib's output; what the audit finds is checked on every "
                                "release by the other tests")
def test_csv_has_a_row_per_step_and_group_and_the_plot_is_a_png_of_the_documented_size(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    code, out, _ = audit(capsys, "--out", tmp_path / "trace.csv", "--plot", tmp_path / "trace.png", EXAMPLE,
                         "--epochs", EPOCHS, "--updates-per-epoch", UPDATES)
    assert code == 1 and f"wrote {tmp_path / 'trace.png'}" in out, out
    rows = (tmp_path / "trace.csv").read_text().splitlines()
    assert rows[0] == "scheduler,class,step,epoch,t,group,ran_lr,schedule_lr,wrong,cause"
    assert len(rows) == 1 + EPOCHS * UPDATES and rows[1].endswith(",True,missing pre-advance")
    with Image.open(tmp_path / "trace.png") as image:
        assert image.format == "PNG" and image.size == (1200, 600)


def installed_timm_scales_noise_by_std():
    base = compat.installed_base_step_update()
    return base is not None and base.noise_scaled_by_std


@pytest.mark.release_independent("drives its own second release (1.0.24) against the environment's own timm")
@pytest.mark.skipif(not installed_timm_scales_noise_by_std() or Path(timm.__file__).resolve().parent.parent
                    not in site_package_dirs(), reason="needs the environment's own timm >= 1.0.31 (noise_std)")
def test_against_an_older_release_names_the_steps_whose_noise_moved(capsys, tmp_path):
    """timm 1.0.31 scales normal LR noise by noise_std, 1.0.24 ignores it: with --lr-noise-std 0.5 every step in the
    noise range but the first (which both run with the constructor's value) differs."""
    cache = ROOT / ".nox" / "timm"
    try:
        releases.release_dir("1.0.24", str(cache))
    except UsageError as error:
        pytest.skip(f"timm 1.0.24 cannot be installed here: {error}")
    code, out, _ = audit(capsys, "--against-timm", "1.0.24", "--timm-cache", cache, EXAMPLE, "--epochs", EPOCHS,
                         "--updates-per-epoch", UPDATES, "--lr-noise-std", "0.5")
    noisy = [t for t in range(1, EPOCHS * UPDATES) if t < 0.5 * EPOCHS * UPDATES]  # noise=(0.0, 0.5) of the run
    assert code == 1, out
    assert (f"scheduler 1 (CosineLRScheduler): {len(noisy)} of {EPOCHS * UPDATES} optimizer steps ran with a "
            f"different LR, first at step {noisy[0]}") in out
    assert f"against timm 1.0.24: the LRs differ from timm {timm.__version__}'s" in out
    table = out[out.index("step  t  ran (timm"):].splitlines()[1:1 + len(noisy)]
    assert [int(row.split()[0]) for row in table] == noisy


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.release_independent("torchrun and the ranks' hand-over do not depend on the timm release")
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_two_ranks_under_torchrun_report_each_and_name_the_rank_that_disagrees(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
               TIMM_SCHED_FIX_AUDIT_RANKS_DIR=str(tmp_path / "ranks"))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                             "127.0.0.1", "--master_port", str(free_port()), "-m", "timm_sched_fix", "audit",
                             SCRIPTS / "two_ranks.py", "--rank-1-lr", "0.2"], capture_output=True, text=True,
                            env=env, timeout=600, check=False)
    out = result.stdout
    assert result.returncode != 0, out  # rank 0 exits 1: its ranks disagree
    for rank in (0, 1):
        assert f"timm-sched-fix audit (rank {rank} of 2): " in out, out + result.stderr
    assert out.count("audit: every one of the 12 optimizer steps ran with the LR its schedule defines") == 2
    assert "ranks disagree: rank 1 ran other LRs than rank 0 (2 ranks)" in out
    assert "scheduler 1 (CosineLRScheduler): 9 of 12 optimizer steps ran with a different LR, first at step 3" in out
    assert not (tmp_path / "ranks").exists()


@pytest.mark.release_independent("torchrun, the start-up hook and the hand-over of reports do not depend on the timm "
                                "release")
@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend")
def test_audit_outside_torchrun_reaches_every_rank_through_the_environment(installed_python, tmp_path):
    """``timm-sched-fix audit -m torch.distributed.run ... script.py``: the ranks are processes the audit's script
    starts; the start-up hook of the installed package audits each and hands its report back (--fix, so every rank
    also runs patched)."""
    from installed import environment

    result = subprocess.run([str(installed_python), "-m", "timm_sched_fix", "audit", "--fix", "-m",
                             "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                             "--master_port", str(free_port()), str(SCRIPTS / "two_ranks.py"), "--rank-1-lr", "0.2"],
                            capture_output=True, text=True, env=environment(), cwd=tmp_path, timeout=600, check=False)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr[-3000:]
    for rank in (0, 1):
        assert f"timm-sched-fix audit (rank {rank} of 2): " in out, out + result.stderr[-3000:]
    assert "with the fix: patch(convention='end', auto=False, on_lag='warn')" in out
    assert out.count("audit: every one of the 12 optimizer steps ran with the LR its schedule defines") == 2
    assert "ranks disagree: rank 1 ran other LRs than rank 0 (2 ranks)" in out
