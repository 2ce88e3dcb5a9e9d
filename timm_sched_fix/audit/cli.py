"""``timm-sched-fix audit [options] script.py [args...]`` (or ``-m module``): run a training script as ``run``
does (its own argv, as ``__main__``) and check the LR every optimizer step ran with against the schedule of each
timm scheduler it built: v(t) for the index t that step should run with (docs/reference/terms.md).

Stock timm by default; ``--fix`` (with ``patch()``'s options) audits the script under the fix. For each scheduler:
its class and unit, how t and the epoch boundaries were found, the wrong steps with the likely cause, and a table
of the steps. Exit code: 0 every step ran with v(t); 1 some did not, or cannot be decided (the report says why),
or ``--golden``, ``--against-timm`` or the ranks of a multi-process run differ; 2 a usage error; 3 the script
itself failed (its traceback is shown, the report covers the steps before). Never 0 without a verdict: from the
command line the audit runs in a forked process the command watches (``_watched``), so a script that ends it
without the report (``os._exit``, a fatal signal, SIGTERM/SIGINT) makes the command exit non-zero saying why.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from timm_sched_fix._usage import UsageError, check_output, check_suffix
from timm_sched_fix.options import DEFAULT_AUTO, DEFAULT_CONVENTION, DEFAULT_ON_LAG, ENV_AUDIT, Options, rank_of
from timm_sched_fix.runner.cli import add_patch_arguments, add_target_arguments, require_target
from timm_sched_fix.runner.execute import TargetNotFound, execute

EXIT_SCRIPT_FAILED = 3

DESCRIPTION = """\
Run a training script (or, with -m, a module) the way `run` does, and check the
learning rate every optimizer step ran with against the schedule of each timm
scheduler the script builds: v(t) for the index t that step should run with.

Stock timm by default; --fix audits the script under the fix. For each
scheduler it prints its class and unit, how t and the epoch boundaries were
found, the wrong steps with their likely cause (missing pre-advance, one-period
lag, ...), and a table of the steps. The script runs as `python script.py` runs
it, with its own sys.argv, as __main__; options go before it, everything after
it is its own."""

EPILOG = """\
examples:
  timm-sched-fix audit train.py --epochs 300            # stock timm: is my run affected?
  timm-sched-fix audit --fix --on-lag fix my_lightning_script.py
  timm-sched-fix audit --max-steps 50 --golden lr.json train.py ...   # a CI gate
  timm-sched-fix audit --against-timm 1.0.24 train.py ...   # does another timm change my LRs?
  torchrun --nproc_per_node 2 -m timm_sched_fix audit train.py ...   # one report per rank

exit status: 0 every optimizer step ran with v(t); 1 some did not, or it cannot
decide (the report says why), or --golden, --against-timm or the ranks differ;
2 a usage error; 3 the script itself failed (the report covers the steps before).
A script that ends the process without the report (os._exit, a fatal signal,
SIGTERM or SIGINT) gives a non-zero exit with a line saying why: never 0."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit", help="run a training script and check the LR every optimizer step ran with against its schedule",
        description=DESCRIPTION, epilog=EPILOG, allow_abbrev=False)
    parser.add_argument("--fix", action="store_true", help="run the script with the fix, as `run` does "
                        "(default: stock timm)")
    fix_options = parser.add_argument_group(f"options of the fix (with --fix; by default {DEFAULT_CONVENTION}, "
                                            f"{'on' if DEFAULT_AUTO else 'off'}, {DEFAULT_ON_LAG})")
    add_patch_arguments(fix_options)
    parser.set_defaults(convention=None, auto=None, on_lag=None)
    parser.add_argument("--updates-per-epoch", type=int, metavar="N",
                        help="optimizer steps per epoch (else epoch boundaries are inferred from the scheduler's "
                        "step() calls and the DataLoader's passes)")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop the script before its optimizer step N + 1")
    parser.add_argument("--out", metavar="FILE.csv|FILE.json", help="write every step of every scheduler")
    parser.add_argument("--plot", metavar="FILE.png", help="draw what ran against v(t) (needs the [plot] extra)")
    parser.add_argument("--golden", metavar="FILE.json", help="compare the LRs that ran with a golden trace file")
    parser.add_argument("--update-golden", action="store_true", help="write the --golden file instead")
    parser.add_argument("--against-timm", action="append", metavar="VERSION",
                        help="audit the script again under this timm release (repeatable) and name the steps "
                        "whose LR differs")
    parser.add_argument("--timm-cache", metavar="DIR", help="where --against-timm releases are installed "
                        "(default: .nox/timm/<version> if present, else ~/.cache/timm-sched-fix/timm)")
    add_target_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        options = _check(args)
        if getattr(args, "watched", False) and hasattr(os, "fork"):
            return _watched(lambda: _audit(args, options))
        return _audit(args, options)
    except UsageError as error:
        print(f"timm-sched-fix audit: error: {error}", file=sys.stderr)
        return 2
    except TargetNotFound as error:  # Python's own message and exit code for a target it cannot run
        print(f"timm-sched-fix audit: {error}", file=sys.stderr)
        return error.exit_code


