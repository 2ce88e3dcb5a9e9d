"""The README's "Integrations" snippets run as written, and every optimizer step in them runs with the
schedule's value, so the README cannot rot."""

import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState
from torch.optim.optimizer import register_optimizer_step_pre_hook

from support import expected_trace, reference_values

ROOT = Path(__file__).resolve().parent.parent
EPOCH_SCHEDULE = dict(t_initial=6, warmup_t=2, warmup_lr_init=1e-3)

#: Section -> (schedule kwargs, epochs, batches per epoch, per epoch?) that its snippets build.
SECTIONS = {
    "Plain PyTorch loop": (EPOCH_SCHEDULE, 6, 3, True),
    "PyTorch Lightning": (EPOCH_SCHEDULE, 6, 3, True),
    "Hugging Face Accelerate": (dict(t_initial=18, warmup_t=3, warmup_lr_init=1e-3, t_in_epochs=False), 3, 6, False),
}


def integration_blocks(section, language):
    """The ```language blocks under "### section" of the README's "## Integrations"."""
    text = (ROOT / "README.md").read_text()
    integrations = text.split("\n## Integrations\n", 1)[1].split("\n## ", 1)[0]
    body = integrations.split(f"\n### {section}\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", body, flags=re.DOTALL | re.MULTILINE)
    assert blocks, f"no {language} snippet under '### {section}'"
    return blocks


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


@pytest.mark.parametrize("section", list(SECTIONS))
def test_python_snippets_run_and_every_step_is_right(section, lr_of_every_step):
    namespace = {"__name__": "readme_snippet"}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec).*")
        for block in integration_blocks(section, "python"):
            exec(compile(block, f"README.md ({section})", "exec"), namespace)  # noqa: S102 (our own README)
    kwargs, epochs, batches, on_epochs = SECTIONS[section]
    periods = epochs if on_epochs else epochs * batches
    values = reference_values("CosineLRScheduler", kwargs, 1, periods, on_epochs=on_epochs)
    want = [lrs[0] for lrs in expected_trace(values, epochs=epochs, batches=batches, on_epochs=on_epochs)]
    assert lr_of_every_step, "the snippet ran no optimizer step"
    for trace in lr_of_every_step.values():
        assert trace == pytest.approx(want, rel=1e-12)


@pytest.mark.release_independent("the README's console-script command; the same example script under "
                                "`timm-sched-fix run` is checked step by step on every release by test_runner.py")
def test_runner_command_runs_the_example_script():
    (block,) = integration_blocks("Existing training script", "bash")
    for line in block.splitlines():
        program, *args = shlex.split(line)
        assert program == "timm-sched-fix", line
        result = subprocess.run([str(Path(sys.executable).parent / program), *args], cwd=ROOT, capture_output=True,
                                text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("trained 4 epochs, 12 updates"), result.stdout
