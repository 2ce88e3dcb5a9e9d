"""What ``timm-sched-fix audit`` writes: the report (per-scheduler summary and a table in ``trace``'s style, and every
sentence of it: the comparisons with a golden file, another timm release, the other ranks and the processes the script
started), the JSON document (``--out``, and what the ``--against-timm`` children and the ranks hand over), CSV, the
plot and the golden file (``golden``'s JSON format).

Past 400 lines as one piece: it is every sentence the audit says to a user, gathered on purpose so that a cause, its
advice and the options it names read the same in the summary, the table, the JSON and the comparisons; the logic that
decides them stays in ``analysis``, ``record``, ``releases``, ``ranks`` and ``children``."""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from timm_sched_fix import golden
from timm_sched_fix._tolerance import REL_TOL, close
from timm_sched_fix._usage import UsageError, format_table, rows_with_gaps
from timm_sched_fix.audit.ranks import RANK_WAIT_SECONDS
from timm_sched_fix.options import ENV_AUDIT, Options

if TYPE_CHECKING:
    from timm_sched_fix.audit.analysis import SchedulerAudit
    from timm_sched_fix.audit.record import Recorder

#: Short names of the causes of a wrong step, in the table and in the JSON; :func:`explain_step` explains each in words.
PRE_ADVANCE, LAG, EARLY, NEVER_MOVED, OTHER = "missing pre-advance", "one-period lag", "one period early", \
    "schedule never moved", "not the schedule's"
UNSCALED = "group factor not applied"

#: Differing steps shown per scheduler when two runs are compared.
SHOWN_STEPS = 8
#: Tables longer than this keep their first and last rows and the rows around each run of wrong steps.
MAX_ROWS = 40
EDGE_ROWS = 3
MAX_WRONG_RUNS = 6


def epoch_length(boundaries: Sequence[int] | None, steps: int) -> int | None:
    """The number of optimizer steps per epoch when every epoch has the same (boundaries at N, 2N, ...)."""
    if not boundaries or list(boundaries) != list(range(boundaries[0], steps, boundaries[0])):
        return None
    return boundaries[0]


def lr_text(value: float | None) -> str:
    return "?" if value is None else f"{value:.8g}"


def index_text(index: float) -> str:
    return str(int(index)) if float(index).is_integer() else repr(index)


def _t_text(t: float | None) -> str:
    return "?" if t is None else (str(int(t)) if float(t).is_integer() else f"{t:g}")


# -- the verdict on one scheduler, in words -------------------------------------------------------------

def analysis_failed(error: Exception) -> str:
    """Why a scheduler is undecided when the audit's own analysis raised."""
    return (f"the audit's own analysis failed ({type(error).__name__}: {error}); this is a defect of "
            "timm-sched-fix, not of the script: please report it")


def typical_cause(k: int, cause: str, steps: int, explanation: str) -> str:
    """What follows the first wrong step's explanation when the typical wrong step has another cause."""
    return f"; and from step {k} on, {cause} ({steps:,} steps): {explanation}"


