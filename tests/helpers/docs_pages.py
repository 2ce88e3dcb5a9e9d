"""The README and the documentation pages as the tests read them: their sections and their fenced code blocks, with
the snippet markers docs/testing.md ("Documentation snippets") describes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: The markers a ```python block may carry on the line right above its fence: name -> what its reason must say.
MARKERS = {"not-run": "why the block cannot run in the test suite", "run-on": "the timm release it needs"}
#: A fenced block, with the HTML comment that ends on the line right above its fence, if any.
_FENCED = re.compile(r"(?:^<!--(?P<comment>(?:(?!-->).)*?)-->\n)?^```(?P<language>[\w-]*)\n(?P<code>.*?)^```$",
                     flags=re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # the fence's line, 1-based
    language: str
    code: str
    marker: str | None  # a name of MARKERS
    reason: str


def pages() -> list[Path]:
    """README.md and every Markdown page of docs/ (the built site excluded), in a fixed order."""
    return [ROOT / "README.md", *sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.parts)]


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def blocks(path: Path, language: str | None = None) -> list[Block]:
    """The fenced blocks of a page (of one language, if given). A comment above a fence that names no marker (or
    one without a reason) raises ValueError, so a misspelt marker cannot make a block run or skip unnoticed."""
    text = path.read_text()
    found = []
    for match in _FENCED.finditer(text):
        marker, reason = None, ""
        comment = match["comment"]
        if comment is not None:
            marker, _, reason = " ".join(comment.split()).partition(":")
            reason = reason.strip()
            if marker not in MARKERS or not reason:
                raise ValueError(f"{relative(path)}: the comment above a fence must be '<!-- NAME: REASON -->' with "
                                 f"NAME one of {sorted(MARKERS)}, got <!--{comment}-->")
        line = text.count("\n", 0, match.start("language")) + 1
        if language is None or match["language"] == language:
            found.append(Block(relative(path), line, match["language"], match["code"], marker, reason))
    return found


def section(path: Path, title: str, level: int = 2) -> str:
    """The text under the heading ``title`` (of ``level`` #s, 2 or more) of a page, up to the next heading of that
    level or higher (but the page's title: a ``# `` line may be a comment in a code block)."""
    text = path.read_text()
    heading = f"\n{'#' * level} {title}\n"
    assert heading in text, f"no '{heading.strip()}' in {relative(path)}"
    body = text.split(heading, 1)[1]
    return re.split(rf"^#{{2,{level}}} ", body, maxsplit=1, flags=re.MULTILINE)[0]


def fenced(text: str, language: str) -> list[str]:
    """The code of the ```language blocks of a piece of a page."""
    return [match["code"] for match in _FENCED.finditer(text) if match["language"] == language]
