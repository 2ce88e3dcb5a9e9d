"""patch()/unpatch() from 8 threads, 1,000 cycles in all, while 2 more threads construct schedulers: no
exception, every scheduler built while patched is fixed and stays fixed after the last unpatch(), every one
begun while unpatched is stock, none is half-fixed, and timm's attributes are the originals again (identity)."""

import sys
import threading
import time

import timm.scheduler
from test_patching import class_attributes

import timm_sched_fix
from timm_sched_fix import _patching as patching
from timm_sched_fix._timing import timing_of

from support import make_optimizer

PATCH_THREADS, CYCLES, BUILD_THREADS = 8, 1000, 2


def test_patch_and_unpatch_under_contention():
    before = class_attributes()
    # generation = unpatch() calls started, patches = patch() calls made
    state = {"generation": 0, "patched_generation": -1, "patches": 0}
    stop = threading.Event()
    errors: list[BaseException] = []
    built: list[tuple[object, bool, bool]] = []  # (scheduler, built entirely while patched, begun while unpatched)
    cycles = iter(range(CYCLES))
    cycles_lock = threading.Lock()

    def patcher():
        try:
            while True:
                with cycles_lock:
                    if next(cycles, None) is None:
                        return
                with patching._lock:  # the test's bookkeeping and the patch state change together
                    timm_sched_fix.patch()
                    state["patched_generation"] = state["generation"]
                    state["patches"] += 1
                time.sleep(0.001)  # let builders run while patched too, not only between cycles
                with patching._lock:
                    state["generation"] += 1
                    timm_sched_fix.unpatch()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    def builder():
        try:
            while not stop.is_set():
                with patching._lock:
                    generation, patches = state["generation"], state["patches"]
                    patched = state["patched_generation"] == generation and timm_sched_fix.is_patched()
                scheduler = timm.scheduler.CosineLRScheduler(make_optimizer(), t_initial=10, warmup_t=2,
                                                             warmup_lr_init=1e-3)
                fixed = timing_of(scheduler) is not None
                with patching._lock:
                    undisturbed = state["generation"] == generation and state["patches"] == patches
                if patched and undisturbed:
                    assert fixed, "a scheduler built while patched is not fixed"
                built.append((scheduler, patched and undisturbed, not patched and undisturbed))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often, so that calls really interleave
    try:
        builders = [threading.Thread(target=builder) for _ in range(BUILD_THREADS)]
        patchers = [threading.Thread(target=patcher) for _ in range(PATCH_THREADS)]
        for thread in builders + patchers:
            thread.start()
        for thread in patchers:
            thread.join(timeout=300)
        stop.set()
        for thread in builders:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(switch_interval)
        timm_sched_fix.unpatch()
    assert not errors, errors[:3]
    assert state["generation"] == CYCLES
    fixed_while_patched = sum(1 for _, patched, _ in built if patched)
    assert fixed_while_patched > 0, "no scheduler was built while patched: the test checked nothing"
    for scheduler, patched, unpatched in built:
        fixed = timing_of(scheduler) is not None
        assert fixed == (type(scheduler) is not timm.scheduler.CosineLRScheduler), "a half-fixed scheduler"
        if patched:
            assert fixed and scheduler.last_t == 0, "a scheduler built while patched is not fixed after unpatch()"
        if unpatched:
            assert not fixed, "a scheduler begun while unpatched is fixed"
    after = class_attributes()
    assert after.keys() == before.keys()
    assert all(after[key] is before[key] for key in before)
    stock_while_unpatched = sum(1 for _, _, unpatched in built if unpatched)
    print(f"\n{CYCLES} patch cycles from {PATCH_THREADS} threads; {len(built)} schedulers built, "
          f"{fixed_while_patched} of them entirely while patched (all fixed, and still after unpatch()), "
          f"{stock_while_unpatched} entirely while unpatched (all stock)")