def explain_step(audit: SchedulerAudit, k: int, call: Any, options: Options | None = None) -> str:
    """The cause of wrong step ``k`` in words, with the call that set its LR where there was one; the advice names
    only options of the fix that are not active (``options``: the fix's, None for stock timm). ``call``: the call that
    set its LR, or None (``analysis``)."""
    record, t, ran = audit.record, audit.t[k], audit.lrs_at(k)
    cause, unit, tt = audit.cause[k], record.unit, index_text(t)
    if cause == UNSCALED:
        return (f"it ran with v({tt}) itself, without the factor the script's own code multiplies each param group's "
                "LR by after the scheduler's calls (such as layer-wise LR decay): the steps before its first call "
                "run without it; apply the factors once right after building the scheduler (and after "
                "load_state_dict)")
    if cause == PRE_ADVANCE:
        done = ("--fix pre-advances" if options is None else "the fix pre-advances only over the LRs the "
                "constructor left; here the param groups held others (\"LRs the fix did not write\" in the documentation's Terms): "
                f"call {'step(t)' if record.on_epochs else 'step_update(t)'} with the index to train at")
        return (f"the first {unit} ran with the LR the constructor left ({ran[0]:.8g}), not v({tt}): stock timm "
                f"applies v(t) at the first step()/step_update() call, after the first {unit} ({done})")
    here = "" if call is None else (f" (here {call.method}({index_text(call.index)}) after optimizer step "
                                    f"{call.update - 1})")
    if cause == LAG:
        expected = "step(epoch + 1)" if record.on_epochs else "step_update(num_updates)"
        if options is None:
            shift = ", and --fix --on-lag fix shifts it"
        elif options.on_lag != "fix":
            shift = f", and --on-lag fix shifts it (the fix runs with on_lag={options.on_lag!r})"
        else:
            shift = " (on_lag='fix' is active but did not take these calls for a lag: see its warnings)"
        scaled = " (times each group's factor)" if audit.factors is not None else ""
        return (f"it ran with v({index_text(t - 1)}){scaled}, the index already in force: the call after each "
                f"{unit} passes the index of the {unit} just done, not the next one{here}; timm expects "
                f"{expected}{shift}")
    if cause == EARLY:
        return f"it ran with v({index_text(t + 1)}): the schedule runs one {unit} ahead{here}"
    if cause == NEVER_MOVED:
        return "it ran with the LR the constructor left: no call moved the schedule this far"
    return (f"it ran with {ran[0]:.8g}, which is none of v({index_text(t - 1)}), v({tt}), v({index_text(t + 1)}): "
            "the LR was changed outside this scheduler (another scheduler on the same optimizer?)")


# -- an audited process that ended without its report (the watcher's lines) ---------------------------------

def ended_by_signal(name: str) -> str:
    return f"timm-sched-fix audit: the audit could not finish: the process was ended by {name} before the report; no verdict"


def exited_without_report(os_exit_call: str | None, exit_code: int) -> str:
    """``os_exit_call``: the ``os._exit(...)`` call the script made (with where), None if it is not known."""
    how = f"the script called {os_exit_call}" if os_exit_call is not None else f"the process exited with code {exit_code}"
    return (f"timm-sched-fix audit: the audit could not finish: {how}, which skips the audit's report; no verdict (end "
            "the script normally, e.g. sys.exit(), or use --max-steps)")


# -- why a scheduler, or its later steps, are not audited (the recorder's notes) ---------------------------

def not_audited(class_name: str, where: str, error: Exception) -> str:
    return f"a {class_name} built at {where} could not be audited: {error!r}"


def uncountable(reason: str) -> str:
    return f"its optimizer's parameter updates cannot be counted ({reason}): not audited"


def recording_failed(steps: int, error: Exception) -> str:
    return f"the audit could not record it after step {steps} ({type(error).__name__}: {error}): later steps are not audited"


def groups_changed(before: int, after: int, steps: int) -> str:
    return f"the optimizer's param groups changed from {before} to {after} at step {steps}: later steps are not audited"


def lrs_unreadable(steps: int, error: Exception) -> str:
    return (f"the audit could not read the LRs of step {steps} ({type(error).__name__}: {error}): later steps are "
            "not audited")


# -- the JSON document -------------------------------------------------------------------------------

def scheduler_document(audit: SchedulerAudit) -> dict[str, Any]:
    """One scheduler's verdict and every step of it."""
    record = audit.record
    steps = range(audit.steps)
    first = audit.first_wrong
    return {
        "number": record.number, "class": record.class_name, "timm_class": record.timm_class, "unit": record.unit,
        "where": record.where, "optimizer": type(record.optimizer).__name__, "param_groups": len(record.init_lrs),
        "start": audit.start, "start_how": audit.start_how, "epochs_how": audit.epochs_how,
        "boundaries": audit.boundaries, "undecided": audit.undecided, "steps": audit.steps,
        "wrong_steps": audit.wrong_count, "causes": audit.causes(), "released_at": record.released_at,
        "first_wrong": None if first is None else {
            "step": first, "epoch": audit.epoch_of(first), "t": audit.t[first], "ran_lr": record.lrs[first],
            "schedule_lr": audit.expected[first], "cause": audit.cause[first], "explanation": audit.explanation},
        "trace": {
            "step": list(steps),
            "epoch": [audit.epoch_of(k) for k in steps],
            "t": audit.t or [None] * audit.steps,
            "ran_lr": record.lrs,
            "schedule_lr": audit.expected or [None] * audit.steps,
            "wrong": audit.wrong or [None] * audit.steps,
            "cause": audit.cause or [None] * audit.steps,
        },
    }


