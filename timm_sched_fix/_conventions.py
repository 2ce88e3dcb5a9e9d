"""What each calling convention means: which index a ``step``/``step_update`` call carries, and so what follows.

:mod:`timm_sched_fix.options` holds the accepted names (``CONVENTIONS``, the ``Convention`` type) and the default;
this module holds what each one means, for every module that acts on it (the timing decision, the lag rule's
advice, the PyTorch-protocol adapter). Adding or changing a convention is its name there and its entries here.

- ``"end"`` (timm's own): a call comes at the END of a period (an epoch, an optimizer update) and carries the index
  of the NEXT one: ``step(epoch + 1)`` after each epoch, ``step_update(num_updates)`` after each optimizer step.
- ``"begin"``: a call comes at the BEGINNING of a period and carries the number of periods completed:
  ``step(epoch)`` before each epoch, ``step_update(num_updates)`` before each optimizer step.

Under both a call applies v(index) to the optimizer steps that follow it; they differ in where the first call comes
after the pre-advance to v(0): hence in the index a call without an index applies next
(:func:`next_index_after_move`), in whether a call before any optimizer step skips a value
(:func:`calls_after_the_period`), and in the call a lag warning advises (:func:`lag_advice`).
Kept free of torch and timm imports.
"""

from __future__ import annotations

#: Per convention: whether its calls come after the period they close, carrying the next period's index.
CALLS_AFTER_THE_PERIOD = {"end": True, "begin": False}

#: Per convention and unit (per epoch: True), the calls that make a loop found one period late right; ``{next!r}``
#: is the index its late call should have passed.
_LAG_ADVICE = {
    ("end", True): ("timm expects the index of the next epoch, step(epoch + 1) after each epoch: here "
                    "step({next!r}); in Lightning's lr_scheduler_step, scheduler.step(epoch=self.current_epoch + 1) "
                    "(or the TimmLRSchedulerStep mixin of timm_sched_fix.lightning, or return "
                    "timm_sched_fix.TorchScheduler(scheduler) with \"interval\": \"epoch\" and no override). "),
    ("begin", True): ("convention='begin' expects the number of epochs completed, step(epoch) before each epoch: "
                      "here step({next!r}). "),
    ("end", False): ("timm expects step_update(num_updates) after each optimizer step, num_updates counting the "
                     "updates done including this one: here step_update({next!r}) (or pass auto=True and drop the "
                     "calls). "),
    ("begin", False): ("convention='begin' expects the number of updates completed, step_update(num_updates) before "
                       "each optimizer step: here step_update({next!r}) (or pass auto=True and drop the calls). "),
}


def calls_after_the_period(convention: str) -> bool:
    """Whether calls under ``convention`` come after the period they close (a first call before any optimizer step
    then skips the schedule's first value)."""
    return CALLS_AFTER_THE_PERIOD[convention]


def next_index_after_move(convention: str, t: float) -> float:
    """The index the first call after a pre-advance to v(t) carries, which a call without an index then applies:
    the call closing period t carries t + 1 (``"end"``), the call opening it t (``"begin"``)."""
    return t + 1 if CALLS_AFTER_THE_PERIOD[convention] else t


def lag_advice(convention: str, on_epochs: bool, index: float) -> str:
    """The lag warning's advice: the call that makes right a loop whose call passed ``index``, one period late."""
    return _LAG_ADVICE[convention, on_epochs].format(next=index + 1)
