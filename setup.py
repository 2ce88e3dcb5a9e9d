"""The one file pyproject.toml cannot declare: ``timm_sched_fix.pth``, the process start-up hook
(timm_sched_fix/startup.py), which must land at the top of site-packages, next to the package, whichever way the
package is installed (wheel, ``pip install --user``, a venv, ``pip install -e``).

A ``build`` sub-command copies it into the build directory, so the wheel carries it at its top; for a PEP 660
editable wheel, whose build directory is not packed, into the unpacked editable wheel (where setuptools also puts
scripts and data). A separate sub-command rather than a ``build_py`` subclass: setuptools runs a customised
``build_py`` of an editable install with its errors turned into a warning, and a missing hook must fail the build.
"""

import os
from typing import ClassVar

from setuptools import Command, setup
from setuptools.command.build import build
from setuptools.errors import SetupError

PTH = "timm_sched_fix.pth"


class build_pth(Command):
    """Copy timm_sched_fix.pth to where the installer puts it into site-packages."""

    description = "put timm_sched_fix.pth (the process start-up hook) at the top of the wheel"
    user_options: ClassVar[list] = []
    editable_mode = False

    def initialize_options(self):
        self.build_lib = None

    def finalize_options(self):
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def run(self):
        target = self._editable_wheel_dir() if self.editable_mode else self.build_lib
        self.copy_file(PTH, os.path.join(target, PTH), preserve_mode=False)

    def _editable_wheel_dir(self):
        # setuptools' editable_wheel points the install command at the unpacked wheel, which holds the dist-info
        target = self.get_finalized_command("install").install_lib
        if not target or not any(name.endswith(".dist-info") for name in os.listdir(target)):
            raise SetupError(f"cannot find the unpacked editable wheel (install_lib={target!r}): this setuptools "
                             f"builds editable wheels in a way setup.py does not know, and {PTH} would be missing")
        return target

    def get_source_files(self):
        return [PTH]

    def get_outputs(self):
        return [] if self.editable_mode else [os.path.join(self.build_lib, PTH)]

    def get_output_mapping(self):
        return {} if self.editable_mode else {os.path.join(self.build_lib, PTH): PTH}


class build_with_pth(build):
    sub_commands: ClassVar[list] = [*build.sub_commands, ("build_pth", None)]


setup(cmdclass={"build": build_with_pth, "build_pth": build_pth})
