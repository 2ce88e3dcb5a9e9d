"""The process start-up hook, like coverage.py's: ``TIMM_SCHED_FIX=1`` in the environment makes every Python
process that starts call ``patch()`` before its own code runs, with the options of ``TIMM_SCHED_FIX_CONVENTION``,
``TIMM_SCHED_FIX_AUTO`` and ``TIMM_SCHED_FIX_ON_LAG`` (``TIMM_SCHED_FIX_REPORT=1``: and report at exit);
``TIMM_SCHED_FIX_AUDIT=<folder>``, set by ``timm-sched-fix audit`` for the processes its script starts, makes
each record its schedulers and write its audit there at exit (audit/children.py).

``timm_sched_fix.pth``, installed into site-packages next to the package (setup.py writes :data:`PTH_TEXT` into
the wheel and into the editable wheel), holds one line that ``site`` runs in every Python process of the
environment. It reads the environment and, with every variable of :data:`ACTIONS` unset or off (``0``, ``false``,
``no``, ``off``, empty), stops there: nothing of this package is imported. Otherwise it imports this module and
calls :func:`run`.

The actions run once ``site`` has finished setting up ``sys.path``, at its ``import sitecustomize``: a ``.pth``
line runs while ``site`` is still adding directories, so a dependency in a directory it adds later (wrapt in the
system site-packages, this package ``pip install --user``-ed) is not importable yet. Their errors never stop
the process: a bad value is refused, naming the variable, once on stderr, and the process runs stock timm.

Another environment-driven action is one more entry in :data:`ACTIONS` (:data:`PTH_TEXT` follows; installs made
before it was added do not run it: the audit's ``hook_audits_children`` tells such an install apart).

setup.py imports this module from the source tree to write the file: it must import nothing beyond the standard
library and timm_sched_fix.options (the package's ``__init__`` imports only its exceptions and options).
"""

from __future__ import annotations

import os
import site
import sys
from collections.abc import Callable

from timm_sched_fix.options import ENV_AUDIT, ENV_REPORT, ENV_SWITCH, flag_from_env, options_from_env

#: The file setup.py installs into site-packages.
PTH_NAME = "timm_sched_fix.pth"
#: A variable set to one of these (any case, spaces stripped) or unset is off; :data:`PTH_TEXT` has the same list.
OFF = ("", "0", "false", "no", "off")
#: Where the actions run: when ``site`` imports these (its last step), or, for a .pth that a later
#: ``site.addsitedir()`` processes, at the first import of timm.
_TRIGGERS = ("sitecustomize", "usercustomize", "timm")

_started = False


def _patch_from_environment() -> None:
    """``TIMM_SCHED_FIX``: ``patch()`` with the options of the environment, and the report if it asks for one."""
    flag_from_env(os.environ, ENV_SWITCH)  # refuses what is neither on nor off
    options = options_from_env(os.environ)
    report = flag_from_env(os.environ, ENV_REPORT)
    from timm_sched_fix._patching import patch

    patch(convention=options.convention, auto=options.auto, on_lag=options.on_lag)
    if report:
        from timm_sched_fix.runner import report as reporting

        reporting.enable()


def _audit_from_environment() -> None:
    """``TIMM_SCHED_FIX_AUDIT``: record this process for ``timm-sched-fix audit`` (after the patch, if any)."""
    from timm_sched_fix.audit.children import start

    start(options_from_env(os.environ) if switched_on(ENV_SWITCH) else None)


#: Variable -> what the process does when it is on (not in :data:`OFF`), in this order.
ACTIONS: dict[str, Callable[[], None]] = {ENV_SWITCH: _patch_from_environment, ENV_AUDIT: _audit_from_environment}


def _python_tuple(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f'"{value}"' for value in values) + ")"


#: The text of ``timm_sched_fix.pth``: one line, which ``site`` runs because it starts with ``import``. It tests the
#: variables of :data:`ACTIONS` against :data:`OFF` as :func:`switched_on` does, and only when one is on imports
#: this module and calls :func:`run`. The names are double-quoted: ``hook_audits_children`` looks for them so.
PTH_TEXT = (f'import os; any(os.environ.get(name, "").strip().lower() not in {_python_tuple(OFF)} for name in '
            f'{_python_tuple(tuple(ACTIONS))}) and __import__("timm_sched_fix.runner.startup").runner.startup.run()\n')


def switched_on(name: str) -> bool:
    """Whether the variable ``name`` is set to something other than an off value."""
    return os.environ.get(name, "").strip().lower() not in OFF


def run() -> None:
    """Called by ``timm_sched_fix.pth`` when a variable of :data:`ACTIONS` is on: the actions run as soon as
    ``site`` is done (idempotent: a second copy of the .pth, in another site directory, changes nothing)."""
    global _started
    if _started:
        return
    _started = True
    sys.meta_path.insert(0, _AfterSite())


class _AfterSite:
    """A one-shot ``sys.meta_path`` entry: runs the actions at the first import of a :data:`_TRIGGERS` name, then
    removes itself and lets the import go on as if it had never been there."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in _TRIGGERS:
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            run_actions()


def run_actions() -> None:
    """Run each switched-on action; a failing one is reported on stderr and the process goes on."""
    for name, action in ACTIONS.items():
        if switched_on(name):
            try:
                action()
            except Exception as error:  # noqa: BLE001 - the process's own work goes on, stock
                _refuse(name, error)


def _refuse(name: str, error: Exception) -> None:
    message = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
    sys.stderr.write(f"timm-sched-fix: {message}; {name} is ignored in this process (pid {os.getpid()})\n")
    sys.stderr.flush()


def hook_installed() -> bool:
    """Whether ``timm_sched_fix.pth`` is in a site-packages directory this interpreter processes, i.e. whether
    the Python processes it starts run the start-up hook."""
    directories = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        directories.append(site.getusersitepackages())
    return any(os.path.isfile(os.path.join(directory, PTH_NAME)) for directory in directories)