def write_out(document: dict[str, Any], path: str) -> None:
    """``--out``: the JSON document, or CSV with one row per scheduler, step and param group."""
    try:
        with open(path, "w", newline="") as stream:
            if Path(path).suffix.lower() == ".json":
                json.dump(document, stream, indent=1)
                stream.write("\n")
                return
            writer = csv.writer(stream)
            writer.writerow(["scheduler", "class", "step", "epoch", "t", "group", "ran_lr", "schedule_lr", "wrong",
                             "cause"])
            for scheduler in document["schedulers"]:
                trace = scheduler["trace"]
                for k in trace["step"]:
                    expected = trace["schedule_lr"][k]
                    for group, ran in enumerate(trace["ran_lr"][k]):
                        writer.writerow([scheduler["number"], scheduler["class"], k, _blank(trace["epoch"][k]),
                                         _blank(trace["t"][k]), group, ran,
                                         _blank(expected[group] if expected and group < len(expected) else None),
                                         _blank(trace["wrong"][k]), trace["cause"][k] or ""])
    except OSError as error:
        raise UsageError(f"--out {path}: cannot write it ({error.strerror})") from None


def _blank(value: Any) -> Any:
    return "" if value is None else value


# -- the report ----------------------------------------------------------------------------------------

@dataclass
class Run:
    """What was audited: the script and its arguments, the fix's options (None: stock), the audit's settings, how
    the script ended (exit code, and a sentence when it did not end normally), its rank (rank, world size)."""

    command: list[str]
    module: bool
    options: Options | None
    updates_per_epoch: int | None
    max_steps: int | None
    exit_code: int | None
    ended: str | None
    rank: tuple[int, int] | None
    child: bool = False  # a process the script started (audited through the environment)


def _fix_text(options: Options | None) -> str:
    if options is None:
        return "stock timm (no fix; --fix audits the script under the fix)"
    return (f"with the fix: patch(convention={options.convention!r}, auto={options.auto!r}, "
            f"on_lag={options.on_lag!r})")


def report_lines(run: Run, recorder: Recorder, audits: Sequence[SchedulerAudit], summary: str) -> list[str]:
    """The whole report of one process: what ran, each scheduler's summary and table, the verdict."""
    import timm
    import torch

    command = " ".join(["-m"] * run.module + run.command)
    where = f" (rank {run.rank[0]} of {run.rank[1]})" if run.rank else f" (process {os.getpid()})" if run.child else ""
    lines = ["", f"timm-sched-fix audit{where}: {command}",
             f"timm {timm.__version__}, torch {torch.__version__}; {_fix_text(run.options)}"]
    if recorder.stopped:
        lines.append(f"stopped the script after {recorder.updates:,} optimizer steps (--max-steps {run.max_steps})")
    if run.ended:
        lines.append(f"{run.ended}: the audit covers the optimizer steps before")
    lines += [f"note: {note}" for note in recorder.notes]
    for audit in audits:
        lines += [""] + scheduler_lines(audit, len(audits))
    lines += ["", f"audit: {summary}"]
    return lines


def audit_document(run: Run, recorder: Recorder, audits: Sequence[SchedulerAudit], code: int,
                   summary: str) -> dict[str, Any]:
    """The JSON document of one process's audit (``--out``, ``--against-timm``'s children, ranks)."""
    import timm
    import torch

    options = run.options
    return {
        "tool": "timm-sched-fix audit", "timm": timm.__version__, "torch": torch.__version__,
        "command": run.command, "module": run.module,
        "fix": None if options is None else {"convention": options.convention, "auto": options.auto,
                                             "on_lag": options.on_lag},
        "updates_per_epoch": run.updates_per_epoch, "max_steps": run.max_steps,
        "stopped_at_max_steps": recorder.stopped, "optimizer_steps": recorder.updates,
        "script": {"exit_code": run.exit_code, "ended": run.ended},
        "rank": run.rank[0] if run.rank else None, "world_size": run.rank[1] if run.rank else None,
        "pid": os.getpid(), "notes": recorder.notes, "verdict": {"exit_code": code, "summary": summary},
        "schedulers": [scheduler_document(audit) for audit in audits],
    }


