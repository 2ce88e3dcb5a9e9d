"""The ranks of a multi-process run (``RANK`` and ``WORLD_SIZE`` in the environment, as torchrun sets them): each
rank writes its audit document into one folder; rank 0 waits for the others and compares them with its own
(:func:`report.rank_lines`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from timm_sched_fix.options import ENV_AUDIT_RANKS_DIR

#: Rank 0 waits this long, after its own run, for the other ranks' documents.
RANK_WAIT_SECONDS = 120.0


def ranks_dir(environ: Mapping[str, str]) -> Path:
    """The folder where the ranks of this run hand over their documents."""
    if environ.get(ENV_AUDIT_RANKS_DIR):
        return Path(environ[ENV_AUDIT_RANKS_DIR])
    run = "-".join(re.sub(r"[^\w.]", "_", environ.get(key, "")) for key in
                   ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"))
    return Path(tempfile.gettempdir()) / f"timm-sched-fix-audit-{run}"


def _rank_file(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank}.json"


def forget_earlier_run(folder: Path, rank: int) -> None:
    """Remove this rank's document of an earlier run with the same address (before this run writes its own)."""
    _rank_file(folder, rank).unlink(missing_ok=True)


def hand_over(document: Mapping[str, Any], folder: Path, rank: int, world: int) -> list[Mapping[str, Any] | None]:
    """Write this rank's document; on rank 0, wait for every rank's and return them by rank (None for a rank that
    wrote none in time) and remove the folder. Other ranks return []."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".rank-{rank}.json.{os.getpid()}"
    partial.write_text(json.dumps(document))
    partial.replace(_rank_file(folder, rank))
    if rank != 0:
        return []
    deadline = time.monotonic() + RANK_WAIT_SECONDS
    while time.monotonic() < deadline and not all(_rank_file(folder, r).exists() for r in range(world)):
        time.sleep(0.1)
    documents: list[Mapping[str, Any] | None] = []
    for r in range(world):
        path = _rank_file(folder, r)
        documents.append(json.loads(path.read_text()) if path.exists() else None)
    shutil.rmtree(folder, ignore_errors=True)
    return documents
