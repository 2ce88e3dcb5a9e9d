"""The timm version matrix and timm's own scheduler tests under the fix (``.venv/bin/nox``).

Every session runs in the calling environment (``venv_backend="none"``), so torch is installed once: each
timm version is installed without dependencies into ``.nox/timm/<version>`` and put first on
``PYTHONPATH``. Sessions: ``matrix`` (the suite against every version in ``MATRIX``, and the installed timm
if it is newer), ``torch`` (the suite on each torch release of ``TORCH_MATRIX`` with its timm, each in a venv of
its own under ``.nox/torch``: the one exception to the shared environment), ``peer`` (timm's ``tests/test_scheduler.py`` from the sdist, run with
``pytest --timm-sched-fix``, for every version that ships it), ``benchmarks`` (each of
``SMOKE_BENCHMARKS`` with ``--smoke`` on the installed timm: it must run and print; no timing is checked),
``docs`` (the documentation site with Sphinx and MyST, warnings as errors, offline), ``engines`` (the DeepSpeed tests, marked ``engines``,
against the installed timm, after installing the ``engines`` extra) and ``package`` (sdist and wheel built, checked
with twine, the wheel installed into a clean venv and smoke-tested) run by default; ``tests`` (the suite
against the installed timm alone, which the matrix already covers) on request. The suite runs on two pytest-xdist workers, one per core, without the ``engines`` tests. pytest's exit code 5 (nothing collected)
fails a session like any other non-zero code.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import sysconfig
import tarfile
import tempfile
import textwrap
import zipfile
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
WORK = ROOT / ".nox"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
SUITE = [*PYTEST, "-n", "2", "-m", "not engines"]  # pytest-xdist: the 2-core machines run two test processes

#: Supported range, oldest first: the releases the README names, the newest last.
MATRIX = ["0.4.12", "0.5.4", "0.6.13", "0.9.2", "0.9.16", "1.0.3", "1.0.15", "1.0.24", "1.0.31"]
#: Scripts in benchmarks/ that CI runs with ``--smoke``.
SMOKE_BENCHMARKS = ["overhead.py", "import_cost.py", "compiled.py", "trace_cost.py", "startup_cost.py",
                    "audit_cost.py", "compare_checkouts.py"]
#: Files the built distributions must hold (``{version}``: the package's); other files may be there too.
WHEEL_FILES = ["timm_sched_fix/__init__.py", "timm_sched_fix/auto.py", "timm_sched_fix/pytest_plugin.py",
               "timm_sched_fix/py.typed", "timm_sched_fix.pth", "timm_sched_fix-{version}.dist-info/licenses/LICENSE",
               "timm_sched_fix-{version}.dist-info/entry_points.txt"]
SDIST_FILES = ["LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "setup.py", "MANIFEST.in", "noxfile.py",
               ".ci/run", "timm_sched_fix/__init__.py", "timm_sched_fix/runner/startup.py", "tests/conftest.py",
               "tests/helpers/support.py", "tests/helpers/defect_cases.py", "tests/helpers/resume_worker.py",
               "tests/helpers/distributed_worker.py", "tests/helpers/version_worker.py",
               "tests/helpers/audit_scripts/deit_style.py",
               "examples/warmup_demo.py", "examples/timm_style_train.py", "benchmarks/overhead.py", "docs/conf.py",
               "docs/index.md", "docs/api.rst", "docs/trace.png", "docs/howto/plain-loop.md",
               "docs/reference/terms.md", "docs/explanation/timing.md"]
#: The torch axis, oldest first: (torch, timm) per session, each in a venv of its own (``.nox/torch/<torch>``):
#: the oldest supported torch (``compat.OLDEST_TORCH``) with the oldest timm it was run with in practice, a middle
#: release with the last timm that passes torch's deprecated ``verbose``, and the newest torch with the newest timm.
#: The shared environment's torch (the on-disk 2.14.1) runs the timm matrix above.
TORCH_MATRIX = [("2.0.1", "0.6.13"), ("2.4.1", "1.0.15"), ("2.15.0", "1.0.31")]
#: What else a torch release needs pinned in its venv: numpy 1 for torch built against it (before 2.3), and
#: setuptools < 81 (which removed ``pkg_resources``) for the Lightning that torch 2.0 resolves (2.3.3 imports it).
TORCH_PINS = {"2.0.1": ["numpy<2", "setuptools<81"]}
#: The torch releases whose session also runs the DeepSpeed tests (the engines extra installs there).
TORCH_WITH_ENGINES = ("2.15.0",)
#: The torch releases whose session leaves out the release-independent tests, for CI time: the middle one (the
#: oldest and the newest torch run them; docs/testing.md has the budget).
TORCH_WITHOUT_RELEASE_INDEPENDENT = ("2.4.1",)
#: The first release whose sdist ships tests/test_scheduler.py.
FIRST_WITH_SCHEDULER_TESTS = (1, 0, 24)

nox.options.default_venv_backend = "none"
nox.options.sessions = ["matrix", "torch", "peer", "benchmarks", "docs", "package", "engines"]
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


@nox.session(name="torch")
@nox.parametrize(("torch_version", "timm"), TORCH_MATRIX, ids=[f"{torch}-{timm}" for torch, timm in TORCH_MATRIX])
def torch_axis(session: nox.Session, torch_version: str, timm: str) -> None:
    """The suite on another torch release, in a venv of its own made here (``.nox/torch/<torch>``, reused when it
    holds what this session installs): torch from the package index (``PIP_CONSTRAINT`` replaces the constraint of
    pip's configuration, which caps torch on these machines), this project editable with the ``test`` extra (and
    ``engines`` where ``TORCH_WITH_ENGINES`` says), and timm. Every test but the DeepSpeed ones, release-independent
    ones included (they depend on torch) except where ``TORCH_WITHOUT_RELEASE_INDEPENDENT`` says, 100 examples per
    property; then the DeepSpeed tests where installed."""
    venv = WORK / "torch" / torch_version
    python = str(venv / "bin" / "python")
    engines = torch_version in TORCH_WITH_ENGINES
    pins = [f"torch=={torch_version}", f"timm=={timm}", *TORCH_PINS.get(torch_version, [])]
    installed = venv / "installed.txt"  # written last: what a complete install holds
    wanted = " ".join([*pins, "engines" if engines else "", str(ROOT)])
    if not installed.exists() or installed.read_text() != wanted:
        shutil.rmtree(venv, ignore_errors=True)
        session.run(sys.executable, "-m", "venv", str(venv))
        constraints = venv / "constraints.txt"
        constraints.write_text("".join(f"{pin}\n" for pin in pins))
        env = {"PIP_CONSTRAINT": str(constraints)}
        session.run(python, "-m", "pip", "install", "-q", f"torch=={torch_version}", *TORCH_PINS.get(torch_version, []),
                    env=env)
        extras = "test,engines" if engines else "test"
        session.run(python, "-m", "pip", "install", "-q", "-e", f"{ROOT}[{extras}]", f"timm=={timm}", env=env)
        installed.write_text(wanted)
    env = {"PYTHONPATH": None}
    session.run(python, "-c", _FOUND_TIMM + f"assert found == {timm!r}, found; "
                f"assert importlib.metadata.version('torch').split('+')[0] == {torch_version!r}", env=env)
    pytest = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    fewer = ["--skip-release-independent"] if torch_version in TORCH_WITHOUT_RELEASE_INDEPENDENT else []
    session.run(*pytest, "-n", "2", "-m", "not engines", "--hypothesis-profile=matrix", *fewer, *session.posargs,
                env=env)
    if engines:
        session.run(*pytest, "-m", "engines", str(ROOT / "tests" / "test_engines.py"), *session.posargs, env=env)


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


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (``docs/``: the Markdown pages through MyST, the API reference ``docs/api.rst`` from
    the docstrings by autodoc) into ``docs/_build/html``, with warnings as errors: a page, a link or a docstring
    that does not render fails the session. Nothing is fetched from the network."""
    build = ROOT / "docs" / "_build"
    session.run(sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
                "-d", str(build / "doctrees"), str(ROOT / "docs"), str(build / "html"), env={"PYTHONPATH": str(ROOT)})