def scheduler_lines(audit: SchedulerAudit, total: int) -> list[str]:
    """The summary of one scheduler and its table."""
    record = audit.record
    groups = len(record.init_lrs)
    where = f"built at {record.where} on {type(record.optimizer).__name__}"
    plural = "s" if groups != 1 else ""
    title = f"scheduler {record.number} of {total}: {record.class_name}, per {record.unit}, {where}"
    lines = [f"{title} ({groups} param group{plural})",
             f"  t:      {audit.start_how}",
             f"  epochs: {_epochs_text(audit)}"]
    if record.stopped:
        lines.append(f"  {record.stopped}")
    if audit.factors is not None:
        factors = ", ".join(f"group {g} x{factor:.6g}" for g, factor in enumerate(audit.factors))
        lines.append(f"  groups: the script multiplies each param group's LR by a factor of its own after the "
                     f"scheduler's calls (an LR changed outside the scheduler, by the same factor at every step, such "
                     f"as layer-wise LR decay): {factors}; judged against factor x v(t)")
    if record.steps_after_release:
        lines.append(f"  released (garbage collected) after {record.released_at:,} optimizer steps; the "
                     f"{record.steps_after_release:,} later steps of its optimizer are not its")
    if audit.undecided is not None:
        lines.append(f"  {audit.steps:,} optimizer steps, cannot decide: {audit.undecided}")
    elif not audit.steps:
        lines.append("  no optimizer step ran with it")
    elif not audit.wrong_count:
        lines.append(f"  {audit.steps:,} optimizer steps, every one ran with v(t)")
    else:
        causes = ", ".join(f"{cause} {count:,}" for cause, count in audit.causes().items())
        first = audit.first_wrong
        assert first is not None
        epoch = audit.epoch_of(first)
        lines.append(f"  {audit.steps:,} optimizer steps, {audit.wrong_count:,} wrong ({causes})")
        lines.append(f"  first wrong: step {first} (epoch {_t_text(epoch)}, t={_t_text(audit.t[first])}): ran "
                     f"{lr_text(record.lrs[first][0])}, v({_t_text(audit.t[first])}) = "
                     f"{lr_text((audit.expected[first] or [None])[0])}")
        lines.append(f"  likely cause: {audit.cause[first]}: {audit.explanation}")
    if audit.steps:
        lines += [""] + ["  " + line for line in _table(audit)]
    return lines


def _epochs_text(audit: SchedulerAudit) -> str:
    if audit.boundaries is None and not audit.record.on_epochs:
        return f"not known ({audit.epochs_how.split(';')[0]}); an update schedule does not need them"
    return audit.epochs_how + (" (counted from the start of this run)" if audit.start else "")


def _table(audit: SchedulerAudit) -> list[str]:
    record = audit.record
    steps = audit.steps
    if steps <= MAX_ROWS:
        selected = list(range(steps))
    else:
        chosen = set(range(EDGE_ROWS)) | set(range(steps - EDGE_ROWS, steps))
        runs = [k for k in range(steps) if audit.wrong and audit.wrong[k] and (k == 0 or not audit.wrong[k - 1])]
        for k in runs[:MAX_WRONG_RUNS]:
            chosen |= {k - 1, k, k + 1} & set(range(steps))
        selected = sorted(chosen)
    several = len(record.init_lrs) > 1

    def cells_of(k: int) -> list[str]:
        expected = audit.expected[k] if audit.expected else None
        mark = audit.cause[k] if audit.cause else ""
        if several and audit.wrong and audit.wrong[k] and expected is not None:
            groups = [str(g) for g, (a, b) in enumerate(zip(record.lrs[k], expected)) if a != b]
            mark += f" (group {', '.join(groups)})"
        return [str(k), _t_text(audit.epoch_of(k)), _t_text(audit.t[k] if audit.t else None),
                lr_text(record.lrs[k][0]), lr_text(expected[0] if expected else None), mark]

    header = ["step", "epoch", "t", "ran LR" + (" (group 0)" if several else ""), "v(t)", "wrong"]
    return format_table(header, rows_with_gaps(selected, cells_of))


