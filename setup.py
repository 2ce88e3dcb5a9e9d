"""The one file pyproject.toml cannot declare: ``timm_sched_fix.pth``, the process start-up hook
(timm_sched_fix/runner/startup.py), which must land at the top of site-packages, next to the package, whichever way
the package is installed (wheel, ``pip install --user``, a venv, ``pip install -e``).

Its text is ``PTH_TEXT`` of timm_sched_fix/runner/startup.py, beside the code it runs. A ``build`` sub-command
writes it into the build directory, so the wheel carries it at its top; for a PEP 660 editable wheel, whose build
directory is not packed, into the unpacked editable wheel (where setuptools also puts scripts and data). A separate
sub-command rather than a ``build_py`` subclass: setuptools runs a customised ``build_py`` of an editable install
with its errors turned into a warning, and a missing hook must fail the build.
"""

import importlib
import os
import sys
from typing import ClassVar

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.errors import SetupError

HERE = os.path.dirname(os.path.abspath(__file__))
#: The module that holds the file's name and text, and its source files (the package's ``__init__`` imports only
#: its exceptions and options: nothing beyond the standard library, so the build environment needs no torch or timm).
STARTUP = "timm_sched_fix.runner.startup"
SOURCES = ["timm_sched_fix/runner/startup.py", "timm_sched_fix/options.py"]


def _startup_of_this_tree():
    """timm_sched_fix.runner.startup of this source tree, even in a process that has imported another copy of the
    package (an installed one's start-up hook does, in a build with ``TIMM_SCHED_FIX=1`` set); that copy is put
    back afterwards."""
    def ours(name):
        return name.partition(".")[0] == "timm_sched_fix"

    others = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in others:
        del sys.modules[name]
    sys.path.insert(0, HERE)
    try:
        return importlib.import_module(STARTUP)
    finally:
        sys.path.remove(HERE)
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(others)


startup = _startup_of_this_tree()


def _write(path, text):
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


class build_pth(Command):
    """Write timm_sched_fix.pth where the installer puts it into site-packages."""

    description = "write timm_sched_fix.pth (the process start-up hook) at the top of the wheel"
    user_options: ClassVar[list] = []
    editable_mode = False

    def initialize_options(self):
        self.build_lib = None

    def finalize_options(self):
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def run(self):
        target = os.path.join(self._editable_wheel_dir() if self.editable_mode else self.build_lib, startup.PTH_NAME)
        self.mkpath(os.path.dirname(target))
        self.execute(_write, (target, startup.PTH_TEXT), f"writing {target}")

    def _editable_wheel_dir(self):
        # setuptools' editable_wheel points the install command at the unpacked wheel, which holds the dist-info
        target = self.get_finalized_command("install").install_lib
        if not target or not any(name.endswith(".dist-info") for name in os.listdir(target)):
            raise SetupError(f"cannot find the unpacked editable wheel (install_lib={target!r}): this setuptools "
                             f"builds editable wheels in a way setup.py does not know, and {startup.PTH_NAME} would "
                             "be missing")
        return target

    def get_source_files(self):
        return list(SOURCES)

    def get_outputs(self):
        return [] if self.editable_mode else [os.path.join(self.build_lib, startup.PTH_NAME)]

    def get_output_mapping(self):
        # the file is written, not copied: no source file maps to it
        return {}


class build_with_pth(build):
    sub_commands: ClassVar[list] = [*build.sub_commands, ("build_pth", None)]


setup(cmdclass={"build": build_with_pth, "build_pth": build_pth})
