"""A real ``pl.Trainer`` on CPU (tiny model, random data): every optimizer step runs with v(k) / v(e) through
``TorchScheduler`` and through the shipped ``lr_scheduler_step``; Lightning's documented override is one
epoch late (and the patch says so); a resume from a Lightning checkpoint mid-run continues the schedule."""

import contextlib
import warnings

import pytest
import pytorch_lightning as pl
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix.lightning import TimmLRSchedulerStep

from support import BASE_LR, StepRecorder, expected_trace, reference_values, stock_scheduler

EPOCHS, BATCHES = 6, 3
EPOCH_KWARGS = dict(t_initial=EPOCHS, warmup_t=2, warmup_lr_init=1e-3)
UPDATE_KWARGS = dict(t_initial=EPOCHS * BATCHES, warmup_t=4, warmup_lr_init=1e-3, t_in_epochs=False)
INTERVAL_KWARGS = {"epoch": EPOCH_KWARGS, "step": UPDATE_KWARGS}


class TinyModule(pl.LightningModule):
    """One linear layer; ``configure_optimizers`` returns what ``make_scheduler(optimizer)`` builds."""

    batches = BATCHES

    def __init__(self, make_scheduler, interval):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.make_scheduler, self.interval = make_scheduler, interval
        self.recorder = None

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        return torch.nn.functional.mse_loss(self.layer(inputs), targets)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(self.batches * 2, 4, generator=generator),
                                              torch.randn(self.batches * 2, 1, generator=generator))
        return torch.utils.data.DataLoader(data, batch_size=2)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=BASE_LR)
        scheduler = self.make_scheduler(optimizer)
        self.recorder = StepRecorder(optimizer)  # after the scheduler, so it sees what each step runs with
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": self.interval}}


class DocumentedOverride(TinyModule):
    """Lightning's documented ``lr_scheduler_step`` for timm schedulers."""

    def lr_scheduler_step(self, scheduler, metric):
        scheduler.step(epoch=self.current_epoch)


class WithMixin(TimmLRSchedulerStep, TinyModule):
    pass


def stock(interval):
    return lambda optimizer: timm.scheduler.CosineLRScheduler(optimizer, **INTERVAL_KWARGS[interval])


def adapter(interval):
    return lambda optimizer: timm_sched_fix.TorchScheduler(stock(interval)(optimizer), interval=interval)


def fit(module, *, max_epochs=EPOCHS, checkpoint_dir=None, ckpt_path=None):
    callbacks = [pl.callbacks.ModelCheckpoint(dirpath=checkpoint_dir, filename="{epoch}", save_top_k=-1)] \
        if checkpoint_dir else []
    trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False,
                         enable_checkpointing=bool(checkpoint_dir), callbacks=callbacks, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=1)
    with warnings.catch_warnings():
        # Lightning's own notices about this tiny setup, not about scheduling
        warnings.filterwarnings("ignore", message=".*(does not have many workers|exists and is not empty|LeafSpec).*")
        trainer.fit(module, ckpt_path=ckpt_path)
    return module.recorder.first_group()


def expected(interval):
    on_epochs = interval == "epoch"
    periods = EPOCHS if on_epochs else EPOCHS * BATCHES
    values = reference_values("CosineLRScheduler", INTERVAL_KWARGS[interval], 1, periods, on_epochs=on_epochs)
    return [lrs[0] for lrs in expected_trace(values, epochs=EPOCHS, batches=BATCHES, on_epochs=on_epochs)]


def wrong_steps(trace, interval, first_step=0):
    want = expected(interval)[first_step:]
    assert len(trace) == len(want), f"{len(trace)} optimizer steps ran, expected {len(want)}"
    return sum(1 for got, value in zip(trace, want) if got != pytest.approx(value, rel=1e-12))


def test_documented_override_runs_15_of_18_steps_wrong():
    assert wrong_steps(fit(DocumentedOverride(stock("epoch"), "epoch")), "epoch") == 15


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_adapter_needs_no_override_and_every_step_is_right(interval):
    with warnings.catch_warnings():
        warnings.simplefilter("error", timm_sched_fix.ScheduleCallWarning)
        warnings.simplefilter("error", timm_sched_fix.ScheduleLagWarning)
        assert wrong_steps(fit(TinyModule(adapter(interval), interval)), interval) == 0


@pytest.mark.parametrize("interval", ["epoch", "step"])
def test_shipped_lr_scheduler_step_makes_every_step_right(interval):
    assert wrong_steps(fit(WithMixin(stock(interval), interval)), interval) == 0


def test_shipped_lr_scheduler_step_refuses_an_interval_of_the_other_unit():
    with pytest.raises(ValueError, match='"interval": \'step\''):
        fit(WithMixin(stock("step"), "epoch"))


def test_patch_detects_the_documented_lag_in_a_real_trainer():
    with timm_sched_fix.patched(), pytest.warns(timm_sched_fix.ScheduleLagWarning, match=r"current_epoch \+ 1") as caught:
        trace = fit(DocumentedOverride(stock("epoch"), "epoch"))
    assert len([w for w in caught if issubclass(w.category, timm_sched_fix.ScheduleLagWarning)]) == 1
    assert wrong_steps(trace, "epoch") == 15  # on_lag="warn" applies what was asked, like stock timm


