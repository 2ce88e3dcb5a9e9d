"""What the command-line tools (``trace``, ``audit``) share: the usage error, the table layout and the checks
of output file names. No torch or timm import, so mistakes in the arguments are reported at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path


class UsageError(Exception):
    """A mistake in the settings or arguments; reported as one line naming the flag, never as a traceback
    (exit code 2)."""


def check_suffix(option: str, path: str | None, suffixes: Sequence[str]) -> None:
    """Refuse an output file name ``--option path`` that does not end in one of ``suffixes``."""
    if path and Path(path).suffix.lower() not in suffixes:
        raise UsageError(f"--{option} {path}: the file name must end in {' or '.join(suffixes)}")


def check_output(option: str, path: str | None) -> None:
    """Refuse, before anything runs, an output file ``--option path`` that cannot be written: a folder that does
    not exist, is not a folder or is not writable, or a path that is a folder or a read-only file."""
    if not path:
        return
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise UsageError(f"--{option} {path}: the folder {str(folder)!r} does not exist" if not folder.exists()
                         else f"--{option} {path}: {str(folder)!r} is not a folder")
    if target.is_dir():
        raise UsageError(f"--{option} {path}: is a folder, give a file name")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise UsageError(f"--{option} {path}: cannot write {'it' if target.exists() else 'into ' + repr(str(folder))}"
                         " (permission denied)")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str] | str], *, left: bool = False,
                 rule: bool = False) -> list[str]:
    """Columns two spaces apart under ``header``, right-aligned (``left``: left-aligned), with a line of dashes under
    the header if ``rule``; a row given as a plain string (``... 12 rows``) is printed as it is."""
    full = [row for row in rows if not isinstance(row, str)]
    widths = [max(len(line[i]) for line in [header, *full]) for i in range(len(header))]

    def line_of(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) if left else cell.rjust(width) for cell, width in zip(cells, widths))

    lines = [line_of(header)] + (["  ".join("-" * width for width in widths)] if rule else [])
    lines += [row if isinstance(row, str) else line_of(row) for row in rows]
    return [line.rstrip() for line in lines]


def rows_with_gaps(selected: Sequence[int], cells_of: Callable[[int], Sequence[str]]) -> list[Sequence[str] | str]:
    """The cells of the ``selected`` rows (increasing indices), with a ``... N rows`` line where rows are left out."""
    rows: list[Sequence[str] | str] = []
    previous = -1
    for row in selected:
        if row - previous > 1:
            rows.append(f"... {row - previous - 1:,} rows")
        previous = row
        rows.append(cells_of(row))
    return rows
