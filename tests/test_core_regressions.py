"""Core defects found by the property, resume and copy tests of issue 7, each kept as a direct test."""

import threading

import pytest
import timm
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import _compat as compat
from timm_sched_fix._timing import timing_of

from support import StepRecorder, stock_scheduler


def test_tensor_lr_filled_in_place_does_not_move_the_schedule_base():
    """Stock timm stores the LR tensor itself as ``initial_lr`` and base value; filling v(0) = 0 into it
    made every later value 0 (found by hypothesis: WSD, warmup_lr_init=0, tensor LR)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=torch.tensor(0.1, dtype=torch.float64))
    tensor = optimizer.param_groups[0]["lr"]
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, warmup_t=1, warmup_lr_init=0.0)
    recorder = StepRecorder(optimizer)
    optimizer.step()
    scheduler.step(1)
    optimizer.step()
    reference = timm.scheduler.CosineLRScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                                                 t_initial=10, warmup_t=1, warmup_lr_init=0.0)
    reference.step(1)
    assert optimizer.param_groups[0]["lr"] is tensor
    assert recorder.first_group() == [0.0, reference.optimizer.param_groups[0]["lr"]]
    assert float(optimizer.param_groups[0]["initial_lr"]) == 0.1


def test_auto_mode_round_trip_after_steps_keeps_advancing():
    """A state dict saved after optimizer steps ran with v(t) forgot them: after loading, auto mode ran the
    next step with v(t) again instead of v(t + 1) (found by hypothesis: Cosine, auto, round trip)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=4, t_in_epochs=False, auto=True)
    recorder = StepRecorder(optimizer)
    optimizer.step()
    optimizer.step()
    scheduler.load_state_dict(scheduler.state_dict())
    optimizer.step()
    reference = timm.scheduler.CosineLRScheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1),
                                                 t_initial=4, t_in_epochs=False)
    expected = []
    for t in range(3):
        reference.step_update(t)
        expected.append(reference.optimizer.param_groups[0]["lr"])
    assert recorder.first_group() == expected


def test_plateau_keeps_its_reduced_lr_through_a_state_dict():
    """Past warmup a Plateau's LR lives in the optimizer; re-wrapping then loading the state dict put back the base
    LR instead of the reduced one (found by hypothesis: Plateau, rewrap). Re-wrapping no longer pre-advances over
    LRs the constructor did not leave, and the load keeps the LRs that match its record."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = timm_sched_fix.wrap(stock_scheduler("PlateauLRScheduler", optimizer,
                                                    dict(patience_t=0, decay_rate=0.5, mode="min")))
    for epoch in range(1, 4):
        optimizer.step()
        scheduler.step(epoch, 1.0)  # no improvement after the first: halves every epoch
    reduced = optimizer.param_groups[0]["lr"]
    saved = scheduler.state_dict()
    scheduler = timm_sched_fix.wrap(timm_sched_fix.unwrap(scheduler))
    assert optimizer.param_groups[0]["lr"] == reduced and scheduler.last_t is None  # not the constructor's LRs
    scheduler.load_state_dict(saved)
    assert reduced < 0.1 and optimizer.param_groups[0]["lr"] == reduced
    scheduler.step(4, 1.0)
    assert optimizer.param_groups[0]["lr"] == reduced * 0.5


def test_auto_mode_call_without_index_after_a_skipped_call_follows_the_optimizer_steps():
    """Auto mode needs no calls; under "begin" a first ``step_update()`` made only before step 1 counted
    as call 0 and re-applied v(0) (found by hypothesis: Cosine, begin, auto, skip then counting)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=2, t_in_epochs=False, auto=True,
                                                 convention="begin")
    recorder = StepRecorder(optimizer)
    optimizer.step()
    scheduler.step_update()
    optimizer.step()
    assert recorder.first_group() == [0.1, 0.05]


def test_constructor_begun_before_patch_is_not_fixed_half_way():
    """patch() while a subclass constructor ran: the parent's patched ``__init__`` fixed and pre-advanced the
    half-built scheduler (AttributeError 'warmup_t' under contention, test_patch_contention)."""

    class PatchesMidway(timm.scheduler.CosineLRScheduler):
        def __init__(self, optimizer):
            timm_sched_fix.patch()
            super().__init__(optimizer, t_initial=10, warmup_t=2, warmup_lr_init=1e-3)

    try:
        scheduler = PatchesMidway(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
        assert timing_of(scheduler) is None
    finally:
        timm_sched_fix.unpatch()


def test_unpatch_during_construction_finishes_the_scheduler_fixed_entirely():
    """A constructor in flight during unpatch() began while patched: the scheduler ends up fixed in every part
    (timing, routing, counting), as every scheduler built while patched stays, never half-fixed."""
    with timm_sched_fix.patched():
        class UnpatchesMidway(timm.scheduler.CosineLRScheduler):
            def __init__(self, optimizer):
                timm_sched_fix.unpatch()
                super().__init__(optimizer, t_initial=10, warmup_t=2, warmup_lr_init=1e-3)

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    timm_sched_fix.patch()
    scheduler = UnpatchesMidway(optimizer)
    assert not timm_sched_fix.is_patched()
    assert timing_of(scheduler) is not None and type(scheduler).__mro__[1] is UnpatchesMidway
    assert len(optimizer._optimizer_step_pre_hooks) == 1
    scheduler.step(1)  # routed: v(1) through the timing
    assert scheduler.last_t == 1


@pytest.mark.skipif(not compat.PLATEAU_PASSES_VERBOSE,
                    reason=f"timm {timm.__version__} on this torch constructs without the plateau_verbose swap")
def test_constructors_in_two_threads_swap_reduce_lr_on_plateau_one_at_a_time():
    """Quirk plateau_verbose swaps torch's ReduceLROnPlateau during every constructor; two threads overlapping
    put back each other's swap (WrapperNotFoundError, or torch's class left wrapped: test_patch_contention)."""
    original = torch.optim.lr_scheduler.ReduceLROnPlateau
    first_inside, release_first, errors = threading.Event(), threading.Event(), []

    def first_constructor():
        first_inside.set()
        release_first.wait(10)

    def construct(constructor):
        try:
            compat.for_installed_torch(constructor)()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    first = threading.Thread(target=construct, args=(first_constructor,))
    first.start()
    assert first_inside.wait(10)
    second = threading.Thread(target=construct, args=(lambda: None,))
    second.start()
    second.join(0.2)
    try:
        assert second.is_alive(), "the second constructor swapped ReduceLROnPlateau while the first had it swapped"
    finally:
        release_first.set()
        first.join(10)
        second.join(10)
    assert not errors, errors
    assert torch.optim.lr_scheduler.ReduceLROnPlateau is original