def test_patch_with_on_lag_fix_corrects_the_documented_override():
    with timm_sched_fix.patched(on_lag="fix"):
        assert wrong_steps(fit(DocumentedOverride(stock("epoch"), "epoch")), "epoch") == 0


@pytest.mark.parametrize("module_class, make_scheduler, interval", [
    (TinyModule, adapter, "epoch"),
    (TinyModule, adapter, "step"),
    (WithMixin, stock, "epoch"),
    (WithMixin, stock, "step"),
], ids=["adapter-epoch", "adapter-step", "lr_scheduler_step-epoch", "lr_scheduler_step-step"])
def test_resume_from_a_checkpoint_mid_run_continues_the_schedule(tmp_path, module_class, make_scheduler, interval):
    resume_epoch = 2  # resume from the checkpoint ModelCheckpoint wrote at the end of epoch 2 (0-based)
    assert wrong_steps(fit(module_class(make_scheduler(interval), interval), checkpoint_dir=tmp_path), interval) == 0
    resumed = fit(module_class(make_scheduler(interval), interval), checkpoint_dir=tmp_path,
                  ckpt_path=tmp_path / f"epoch={resume_epoch}.ckpt")
    assert wrong_steps(resumed, interval, first_step=(resume_epoch + 1) * BATCHES) == 0


PLATEAU_METRIC = 1.0
PLATEAU_KWARGS = dict(warmup_t=2, warmup_lr_init=1e-3, patience_t=1, decay_rate=0.5, mode="min")


class PlateauModule(TinyModule):
    """Logs a metric that never improves; Lightning passes it to the scheduler (``reduce_on_plateau``)."""

    def training_step(self, batch, batch_idx):
        self.log("score", PLATEAU_METRIC, on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def configure_optimizers(self):
        config = super().configure_optimizers()
        config["lr_scheduler"].update(reduce_on_plateau=True, monitor="score")
        return config


def plateau_adapter(optimizer):
    return timm_sched_fix.TorchScheduler(stock_scheduler("PlateauLRScheduler", optimizer, PLATEAU_KWARGS))


def test_plateau_adapter_gets_the_metric_from_lightning():
    trace = fit(PlateauModule(plateau_adapter, "epoch"))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    reference = stock_scheduler("PlateauLRScheduler", optimizer, PLATEAU_KWARGS)
    values = []
    for epoch in range(EPOCHS):
        with warnings.catch_warnings():  # timm <= 1.0.15 passes the epoch torch deprecated
            warnings.filterwarnings("ignore", "The epoch parameter", UserWarning)
            reference.step(epoch, PLATEAU_METRIC)
        values.append(optimizer.param_groups[0]["lr"])
    assert len(set(values[PLATEAU_KWARGS["warmup_t"]:])) > 1, "the metric must change the LR for this test to mean something"
    assert trace == pytest.approx([value for value in values for _ in range(BATCHES)], rel=1e-12)


# -- Lightning's "interval": "step" variant of the documented override (the first table row) --------------

STEP_EPOCHS, STEP_BATCHES = 5, 4


class PerStepOverride(TinyModule):
    """``"interval": "step"`` with ``scheduler.step(epoch=self.trainer.current_epoch)``: an epoch schedule stepped
    after every optimizer step with the epoch in progress."""

    batches = STEP_BATCHES

    def lr_scheduler_step(self, scheduler, metric):
        scheduler.step(epoch=self.trainer.current_epoch)


@pytest.mark.parametrize("name", ["CosineLRScheduler", "TanhLRScheduler"])
@pytest.mark.parametrize("on_lag", [None, "warn", "fix", "raise", "ignore"])
def test_per_step_override_runs_as_stock_with_advice_that_makes_it_right(name, on_lag):
    """Stock runs the first step of every epoch but the first with the previous epoch's value (4 of 20); so does
    the fix under every policy (the old rule took the repeated epoch for a lag: 15 of 20 under "fix"), and it says
    how to step once per epoch instead."""
    kwargs = dict(t_initial=STEP_EPOCHS, warmup_t=1, warmup_lr_init=1e-3)
    make = lambda optimizer: getattr(timm.scheduler, name)(optimizer, **kwargs)
    with timm_sched_fix.patched(on_lag=on_lag) if on_lag else contextlib.nullcontext(), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = fit(PerStepOverride(make, "step"), max_epochs=STEP_EPOCHS)
    values = reference_values(name, kwargs, 1, STEP_EPOCHS, on_epochs=True)
    want = [values[epoch][0] for epoch in range(STEP_EPOCHS) for _ in range(STEP_BATCHES)]
    assert len(trace) == len(want)
    assert sum(1 for got, value in zip(trace, want) if got != pytest.approx(value, rel=1e-12)) == 4
    ours = [str(w.message) for w in caught if issubclass(w.category, (timm_sched_fix.ScheduleCallWarning,
                                                                      timm_sched_fix.ScheduleLagWarning))]
    if on_lag in (None, "ignore"):
        assert ours == []
    else:
        [message] = ours
        assert "with the epoch in progress" in message and '"interval": "epoch"' in message
        assert "self.current_epoch + 1" in message and "TorchScheduler" in message


def test_the_documented_override_raises_at_the_second_epoch_under_raise():
    with timm_sched_fix.patched(on_lag="raise"), pytest.raises(timm_sched_fix.ScheduleLagError, match=r"step\(2\)"):
        fit(DocumentedOverride(stock("epoch"), "epoch"))