#: Run by the wheel's interpreter in the clean venv: the package imported is the wheel's,
#: ``import timm_sched_fix.auto`` patches timm so that a scheduler's first step gets v(0), and the start-up hook
#: setup.py wrote into the wheel is the package's ``PTH_TEXT``.
_INSTALLED_SMOKE = """
import pathlib, sys, sysconfig
import timm_sched_fix
site = pathlib.Path(sysconfig.get_paths()["purelib"]).resolve()
where = pathlib.Path(timm_sched_fix.__file__).resolve()
assert where.is_relative_to(site), f"imported {where}, not the wheel's copy under {site}"
import timm_sched_fix.auto
assert timm_sched_fix.is_patched()
import torch
from timm.scheduler import TanhLRScheduler
optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
assert TanhLRScheduler(optimizer, t_initial=10).last_t == 0
print("installed:", where.parent, "timm_sched_fix.auto patched timm")
from timm_sched_fix.runner import startup
assert (site / startup.PTH_NAME).read_text() == startup.PTH_TEXT, "the wheel's start-up hook is not PTH_TEXT"
"""

#: The pytest plugin of the installed wheel: ``--timm-sched-fix begin`` patches, the fixture exists.
_PLUGIN_SMOKE = """
import pathlib, sysconfig
import timm_sched_fix
import timm_sched_fix.pytest_plugin

def test_the_plugin_is_the_wheels_and_patches():
    site = pathlib.Path(sysconfig.get_paths()["purelib"]).resolve()
    assert pathlib.Path(timm_sched_fix.pytest_plugin.__file__).resolve().is_relative_to(site)
    assert timm_sched_fix.is_patched()
    import torch
    from timm.scheduler import CosineLRScheduler
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert CosineLRScheduler(optimizer, t_initial=5).state_dict()["timm_sched_fix"]["convention"] == "begin"

def test_the_golden_trace_fixture_is_there(lr_trace_golden):
    assert lr_trace_golden.path("x").name == "x.json"
"""


