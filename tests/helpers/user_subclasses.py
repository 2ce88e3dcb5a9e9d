"""Scheduler subclasses and instance patches as users write them, for tests/test_user_subclasses.py.

A subclass is generated as source text from a set of method *shapes* and imported from a file (the fix reads an
override's source, as it would read the user's), once per distinct source. Each shape says how the loop calls the
scheduler and what the schedule's values v(t) are: those the subclass's own methods define.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import math
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.scheduler.scheduler import Scheduler

BASE_LR = 0.1
_DIRECTORY = Path(tempfile.mkdtemp(prefix="tsf_user_subclasses_"))
atexit.register(shutil.rmtree, _DIRECTORY, ignore_errors=True)
_MODULES: dict[str, types.ModuleType] = {}


@dataclass(frozen=True)
class Shape:
    """One override: its source (``{unit}``/``{index}`` filled in for the schedule's own call, ``{other}`` for the
    other unit's), how the loop calls the scheduler, how v(t) is written for the oracle, and whether the fix must
    leave the scheduler as stock timm runs it (every adapter)."""

    method: str  # "unit", "other", or a method name
    source: str
    call: str = "index"  # "index": the loop passes indices; "count": the loop calls without one
    oracle: str = "own"  # "own": the scheduler's own unit method at t; "base": timm's
    stock: bool = False  # patch()/wrap() leave it as stock timm runs it
    needs: str | None = None  # a base Scheduler method the release must have


UNIT_SHAPES = {
    "pass": Shape("unit", "def {unit}(self, {index}, metric=None):\n    self.own_calls += 1\n"
                          "    super().{unit}({index}, metric)\n"),
    "fewer": Shape("unit", "def {unit}(self, {index}):\n    self.own_calls += 1\n    super().{unit}({index})\n"),
    "more": Shape("unit", "def {unit}(self, {index}, metric=None, note='x', *, extra=1):\n"
                          "    super().{unit}({index}, metric=metric)\n"),
    "star": Shape("unit", "def {unit}(self, *args, **kwargs):\n    super().{unit}(*args, **kwargs)\n"),
    "post_scale": Shape("unit", "def {unit}(self, {index}, metric=None):\n    super().{unit}({index}, metric)\n"
                                "    for group in self.optimizer.param_groups:\n"
                                "        group[self.param_group_field] *= 0.5\n"),
    "explicit_base": Shape("unit", "def {unit}(self, {index}, metric=None):\n"
                                   "    Base.{unit}(self, {index}, metric)\n"),
    "count_no_index": Shape("unit", "def {unit}(self):\n    self.n += 1\n    super().{unit}(self.n)\n",
                            call="count", oracle="base", stock=True),
    "count_default": Shape("unit", "def {unit}(self, {index}=None, metric=None):\n"
                                   "    self.n = self.n + 1 if {index} is None else {index}\n"
                                   "    super().{unit}(self.n, metric)\n", call="count", oracle="base", stock=True),
    "shift": Shape("unit", "def {unit}(self, {index}, metric=None):\n    super().{unit}({index} + 1, metric)\n",
                   oracle="base", stock=True),
    "no_super": Shape("unit", "def {unit}(self, {index}, metric=None):\n"
                              "    self.update_groups([value * 0.9 ** {index} for value in self.base_values])\n",
                      stock=True),
    # the other unit's call, counting by itself (a PyTorch-style step() after every optimizer step)
    "other_count": Shape("other", "def {other}(self, {other_index}=None, metric=None):\n    self.n += 1\n"
                                  "    super().{unit}(self.n, metric)\n", call="other", oracle="base", stock=True),
}
OTHER_SHAPES = {
    "values_scale": Shape("_get_lr", "def _get_lr(self, t):\n    self.value_calls += 1\n"
                                     "    return [value * 0.5 for value in super()._get_lr(t)]\n"),
    "values_own": Shape("_get_lr", "def _get_lr(self, t):\n    return [value * 0.9 ** t for value in self.base_values]\n"),
    "add_noise": Shape("_add_noise", "def _add_noise(self, lrs, t):\n    return [value * 0.75 for value in lrs]\n"),
    "is_apply_noise": Shape("_is_apply_noise", "def _is_apply_noise(self, t):\n    return t >= 1\n",
                            needs="_is_apply_noise"),
    "calculate_noise": Shape("_calculate_noise", "def _calculate_noise(self, t):\n    return 0.25\n",
                             needs="_calculate_noise"),
    "update_groups": Shape("update_groups", "def update_groups(self, values):\n    super().update_groups(values)\n"
                                            "    self.optimizer.param_groups[0][self.param_group_field] *= 2.0\n"),
    "state_dict": Shape("state_dict", "def state_dict(self):\n    state = super().state_dict()\n"
                                      "    state['user_note'] = 1\n    return state\n"),
    "load_state_dict": Shape("load_state_dict", "def load_state_dict(self, state_dict, strict=True):\n"
                                                "    state_dict = dict(state_dict)\n"
                                                "    state_dict.pop('user_note', None)\n"
                                                "    super().load_state_dict(state_dict)\n"),
}
#: Instance patches: (method, what replaces it, made from the original bound method); applied after construction.
INSTANCE_PATCHES = {
    "values_scale": ("_get_lr", lambda original: lambda t: [value * 0.5 for value in original(t)], None),
    "is_apply_noise": ("_is_apply_noise", lambda original: lambda t: True, "_is_apply_noise"),
    "calculate_noise": ("_calculate_noise", lambda original: lambda t: -0.25, "_calculate_noise"),
    "add_noise_bound": ("_add_noise", lambda original: types.MethodType(
        lambda self, lrs, t: [value * 0.8 for value in lrs], original.__self__), None),
}


def available(shape: Shape) -> bool:
    return shape.needs is None or hasattr(Scheduler, shape.needs)


def subclass(base: type, base_expression: str, on_epochs: bool, shapes: tuple[str, ...]) -> type:
    """The subclass of ``base`` with the given shapes (names of UNIT_SHAPES/OTHER_SHAPES)."""
    unit, other = ("step", "step_update") if on_epochs else ("step_update", "step")
    names = {"unit": unit, "other": other, "index": "epoch" if on_epochs else "num_updates",
             "other_index": "num_updates" if on_epochs else "epoch"}
    body = ["def __init__(self, *args, **kwargs):", "    self.n = 0", "    self.own_calls = 0",
            "    self.value_calls = 0", "    super().__init__(*args, **kwargs)", ""]
    for name in shapes:
        shape = UNIT_SHAPES.get(name) or OTHER_SHAPES[name]
        body.extend(shape.source.format(**names).splitlines() + [""])
    source = (f"import timm.scheduler\nimport timm_sched_fix\nBase = {base_expression}\n\n\n"
              f"class User{base.__name__}(Base):\n" + "\n".join("    " + line if line else "" for line in body))
    key = hashlib.sha1(source.encode()).hexdigest()[:16]
    module = _MODULES.get(key)
    if module is None:
        path = _DIRECTORY / f"tsf_user_{key}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        _MODULES[key] = module
    return getattr(module, f"User{base.__name__}")


def stock_by(shapes: tuple[str, ...]) -> bool:
    return any((UNIT_SHAPES.get(name) or OTHER_SHAPES[name]).stock for name in shapes)


@dataclass
class Loop:
    on_epochs: bool
    epochs: int
    batches: int
    style: str  # "next" (index of the next period, after it), "lag" (the one just run), "before" (before each)
    call: str  # "index", "count" or "other" (from the shapes)
    save_load_at: int | None = None
    ran: list[list[float]] = field(default_factory=list)

    def index_of(self, k: int) -> int:
        """The schedule index optimizer step k (from 0) must run with."""
        return k // self.batches if self.on_epochs else k

    def run(self, scheduler: Any, optimizer: torch.optim.Optimizer) -> list[list[float]]:
        ran: list[list[float]] = []
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: ran.append([float(group["lr"]) for group in opt.param_groups]))
        params = [p for group in optimizer.param_groups for p in group["params"]]
        unit = "step" if self.on_epochs else "step_update"
        call = getattr(scheduler, unit) if self.call != "other" else scheduler.step
        for epoch in range(self.epochs):
            if self.on_epochs and self.style == "before" and self.call == "index":
                call(epoch)
            for batch in range(self.batches):
                k = epoch * self.batches + batch
                if not self.on_epochs and self.style == "before" and self.call == "index":
                    call(k)
                for p in params:
                    p.grad = torch.ones_like(p)
                optimizer.step()
                if not self.on_epochs:
                    self._after(call, k + 1)
            if self.on_epochs:
                self._after(call, epoch + 1)
            if self.save_load_at == epoch:
                scheduler.load_state_dict(scheduler.state_dict())
        return ran

    def _after(self, call: Any, done: int) -> None:
        if self.call != "index":
            call()
        elif self.style == "next":
            call(done)
        elif self.style == "lag":
            call(done - 1)


def oracle(make: Any, patches: tuple[str, ...], shapes: tuple[str, ...], on_epochs: bool, last_t: int,
           timm_class: type) -> list[list[float]]:
    """v(0..last_t) as the subclass's own methods (and the instance's) define them, on a stock scheduler."""
    optimizer = make_optimizer()
    scheduler = make(optimizer)
    apply_patches(scheduler, patches)
    unit = "step" if on_epochs else "step_update"
    own = all((UNIT_SHAPES.get(name) or OTHER_SHAPES[name]).oracle == "own" for name in shapes)
    write = getattr(scheduler, unit) if own else (lambda t: getattr(timm_class, unit)(scheduler, t))
    values = []
    for t in range(last_t + 1):
        write(t)
        values.append([float(group["lr"]) for group in optimizer.param_groups])
    return values


def apply_patches(scheduler: Any, patches: tuple[str, ...]) -> None:
    for name in patches:
        method, make, _ = INSTANCE_PATCHES[name]
        setattr(scheduler, method, make(getattr(scheduler, method)))


def patch_available(name: str) -> bool:
    needs = INSTANCE_PATCHES[name][2]
    return needs is None or hasattr(Scheduler, needs)


def make_optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                            {"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.5}], lr=BASE_LR)


def wrong(ran: list[list[float]], values: list[list[float]], loop: Loop) -> int:
    """Optimizer steps whose LRs differ from v(t) of their period."""
    return sum(1 for k, lrs in enumerate(ran)
               if not all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
                          for a, b in zip(lrs, values[loop.index_of(k)])))
