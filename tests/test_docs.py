"""Every ```python block of the README and of the documentation pages runs (page by page, in order, one namespace
per page) or says why it cannot (docs/testing.md, "Documentation snippets"); the blocks are counted, so none is
skipped silently; and the API page documents exactly the public API."""

from __future__ import annotations

import inspect
import re
import sys
import warnings

import pytest
import timm
from accelerate.state import AcceleratorState, GradientState

import timm_sched_fix
from timm_sched_fix.golden import GoldenTraces

from docs_pages import DOCS, MARKERS, ROOT, blocks, pages, relative

#: Pages whose snippets tests/test_readme_integrations.py runs, checking the LR of every optimizer step: this
#: test leaves them to it rather than running them twice (test_the_integration_pages_are_run_there checks it).
RUN_BY_INTEGRATION_TESTS = {"docs/howto/plain-loop.md", "docs/howto/lightning.md", "docs/howto/accelerate.md"}
#: How many ```python blocks the README and the pages hold: a page lost from the list (moved, renamed) fails here.
EXPECTED_SNIPPETS = 11
#: Pages that must have python snippets (a page renamed or emptied fails here instead of dropping out).
MUST_HAVE_SNIPPETS = {"README.md", "docs/getting-started.md", "docs/howto/ci-regression.md",
                      "docs/howto/deepspeed.md", *RUN_BY_INTEGRATION_TESTS}


def python_blocks():
    return [block for page in pages() for block in blocks(page, "python")]


def timm_release():
    return tuple(int(part) for part in re.findall(r"\d+", timm.__version__)[:3])


def runs_here(block):
    """(whether the block runs on this timm, why not)."""
    if block.marker == "not-run":
        return False, block.reason
    if block.marker == "run-on":
        match = re.fullmatch(r"timm>=(\d+(?:\.\d+)*)", block.reason)
        assert match, f"{block.page}:{block.line}: run-on takes 'timm>=X.Y', got {block.reason!r}"
        needed = tuple(int(part) for part in match[1].split("."))
        return timm_release() >= needed, f"needs timm>={match[1]}"
    return True, ""


def test_every_python_fence_is_found_and_every_marker_is_on_a_block():
    """The extraction finds every ```python fence of every page, and no marker stands anywhere but right above one
    (a stray marker would mark nothing)."""
    found = python_blocks()
    fences = sum(len(re.findall(r"^```python$", page.read_text(), flags=re.MULTILINE)) for page in pages())
    assert len(found) == fences
    assert len(found) == EXPECTED_SNIPPETS, "a snippet added or removed? update EXPECTED_SNIPPETS"
    markers = sum(len(re.findall(rf"^<!-- ?(?:{'|'.join(MARKERS)}):", page.read_text(), flags=re.MULTILINE))
                  for page in pages())
    assert markers == len([block for block in found if block.marker])
    with_snippets = {block.page for block in found}
    assert MUST_HAVE_SNIPPETS <= with_snippets, MUST_HAVE_SNIPPETS - with_snippets
    # the markers need a reason (blocks() refuses one without), and most snippets run
    assert len([block for block in found if block.marker == "not-run"]) <= 2


def test_the_integration_pages_are_run_there():
    from test_readme_integrations import SECTIONS

    assert {page for page, _ in SECTIONS} == RUN_BY_INTEGRATION_TESTS


def pages_with_snippets():
    return sorted({block.page for block in python_blocks()} - RUN_BY_INTEGRATION_TESTS)


@pytest.fixture
def unpatched_after():
    """A page may patch timm (``import timm_sched_fix.auto``): the import runs anew, and a patch it made is undone
    after."""
    patched_before = timm_sched_fix.is_patched()
    sys.modules.pop("timm_sched_fix.auto", None)
    yield
    if timm_sched_fix.is_patched() and not patched_before:
        timm_sched_fix.unpatch()
    sys.modules.pop("timm_sched_fix.auto", None)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("page", pages_with_snippets())
def test_python_snippets_run(page, unpatched_after, tmp_path):
    """The page's blocks run in order in one namespace; test functions they define are called with the plugin
    fixture they name (``lr_trace_golden``: once writing a golden trace, once comparing with it)."""
    namespace = {"__name__": "docs_snippet"}
    skipped = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(does not have many workers|LeafSpec).*")
        for block in blocks(ROOT / page, "python"):
            runs, why = runs_here(block)
            if not runs:
                skipped.append(f"{block.page}:{block.line}: {why}")
                continue
            exec(compile(block.code, f"{block.page}:{block.line}", "exec"), namespace)  # noqa: S102 (our own docs)
    tests = [value for name, value in namespace.items() if name.startswith("test_") and inspect.isfunction(value)]
    for test in tests:
        assert list(inspect.signature(test).parameters) == ["lr_trace_golden"], test
        test(GoldenTraces(tmp_path / "golden", update=True))
        assert list((tmp_path / "golden").glob("*.json")), "the golden-trace snippet wrote no trace"
        test(GoldenTraces(tmp_path / "golden"))
    if skipped and len(skipped) == len(blocks(ROOT / page, "python")):
        pytest.skip("; ".join(skipped))


def test_the_one_line_patches_timm(unpatched_after):
    (block,) = [block for block in blocks(ROOT / "README.md", "python") if "timm_sched_fix.auto" in block.code]
    exec(compile(block.code, "README.md", "exec"), {})  # noqa: S102 (our own README)
    assert timm_sched_fix.is_patched()


# -- the API page documents exactly the public API -------------------------------------------------------------------

#: The public modules the API page documents besides the package's own names.
PUBLIC_MODULES = {"auto", "lightning", "golden", "pytest_plugin", "check"}  # check: its active_quirks()
API = (DOCS / "api.rst").read_text()


def documented():
    """The top-level ``timm_sched_fix.X`` the API page documents: the names of its autodoc and module directives
    (under ``.. currentmodule:: timm_sched_fix`` or ``.. module:: timm_sched_fix``, or written out)."""
    names, current = set(), None
    for directive, target in re.findall(r"^\.\. (\w+):: (\S+)", API, flags=re.MULTILINE):
        if not directive.startswith("auto") and directive not in ("module", "currentmodule"):
            continue
        if directive in ("module", "currentmodule"):
            current = target
            if directive == "currentmodule" or target == "timm_sched_fix":
                continue
        full = target if target.startswith("timm_sched_fix") else f"{current}.{target}"
        parts = full.split(".")
        if parts[0] == "timm_sched_fix" and len(parts) > 1:
            names.add(parts[1])
    return names


def test_every_public_name_is_documented_on_the_api_page():
    assert set(timm_sched_fix.__all__) - documented() == set()


def test_the_api_page_documents_nothing_else_at_the_top_level():
    from timm_sched_fix import _dropin

    dropins = {"_dropin"}  # the drop-in classes and factories, documented from their module (they mirror timm)
    assert set(_dropin.SCHEDULER_CLASSES) | set(_dropin.FACTORIES)  # there are drop-ins to document
    assert documented() - set(timm_sched_fix.__all__) - PUBLIC_MODULES - dropins == set()
    assert PUBLIC_MODULES <= documented()


def test_documentation_pages_are_all_in_the_site():
    """Every Markdown page of docs/ is in a toctree of the site's index (Sphinx warns about the others, but only
    when the docs session runs)."""
    index = (DOCS / "index.md").read_text()
    listed = set(re.findall(r"^([\w/-]+)$", index, flags=re.MULTILINE))
    on_disk = {relative(path).removeprefix("docs/").removesuffix(".md") for path in pages()[1:]} - {"index"}
    assert on_disk - listed == set()
