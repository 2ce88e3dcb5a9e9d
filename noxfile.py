"""The timm version matrix and timm's own scheduler tests under the fix (``.venv/bin/nox``).

Every session runs in the calling environment (``venv_backend="none"``), so torch is installed once: each
timm version is installed without dependencies into ``.nox/timm/<version>`` and put first on
``PYTHONPATH``. Sessions: ``matrix`` (the suite against every version in ``MATRIX``, and the installed timm
if it is newer), ``peer`` (timm's ``tests/test_scheduler.py`` from the sdist, run with
``pytest --timm-sched-fix``, for every version that ships it) and ``benchmarks`` (each of
``SMOKE_BENCHMARKS`` with ``--smoke`` on the installed timm: it must run and print; no timing is checked)
run by default; ``tests`` (the suite against the installed timm alone, which the matrix already covers) on
request. The suite runs on two pytest-xdist workers, one per core. pytest's exit code 5 (nothing collected)
fails a session like any other non-zero code.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import tarfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".nox"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
SUITE = [*PYTEST, "-n", "2"]  # pytest-xdist: the 2-core machines run two test processes

#: Supported range, oldest first: the releases the README names, the newest last.
MATRIX = ["0.4.12", "0.5.4", "0.6.13", "0.9.2", "0.9.16", "1.0.3", "1.0.15", "1.0.24", "1.0.31"]
#: Scripts in benchmarks/ that CI runs with ``--smoke``.
SMOKE_BENCHMARKS = ["overhead.py", "import_cost.py", "compiled.py", "trace_cost.py", "audit_cost.py"]
#: The first release whose sdist ships tests/test_scheduler.py.
FIRST_WITH_SCHEDULER_TESTS = (1, 0, 24)

nox.options.default_venv_backend = "none"
nox.options.sessions = ["matrix", "peer", "benchmarks"]
nox.options.error_on_missing_interpreters = True


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3])


def _matrix_versions() -> list[str]:
    """``MATRIX``, plus the installed timm if it is a newer release than the newest there."""
    installed = importlib.metadata.version("timm")
    return MATRIX + [installed] if _release(installed) > _release(MATRIX[-1]) else list(MATRIX)


def _peer_versions() -> list[str]:
    """Matrix versions with timm's scheduler tests."""
    return [v for v in _matrix_versions() if _release(v) >= FIRST_WITH_SCHEDULER_TESTS]


def _timm_path(session: nox.Session, version: str) -> list[str]:
    """PYTHONPATH entries that make ``version`` the imported timm: none for the environment's own timm
    (so tests that need the environment's own release, such as the cross-release test, run there),
    otherwise its ``--target`` copy."""
    if version == importlib.metadata.version("timm"):
        return []
    return [str(_install_timm(session, version))]


def _install_timm(session: nox.Session, version: str) -> Path:
    """timm ``version`` without dependencies in its own directory (reused when already there)."""
    target = WORK / "timm" / version
    if not (target / "timm" / "__init__.py").exists():
        session.run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    f"timm=={version}")
    return target


#: Under a session's environment: the version of the timm that ``import timm`` finds (its ``timm/version.py``,
#: which its ``__init__`` imports ``__version__`` from), without importing timm, which imports torch (~5 s).
_FOUND_TIMM = ("import importlib.metadata, importlib.util, pathlib, runpy; spec = importlib.util.find_spec('timm'); "
               "found = runpy.run_path(str(pathlib.Path(spec.origin).with_name('version.py')))['__version__']; "
               "print('timm', found, 'from', pathlib.Path(spec.origin).parent, "
               "'torch', importlib.metadata.version('torch')); ")


def _check_timm(session: nox.Session, version: str, env: dict[str, str]) -> None:
    session.run(sys.executable, "-c", _FOUND_TIMM + f"assert found == {version!r}, found", env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """The suite against the installed timm (the newest, as ``pip install timm`` resolves it)."""
    session.run(*SUITE, *session.posargs, env={"PYTHONPATH": str(ROOT)})


@nox.session
@nox.parametrize("timm", _matrix_versions(), ids=_matrix_versions())
def matrix(session: nox.Session, timm: str) -> None:
    """The suite against one timm release, on the shared torch: all of it against the environment's own timm;
    against an older release, 100 examples per property and without the tests marked release_independent."""
    timm_path = _timm_path(session, timm)
    env = {"PYTHONPATH": os.pathsep.join([*timm_path, str(ROOT)])}
    _check_timm(session, timm, env)
    # An older release (see tests/conftest.py): fewer property examples, and the tests of surfaces the release
    # does not change run only in the session of the environment's own timm.
    older_release = ["--hypothesis-profile=matrix", "--skip-release-independent"] if timm_path else []
    session.run(*SUITE, *older_release, *session.posargs, env=env)


@nox.session
@nox.parametrize("timm", _peer_versions(), ids=_peer_versions())
@nox.parametrize("convention", ["end", "begin"], ids=["end", "begin"])
def peer(session: nox.Session, timm: str, convention: str) -> None:
    """timm's own tests/test_scheduler.py (fetched from its sdist) with ``pytest --timm-sched-fix=<convention>``."""
    env = {"PYTHONPATH": os.pathsep.join(_timm_path(session, timm))}
    _check_timm(session, timm, env)
    suite = WORK / "peer" / timm
    test_file = suite / "test_scheduler.py"
    if not test_file.exists():
        sdists = WORK / "sdist"
        session.run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    f"timm=={timm}", "-d", str(sdists))
        with tarfile.open(sdists / f"timm-{timm}.tar.gz") as sdist:
            try:
                member = sdist.extractfile(f"timm-{timm}/tests/test_scheduler.py")
            except KeyError:
                session.error(f"timm {timm} sdist has no tests/test_scheduler.py")
            suite.mkdir(parents=True, exist_ok=True)
            test_file.write_bytes(member.read())
    (suite / "pytest.ini").write_text("[pytest]\n")  # keep this project's pytest settings out of timm's suite
    session.run(*PYTEST, "-rxX", f"--timm-sched-fix={convention}", "--rootdir", str(suite),
                "-c", str(suite / "pytest.ini"), str(test_file), *session.posargs, env=env)


@nox.session
@nox.parametrize("benchmark", SMOKE_BENCHMARKS, ids=SMOKE_BENCHMARKS)
def benchmarks(session: nox.Session, benchmark: str) -> None:
    """``benchmarks/<benchmark> --smoke`` on the installed timm: it runs and prints; shared machines are too
    noisy for timing checks, so the ratios are read, not asserted."""
    session.run(sys.executable, str(ROOT / "benchmarks" / benchmark), "--smoke", env={"PYTHONPATH": str(ROOT)})