@nox.session
def package(session: nox.Session) -> None:
    """Build the sdist and, from it, the wheel (``python -m build``), ``twine check --strict`` both, check what
    they hold, collect the sdist's test suite, and install the wheel into a clean venv outside the checkout,
    where the console script, ``import timm_sched_fix.auto`` and the pytest plugin must work from the installed
    files. The venv gets the wheel alone (``--no-deps``) and then reads torch, timm, wrapt and pytest from this
    environment through a path entry placed after its own site-packages, so torch is not installed again."""
    dist = WORK / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run(sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT), silent=True)
    (sdist,), (wheel,) = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    session.run(sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel))
    version = wheel.name.split("-")[1]
    with zipfile.ZipFile(wheel) as archive:
        wheel_files = set(archive.namelist())
    with tarfile.open(sdist) as archive:
        sdist_files = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for label, required, found in (("wheel", WHEEL_FILES, wheel_files), ("sdist", SDIST_FILES, sdist_files)):
        missing = [name.format(version=version) for name in required if name.format(version=version) not in found]
        if missing:
            session.error(f"the {label} lacks {missing}")
        session.log(f"{label}: {len(found)} files, every required one present")
    with tempfile.TemporaryDirectory(prefix="timm-sched-fix-package-") as scratch:
        scratch_dir = Path(scratch)
        with tarfile.open(sdist) as archive:
            archive.extractall(scratch_dir, filter="data")
        unpacked = scratch_dir / sdist.name.removesuffix(".tar.gz")
        # the sdist's test suite is complete: it collects with the sdist's own package (exit code 5 if empty)
        with session.chdir(unpacked):
            session.run(*PYTEST, "--collect-only", env={"PYTHONPATH": str(unpacked)}, silent=True)
        venv = scratch_dir / "venv"
        session.run(sys.executable, "-m", "venv", "--without-pip", str(venv))
        python = venv / "bin" / "python"
        session.run(sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel))
        purelib = session.run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                              silent=True).strip()
        shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        (Path(purelib) / "_shared_deps_for_ci.pth").write_text("".join(f"{path}\n" for path in sorted(shared)))
        clean = {"PYTHONPATH": None, "PYTHONNOUSERSITE": "1"}
        (scratch_dir / "test_plugin_smoke.py").write_text(textwrap.dedent(_PLUGIN_SMOKE))
        with session.chdir(scratch_dir):  # outside the checkout: nothing of it is importable from here
            session.run(str(venv / "bin" / "timm-sched-fix"), "--version", env=clean)
            session.run(str(venv / "bin" / "timm-sched-fix"), "check", env=clean, silent=True)
            session.run(str(python), "-c", _INSTALLED_SMOKE, env=clean)
            session.run(str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timm-sched-fix", "begin",
                        "test_plugin_smoke.py", env=clean)


@nox.session
def engines(session: nox.Session) -> None:
    """tests/test_engines.py (DeepSpeed on CPU, one process running every case) against the installed timm, the
    newest: DeepSpeed comes from the ``engines`` extra, installed into the calling environment."""
    session.run(sys.executable, "-m", "pip", "install", "-q", "-e", f"{ROOT}[engines]")
    session.run(*PYTEST, "-m", "engines", str(ROOT / "tests" / "test_engines.py"), *session.posargs,
                env={"PYTHONPATH": str(ROOT)})