def _watched(audit: Callable[[], int]) -> int:
    """Run ``audit`` in a forked process and exit with its verdict; when that process ends without one (the
    script called ``os._exit``, a fatal signal, killed), say why on stderr and exit non-zero. The audit's
    temporary folders live in one folder, removed here whatever happened; SIGTERM, SIGINT and SIGHUP reach the
    audited process and are reported the same way. The command line audits this way (``cli.main`` with no
    argv); ``cli.main(argv)`` audits in its own process."""
    import shutil
    import signal
    import tempfile

    from timm_sched_fix import audit as audit_package
    from timm_sched_fix.audit import report

    watcher = os.getpid()
    folder = Path(tempfile.mkdtemp(prefix="timm-sched-fix-audit-"))
    verdict_file, exit_file = folder / "verdict", folder / "os_exit"
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        child = os.fork()
        if child == 0:  # the audited process: the command's own, with its verdict left for the watcher
            audit_package.SCRATCH = str(folder)
            _note_os_exit(exit_file)
            code = 2
            try:
                code = audit()
            except UsageError as error:
                print(f"timm-sched-fix audit: error: {error}", file=sys.stderr)
            except TargetNotFound as error:
                print(f"timm-sched-fix audit: {error}", file=sys.stderr)
                code = error.exit_code
            verdict_file.write_text(str(code))
            return code
        forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {number: signal.signal(number, lambda number, frame: os.kill(child, number))
                    for number in forwarded if signal.getsignal(number) is not signal.SIG_IGN}  # ignored: both
        try:
            _, status = os.waitpid(child, 0)
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        if verdict_file.exists():
            return int(verdict_file.read_text())
        ended = os.waitstatus_to_exitcode(status)
        if ended < 0:
            name = signal.Signals(-ended).name
            print(report.ended_by_signal(name), file=sys.stderr)
            return 128 - ended
        print(report.exited_without_report(exit_file.read_text() if exit_file.exists() else None, ended),
              file=sys.stderr)
        return ended or 1
    finally:
        if os.getpid() == watcher:  # the audited process leaves the folder to the watcher
            shutil.rmtree(folder, ignore_errors=True)


def _note_os_exit(path: Path) -> None:
    """In the audited process, ``os._exit`` leaves a note of where it was called (for the watcher's line); the
    processes it forks (multiprocessing's ``fork`` children end with ``os._exit``) exit as they would."""
    import functools

    from timm_sched_fix.audit.data import where

    audited, real_exit = os.getpid(), os._exit

    @functools.wraps(real_exit)
    def _exit(status: int) -> None:
        if os.getpid() == audited:
            try:
                path.write_text(f"os._exit({status!r}) at {where()}")
            except Exception:  # noqa: BLE001, S110 (the process exits anyway; the watcher says less)
                pass
        real_exit(status)

    os._exit = _exit


def _options(args: argparse.Namespace) -> Options | None:
    given = [f"--{name.replace('_', '-')}" for name in ("convention", "auto", "on_lag") if getattr(args, name)]
    if not args.fix:
        if given:
            raise UsageError(f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of the fix: "
                             "add --fix")
        return None
    return Options(**{name: getattr(args, name) for name in ("convention", "auto", "on_lag")
                      if getattr(args, name) is not None})