def verdict(audits: Sequence[SchedulerAudit]) -> tuple[int, str]:
    """The exit code (0 every step ran with v(t), 1 otherwise) and the last line of the report."""
    if not audits:
        return 1, "the script built no timm scheduler: nothing was checked"
    if not any(audit.steps for audit in audits):
        return 1, "no optimizer step ran with a timm scheduler: nothing was checked"
    undecided = [audit for audit in audits if audit.undecided is not None]
    steps = sum(audit.steps for audit in audits)
    wrong = sum(audit.wrong_count for audit in audits)
    schedulers = f"{len(audits)} scheduler{'s' if len(audits) != 1 else ''}"
    parts = []
    if wrong:
        parts.append(f"{wrong:,} of {steps:,} optimizer steps ran with an LR other than the schedule's ({schedulers})")
    for audit in undecided:
        parts.append(f"cannot decide for scheduler {audit.record.number} ({(audit.undecided or '').split(':')[0]}), "
                     "so its steps are not called right")
    if parts:
        return 1, "; ".join(parts)
    return 0, f"every one of the {steps:,} optimizer steps ran with the LR its schedule defines ({schedulers})"


# -- plot ----------------------------------------------------------------------------------------------

def plot(audits: Sequence[SchedulerAudit], path: str, ran_label: str, updates_per_epoch: int | None) -> None:
    """``--plot``: one panel per scheduler, what ran against v(t), wrong steps shaded."""
    from timm_sched_fix.trace.plot import Line, Panel, draw

    panels = []
    for audit in audits:
        record = audit.record
        ran = [lrs[0] for lrs in record.lrs]
        expected = [values[0] if values else math.nan for values in audit.expected] if audit.expected else None
        status = (f"cannot decide ({audit.undecided.split(':')[0]})" if audit.undecided
                  else f"{audit.wrong_count} of {audit.steps} steps wrong")
        boundaries = audit.boundaries or []
        regular = updates_per_epoch or epoch_length(boundaries, audit.steps)
        panels.append(Panel(
            title=f"scheduler {record.number}: {record.class_name} per {record.unit}, built at "
                  f"{Path(record.where).name}: {status}",
            first=Line(ran, ran_label, "tab:red"),
            second=None if expected is None else Line(expected, "the schedule: v(t) for the step's t", "tab:blue",
                                                      width=1.2, dashed=True),
            differs=audit.wrong or [False] * audit.steps,
            shade_label="ran with another LR than v(t)",
            boundaries=boundaries,
            updates_per_epoch=regular,
            dots=True,
            note=None if audit.first_wrong is None else (
                audit.first_wrong, f"first wrong: step {audit.first_wrong} ({audit.cause[audit.first_wrong]})"),
        ))
    draw(panels, path)


# -- golden files (golden.py's format) ------------------------------------------------------------------

def golden_document(document: dict[str, Any], updates_per_epoch: int | None) -> dict[str, Any]:
    """``golden``'s JSON document for the first scheduler (so the pytest fixture can read it too), with every
    scheduler's trace under ``audit``."""
    schedulers = document["schedulers"]
    first = schedulers[0] if schedulers else None
    boundaries = first["boundaries"] if first else None
    return golden.document(
        first["trace"]["ran_lr"] if first else [],
        epochs=None if boundaries is None else len(boundaries) + 1,
        updates_per_epoch=updates_per_epoch,
        audit={"command": document["command"], "schedulers": [
            {"number": s["number"], "class": s["class"], "unit": s["unit"], "lrs": s["trace"]["ran_lr"]}
            for s in schedulers]})


