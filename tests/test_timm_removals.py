"""timm removes scheduler classes (PlateauLRScheduler is deprecated in 1.0.31, "will be removed"): on a timm without
one, the package imports, patches, wraps, builds drop-ins and ``TorchScheduler`` for the classes that exist,
``check`` lists those, and timm's factories give for the removed name exactly what they give without the fix.

Run against a copy of the installed timm (the release under test) with the Plateau module deleted, as timm would
delete it: its module, its imports in ``timm.scheduler`` and the factory, and the factory's ``'plateau'`` branch.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm

import timm_sched_fix

#: Run in a fresh interpreter that imports the timm copy first; prints one JSON line of findings.
PROBE = r"""
import contextlib, io, json, warnings
import torch, timm, timm.scheduler
import timm_sched_fix
from timm_sched_fix import cli
from timm_sched_fix import _compat as compat
from timm_sched_fix import _dropin as dropin
from timm_sched_fix.check.first_step import check_rows

found = {"timm": timm.__file__, "has_plateau": hasattr(timm.scheduler, "PlateauLRScheduler"),
         "classes": sorted(compat.scheduler_classes()), "dropins": sorted(dropin.SCHEDULER_CLASSES)}
try:
    timm_sched_fix.PlateauLRScheduler
    found["dropin_plateau"] = "exists"
except AttributeError as error:
    found["dropin_plateau"] = "AttributeError"
rows = check_rows()
found["check_classes"] = sorted({row.scheduler for row in rows})
found["check_wrong"] = [f"{row.scheduler} [{row.config}]" for row in rows if not row.fixed_right]
output = io.StringIO()
with contextlib.redirect_stdout(output):
    found["check_exit"] = cli.main(["check", "--format", "json"])
found["check_json_classes"] = sorted({row["scheduler"] for row in json.loads(output.getvalue())["rows"]})

def optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

def first_lr(scheduler, opt):
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"]))
    opt.step()
    return seen[0]

NOISY = dict(t_initial=10, noise_range_t=(0, 10), noise_pct=0.5)  # v(0) is noisy; stock's first step is not

def v0(on_updates):
    opt = optimizer()
    stock = timm.scheduler.CosineLRScheduler(opt, t_in_epochs=not on_updates, **NOISY)
    (stock.step_update if on_updates else stock.step)(0)
    return opt.param_groups[0]["lr"]

found["v0"], found["v0_updates"] = v0(False), v0(True)
opt = optimizer()
found["stock_first_lr"] = first_lr(timm.scheduler.CosineLRScheduler(opt, **NOISY), opt)
with timm_sched_fix.patched():
    opt = optimizer()
    found["patched_first_lr"] = first_lr(timm.scheduler.CosineLRScheduler(opt, **NOISY), opt)
opt = optimizer()
found["wrapped_first_lr"] = first_lr(timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(opt, **NOISY)), opt)
opt = optimizer()
found["dropin_first_lr"] = first_lr(timm_sched_fix.CosineLRScheduler(opt, **NOISY), opt)
opt = optimizer()
adapter = timm_sched_fix.TorchScheduler(timm.scheduler.CosineLRScheduler(opt, t_in_epochs=False, **NOISY))
found["adapter_first_lr"] = first_lr(adapter, opt)

def outcome(call):  # for a name it does not know, timm's factory raises (1.0.x) or gives no scheduler (0.9.x)
    try:
        result = call()
    except Exception as error:
        return ["raised", type(error).__name__, str(error)]
    return ["returned", repr(result[0] if isinstance(result, tuple) else result)]

if hasattr(timm.scheduler, "create_scheduler_v2"):
    found["v2_plateau"] = [outcome(lambda: timm.scheduler.create_scheduler_v2(optimizer(), sched="plateau")),
                           outcome(lambda: timm_sched_fix.create_scheduler_v2(optimizer(), sched="plateau"))]
    found["v2_unknown"] = [outcome(lambda: timm.scheduler.create_scheduler_v2(optimizer(), sched="no-such")),
                           outcome(lambda: timm_sched_fix.create_scheduler_v2(optimizer(), sched="no-such"))]
    fixed = timm_sched_fix.create_scheduler_v2(optimizer(), sched="cosine", num_epochs=10, warmup_epochs=2)[0]
    found["v2_cosine_fixed"] = isinstance(fixed, timm_sched_fix.FixedScheduler)
print(json.dumps(found))
"""


def timm_without_plateau(target: Path) -> Path:
    """A copy of the imported timm package under ``target`` with PlateauLRScheduler removed; returns ``target``."""
    source = Path(timm.__file__).parent
    copy = target / "timm"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    scheduler = copy / "scheduler"
    (scheduler / "plateau_lr.py").unlink()
    for name in ("__init__.py", "scheduler_factory.py"):
        path = scheduler / name
        text = path.read_text()
        text, removed = re.subn(r"^from \.plateau_lr import PlateauLRScheduler\n", "", text, flags=re.MULTILINE)
        assert removed == 1, f"timm {timm.__version__}'s {name} does not import PlateauLRScheduler as expected"
        # the factory's branch for the removed class: 'plateau' becomes an unknown name, as in a timm without it
        text = re.sub(r"""elif sched == ['"]plateau['"]:""", "elif False:", text)
        path.write_text(text)
    return target


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    tree = timm_without_plateau(tmp_path_factory.mktemp("timm-without-plateau"))
    package_root = Path(timm_sched_fix.__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), str(package_root)]))
    result = subprocess.run([sys.executable, "-c", PROBE], check=False, capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["timm"].startswith(str(tree)), found["timm"]
    return found


def test_the_package_imports_and_offers_what_timm_has(probe):
    assert not probe["has_plateau"]
    assert "PlateauLRScheduler" not in probe["classes"] and "CosineLRScheduler" in probe["classes"]
    assert probe["dropins"] == probe["classes"]
    assert probe["dropin_plateau"] == "AttributeError"


def test_check_lists_the_classes_that_exist_and_fixes_them(probe):
    assert probe["check_classes"] == probe["classes"] == probe["check_json_classes"]
    assert probe["check_wrong"] == []
    assert probe["check_exit"] == 0


def test_patch_wrap_dropin_and_adapter_fix_the_first_step(probe):
    assert probe["stock_first_lr"] != probe["v0"]  # stock timm's first step misses the noisy v(0)
    for key in ("patched_first_lr", "wrapped_first_lr", "dropin_first_lr"):
        assert probe[key] == probe["v0"], key
    assert probe["adapter_first_lr"] == probe["v0_updates"]


@pytest.mark.skipif(not hasattr(timm.scheduler, "create_scheduler_v2"), reason="create_scheduler_v2 is timm 0.9+")
def test_the_factory_gives_what_timm_gives_for_a_removed_or_unknown_name(probe):
    for stock, fixed in (probe["v2_plateau"], probe["v2_unknown"]):
        assert fixed == stock
        assert stock[0] == "raised" or stock == ["returned", "None"]  # timm 1.0.x raises ValueError, 0.9.x gives None
    assert probe["v2_cosine_fixed"]