def _check(args: argparse.Namespace) -> Options | None:
    """Every usage error, before the script runs."""
    require_target(args, "audit")
    args.against_timm = args.against_timm or []
    if os.environ.get(ENV_AUDIT, "").strip():
        raise UsageError(f"this process is already audited ({ENV_AUDIT} is set: an outer timm-sched-fix audit "
                         "started it); run one audit, not one inside another")
    options = _options(args)
    for name in ("updates_per_epoch", "max_steps"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
    check_suffix("out", args.out, (".csv", ".json"))
    check_suffix("plot", args.plot, (".png",))
    check_suffix("golden", args.golden, (".json",))
    if args.update_golden and not args.golden:
        raise UsageError("--update-golden needs --golden FILE.json (the file to write)")
    if args.golden and not args.update_golden and not os.path.isfile(args.golden):
        raise UsageError(f"--golden {args.golden}: no such file; run once with --update-golden to write it")
    for option, path in (("out", args.out), ("plot", args.plot), ("golden", args.golden if args.update_golden
                                                                    else None)):
        check_output(option, path)
    from timm_sched_fix.audit.releases import check_version

    for version in args.against_timm:
        check_version(version)
    if args.against_timm and rank_of(os.environ):
        raise UsageError("--against-timm runs the script again in one process: use it outside torchrun")
    if args.plot:
        from timm_sched_fix.trace.plot import require_matplotlib

        require_matplotlib(UsageError)
    return options


def _audit(args: argparse.Namespace, options: Options | None) -> int:
    from timm_sched_fix.audit import ranks, report
    from timm_sched_fix.audit.analysis import analyse
    from timm_sched_fix.audit.children import Children
    from timm_sched_fix.audit.record import Recorder
    from timm_sched_fix.audit.report import Run, audit_document, golden_document, plot, report_lines, verdict, write_out

    rank = rank_of(os.environ)
    if rank is not None:
        ranks.forget_earlier_run(ranks.ranks_dir(os.environ), rank[0])
    recorder = Recorder(max_steps=args.max_steps)
    children = Children(options, args.updates_per_epoch, args.max_steps)
    with children:
        exit_code, ended, fix_failed = _run_script(recorder, options, args)
    audits = [analyse(record, args.updates_per_epoch, options) for record in recorder.records]
    code, summary = verdict(audits)
    if not audits and children.documents:
        summary = report.ONLY_CHILDREN_AUDITED
    run = Run([args.target, *args.args], args.module, options, args.updates_per_epoch, args.max_steps, exit_code,
              ended, rank)
    document = audit_document(run, recorder, audits, code, summary)
    lines = report_lines(run, recorder, audits, summary)
    if args.out:
        write_out(document, args.out)
        lines.append(report.wrote_line(args.out))
    if args.plot and audits:
        plot(audits, args.plot, report.plot_label(options), args.updates_per_epoch)
        lines.append(report.wrote_line(args.plot))
    elif args.plot:
        lines.append(report.no_plot_line(args.plot))
    if args.golden:
        code = max(code, _golden(args, document, lines, golden_document))
    if children.unreached(audited_here=bool(audits)):
        lines.append(report.unreached_line())
    _print(lines)
    if children.documents:
        child_lines, child_code = report.children_lines(children.documents)
        _print(child_lines)
        code = child_code if not audits else max(code, child_code)
    if children.unfinished:
        _print(["", *report.unfinished_lines(children.unfinished)])
        code = max(code, 1)
    for version in args.against_timm:
        code = max(code, _against(version, args, options, document))
    if rank is not None:
        code = max(code, _ranks(document, rank))
    if fix_failed:  # this package's own error is no failure of the script: wrong (or undecidable), not 3
        return max(code, 1)
    return EXIT_SCRIPT_FAILED if exit_code else code


def _run_script(recorder: Any, options: Options | None,
                args: argparse.Namespace) -> tuple[int, str | None, bool]:
    """Run the script with the recorder installed (and the patch, with --fix): its exit code, how it ended, and whether
    it ended by an exception raised in this package's own code (the fix's or the audit's, not the script's)."""
    import contextlib

    from timm_sched_fix._patching import patched
    from timm_sched_fix.audit.record import MaxStepsReached

    patch = patched(convention=options.convention, auto=options.auto, on_lag=options.on_lag) if options \
        else contextlib.nullcontext()
    with patch:
        recorder.install()
        try:
            execute(args.target, args.args, module=args.module)
        except MaxStepsReached:
            return 0, None, False
        except TargetNotFound:  # nothing ran: Python's own message, not a failing script
            raise
        except SystemExit as exit_:
            if exit_.code is None or exit_.code == 0:
                return 0, None, False
            if isinstance(exit_.code, int):
                return exit_.code, f"the script exited with code {exit_.code}", False
            print(exit_.code, file=sys.stderr)
            return 1, f"the script exited: {exit_.code}", False
        except Exception as error:  # noqa: BLE001 (the script's own failure: shown, and the report still made)
            traceback.print_exc()
            if _raised_here(error):
                return 1, (f"timm_sched_fix raised {type(error).__name__} in the script: {error} (an error of the fix "
                           "or of the audit, not of the script's own code)"), True
            return 1, f"the script raised {type(error).__name__}: {error}", False
        finally:
            recorder.uninstall()
    return 0, None, False


def _raised_here(error: BaseException) -> bool:
    """Whether the innermost frame of the exception's traceback is in this package (not the script, timm or torch)."""
    traceback_ = error.__traceback__
    while traceback_ is not None and traceback_.tb_next is not None:
        traceback_ = traceback_.tb_next
    if traceback_ is None:
        return False
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    return os.path.abspath(traceback_.tb_frame.f_code.co_filename).startswith(package)


def _golden(args: argparse.Namespace, document: dict, lines: list[str], golden_document: Any) -> int:
    import json

    from timm_sched_fix.audit.report import golden_differences, golden_lines, golden_written_line

    if args.update_golden:
        try:
            with open(args.golden, "w") as stream:
                json.dump(golden_document(document, args.updates_per_epoch), stream, indent=1)
                stream.write("\n")
        except OSError as error:
            raise UsageError(f"--golden {args.golden}: cannot write it ({error.strerror})") from None
        lines.append(golden_written_line(args.golden))
        return 0
    try:
        with open(args.golden) as stream:
            stored = json.load(stream)
    except (OSError, ValueError) as error:
        raise UsageError(f"--golden {args.golden}: not a golden trace file ({error})") from None
    if not isinstance(stored, dict) or "lrs" not in stored:
        raise UsageError(f"--golden {args.golden}: not a golden trace file (no 'lrs')")
    problems = golden_differences(stored, document)
    lines += golden_lines(args.golden, stored, document, problems)
    return 1 if problems else 0


def _child_arguments(args: argparse.Namespace, options: Options | None) -> list[str]:
    """This audit's arguments for a child: the fix, the epoch length and --max-steps, then the script."""
    child: list[str] = []
    if options is not None:
        child += ["--fix", "--convention", options.convention, "--on-lag", options.on_lag] + ["--auto"] * options.auto
    for name in ("updates_per_epoch", "max_steps"):
        if getattr(args, name) is not None:
            child += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return child + ["-m"] * args.module + [args.target, *args.args]


def _against(version: str, args: argparse.Namespace, options: Options | None, document: dict) -> int:
    from timm_sched_fix.audit.releases import audit_under, release_dir
    from timm_sched_fix.audit.report import against_lines

    try:
        folder = release_dir(version, args.timm_cache)
        other = audit_under(version, folder, _child_arguments(args, options))
    except UsageError as error:
        print(f"timm-sched-fix audit: error: {error}", file=sys.stderr)
        return 2
    shown = os.path.relpath(folder) if not os.path.relpath(folder).startswith("..") else str(folder)
    lines, differ = against_lines(document, other, shown)
    _print(lines)
    return 1 if differ else 0


def _ranks(document: dict, rank: tuple[int, int]) -> int:
    from timm_sched_fix.audit.ranks import hand_over, ranks_dir
    from timm_sched_fix.audit.report import rank_lines

    documents = hand_over(document, ranks_dir(os.environ), *rank)
    if not documents:
        return 0
    lines, disagree = rank_lines(documents)
    _print([""] + lines)
    return 1 if disagree else 0


def _print(lines: list[str]) -> None:
    """One write, so the reports of several ranks do not interleave line by line."""
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