def golden_differences(stored: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """Where the recorded trace differs from a golden file; empty when it matches."""
    saved = stored.get("audit", {}).get("schedulers") or [{"number": 1, "class": "?", "lrs": stored.get("lrs", [])}]
    now = document["schedulers"]
    problems = []
    if len(saved) != len(now):
        problems.append(f"the golden file has {len(saved)} scheduler(s), this run built {len(now)}")
    for old, new in zip(saved, now):
        difference = golden.first_difference(old["lrs"], new["trace"]["ran_lr"], rel_tol=REL_TOL,
                                             updates_per_epoch=epoch_length(new["boundaries"], new["steps"]))
        if difference is not None:
            problems.append(f"scheduler {new['number']} ({new['class']}): {difference}")
    return problems


# -- golden files ------------------------------------------------------------------------------------------

def golden_written_line(path: str) -> str:
    return f"wrote the golden trace {path}"


def golden_lines(path: str, stored: dict[str, Any], document: dict[str, Any], problems: list[str]) -> list[str]:
    """The comparison with the golden file ``path`` (``problems``: :func:`golden_differences`)."""
    if not problems:
        return [f"golden {path}: the same LR at every optimizer step (recorded with timm {stored.get('timm')})"]
    moved = (f"golden {path}: the trace moved (recorded with timm {stored.get('timm')}, running {document['timm']}); "
             "--update-golden accepts the new trace")
    return [moved, *(f"  {problem}" for problem in problems)]


# -- two runs' traces: another timm release, another rank ----------------------------------------------------

def _first_lr(values: Sequence[float] | None) -> str:
    return lr_text(values[0] if values else None)


def differences(mine: Mapping[str, Any], other: Mapping[str, Any], my_label: str, other_label: str) -> list[str]:
    """Lines naming where the two runs' traces differ (every scheduler, every step); empty when they are the same."""
    lines: list[str] = []
    schedulers, others = mine["schedulers"], other["schedulers"]
    if len(schedulers) != len(others):
        lines.append(f"{my_label} built {len(schedulers)} timm scheduler(s), {other_label} {len(others)}")
    for a, b in zip(schedulers, others):
        name = f"scheduler {a['number']} ({a['class']})"
        if a["class"] != b["class"]:
            lines.append(f"{name}: {other_label} built a {b['class']}")
            continue
        ran_a, ran_b = a["trace"]["ran_lr"], b["trace"]["ran_lr"]
        differing = [k for k, (x, y) in enumerate(zip(ran_a, ran_b)) if not close(x, y)]
        if len(ran_a) != len(ran_b):
            lines.append(f"{name}: {len(ran_a)} optimizer steps under {my_label}, {len(ran_b)} under {other_label}")
        if not differing:
            continue
        lines.append(f"{name}: {len(differing):,} of {min(len(ran_a), len(ran_b)):,} optimizer steps ran with a "
                     f"different LR, first at step {differing[0]}")
        rows = []
        for k in differing[:SHOWN_STEPS]:
            expected_a, expected_b = a["trace"]["schedule_lr"][k], b["trace"]["schedule_lr"][k]
            rows.append([str(k), _t_text(a["trace"]["t"][k]), _first_lr(ran_a[k]), _first_lr(ran_b[k]), _first_lr(expected_a),
                         _first_lr(expected_b)])
        if len(differing) > SHOWN_STEPS:
            rows.append(f"... {len(differing) - SHOWN_STEPS:,} more")
        header = ["step", "t", f"ran ({my_label})", f"ran ({other_label})", f"v(t) ({my_label})",
                  f"v(t) ({other_label})"]
        lines += ["  " + line for line in format_table(header, rows)]
    return lines



def rank_lines(documents: Sequence[Mapping[str, Any] | None]) -> tuple[list[str], bool]:
    """Rank 0's comparison of every rank with itself: the lines, and whether any rank disagrees."""
    mine = documents[0]
    assert mine is not None
    lines, disagree = [], []
    for rank, other in enumerate(documents[1:], start=1):
        if other is None:
            lines.append(f"rank {rank} handed over no report within {RANK_WAIT_SECONDS:.0f} s")
            disagree.append(rank)
            continue
        found = differences(mine, other, "rank 0", f"rank {rank}")
        if found:
            disagree.append(rank)
            lines += [f"rank {rank} disagrees with rank 0:"] + ["  " + line for line in found]
    world = len(documents)
    if disagree:
        lines.insert(0, f"ranks disagree: {', '.join(f'rank {r}' for r in disagree)} ran other LRs than rank 0 "
                        f"({world} ranks)")
    else:
        lines.insert(0, f"all {world} ranks ran the same LR at every optimizer step")
    return lines, bool(disagree)


def against_lines(document: Mapping[str, Any], other: Mapping[str, Any], shown: str) -> tuple[list[str], bool]:
    """The comparison with the same audit under another timm release (installed in the folder ``shown``): the
    lines, and whether the LRs differ."""
    mine, theirs = f"timm {document['timm']}", f"timm {other['timm']}"
    lines = ["", f"against {theirs} ({shown}): the same script and options, audited in a child process",
             f"  under {theirs}: {other['verdict']['summary']}"]
    if other["script"]["ended"]:
        lines.append(f"  under {theirs}: {other['script']['ended']}")
    found = differences(document, other, mine, theirs)
    if found:
        lines += [f"  {line}" for line in found]
        lines.append(f"against {theirs}: the LRs differ from {mine}'s")
    else:
        lines.append(f"against {theirs}: the same LR at every optimizer step as under {mine}")
    return lines, bool(found)


# -- the processes the script started ------------------------------------------------------------------

#: The summary of a process that built no scheduler itself while the processes it started did.
ONLY_CHILDREN_AUDITED = "this process built no timm scheduler; the processes it started did (below)"


def unreached_line() -> str:
    """Why the processes the script started were not audited."""
    from timm_sched_fix.runner.startup import PTH_NAME

    return (f"note: the Python processes the script started (if any) were not audited: no {PTH_NAME} that knows "
            f"{ENV_AUDIT} is in this Python's site-packages (install this version of the package)")


def unfinished_lines(pids: Sequence[int]) -> list[str]:
    """One line per process the script started that built a timm scheduler but wrote no report."""
    return [f"the audit could not finish: process {pid}, which the script started, built a timm scheduler and "
            "ended without its report (os._exit, a fatal signal, or killed): its steps have no verdict"
            for pid in pids]


def children_lines(documents: Sequence[dict[str, Any]]) -> tuple[list[str], int]:
    """Every child's report, the ranks that disagree, a last line over all of them, and their exit code (0:
    every step of every process ran with v(t) and the ranks agree, else 1)."""
    lines: list[str] = []
    failing = []
    for document in documents:
        lines += document["report"]
        if document["verdict"]["exit_code"]:
            failing.append(_process_name(document))
    disagree = False
    ranked = [document for document in documents if document["rank"] is not None]
    if len(ranked) > 1:
        world = max(document["world_size"] for document in ranked)
        by_rank: list[dict[str, Any] | None] = [None] * world
        for document in ranked:
            by_rank[document["rank"]] = document
        if by_rank[0] is not None:
            found, disagree = rank_lines(by_rank)
            lines += [""] + found
    count = len(documents)
    processes = f"{count} process{'es' if count != 1 else ''} the script started"
    if not failing and not disagree:
        lines += ["", f"audit of the {processes}: every optimizer step ran with the LR its schedule defines"]
        return lines, 0
    parts = ([f"not every step ran with v(t) in {', '.join(failing)}"] if failing else []) + (
        ["the ranks disagree"] if disagree else [])
    lines += ["", f"audit of the {processes}: {'; '.join(parts)}"]
    return lines, 1


def _process_name(document: Mapping[str, Any]) -> str:
    return f"rank {document['rank']}" if document["rank"] is not None else f"process {document['pid']}"


# -- what the audit wrote ------------------------------------------------------------------------------------

def wrote_line(path: str) -> str:
    return f"wrote {path}"


def no_plot_line(path: str) -> str:
    return f"no plot written to {path}: no timm scheduler was built"


def plot_label(options: Options | None) -> str:
    """The label of the LRs the steps ran with, in the plot."""
    return "ran (with the fix)" if options else "ran (stock timm)"
