"""The integration how-to pages' snippets (docs/howto/) run as written, and every optimizer step in them runs with
the schedule's value, so the documentation cannot rot; the README's runner command runs the example script."""

import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState
from torch.optim.optimizer import register_optimizer_step_pre_hook

from docs_pages import ROOT, blocks, fenced, section
from support import expected_trace, reference_values

EPOCH_SCHEDULE = dict(t_initial=6, warmup_t=2, warmup_lr_init=1e-3)

#: (page, title) -> (schedule kwargs, epochs, batches per epoch, per epoch?) that its snippets build.
SECTIONS = {
    ("docs/howto/plain-loop.md", "Plain PyTorch loop"): (EPOCH_SCHEDULE, 6, 3, True),
    ("docs/howto/lightning.md", "PyTorch Lightning"): (EPOCH_SCHEDULE, 6, 3, True),
    ("docs/howto/accelerate.md", "Hugging Face Accelerate"):
        (dict(t_initial=18, warmup_t=3, warmup_lr_init=1e-3, t_in_epochs=False), 3, 6, False),
}


def page_blocks(page, title, language):
    """The ```language blocks of a page, checked to be the page titled ``title``."""
    path = ROOT / page
    assert path.read_text().startswith(f"# {title}\n"), page
    found = [block.code for block in blocks(path, language)]
    assert found, f"no {language} snippet in {page}"
    return found


@pytest.fixture
def lr_of_every_step():
    """The LR each optimizer step ran with, per optimizer, via a global step pre-hook (no snippet uses auto mode,
    so nothing changes the LR between this hook and the step)."""
    traces = {}

    def record(optimizer, args, kwargs):
        traces.setdefault(optimizer, []).append(optimizer.param_groups[0]["lr"])

    handle = register_optimizer_step_pre_hook(record)
    yield traces
    handle.remove()
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize(("page", "title"), list(SECTIONS), ids=[title for _, title in SECTIONS])
def test_python_snippets_run_and_every_step_is_right(page, title, lr_of_every_step):
    namespace = {"__name__": "readme_snippet"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec).*")
        for block in page_blocks(page, title, "python"):
            exec(compile(block, page, "exec"), namespace)  # noqa: S102 (our own docs)
    kwargs, epochs, batches, on_epochs = SECTIONS[page, title]
    periods = epochs if on_epochs else epochs * batches
    values = reference_values("CosineLRScheduler", kwargs, 1, periods, on_epochs=on_epochs)
    want = [lrs[0] for lrs in expected_trace(values, epochs=epochs, batches=batches, on_epochs=on_epochs)]
    assert lr_of_every_step, "the snippet ran no optimizer step"
    for trace in lr_of_every_step.values():
        assert trace == pytest.approx(want, rel=1e-12)


@pytest.mark.release_independent("the README's console-script command; the same example script under "
                                "`timm-sched-fix run` is checked step by step on every release by test_runner.py")
def test_runner_command_runs_the_example_script():
    (block,) = fenced(section(ROOT / "README.md", "No line at all: the runner"), "bash")
    for line in block.splitlines():
        program, *args = shlex.split(line)
        assert program == "timm-sched-fix", line
        result = subprocess.run([str(Path(sys.executable).parent / program), *args], cwd=ROOT, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("trained 4 epochs, 12 updates"), result.stdout
