"""The README: its set-up commands are what CI runs, it renders on the package index, the extras it names are
the package's; the commands it and the documentation pages show are valid and never overwrite a file of the
project."""

import itertools
import re
import shlex
import subprocess

from docs_pages import DOCS, ROOT, pages

README = (ROOT / "README.md").read_text()


def section(title):
    """The text of the README's "## title" section."""
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text, language):
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


def readme_commands():
    """The first ```bash block of "Development": the two commands for a fresh checkout."""
    return blocks(section("Development"), "bash")[0].splitlines()


def test_ci_runs_the_readme_commands_verbatim():
    commands = readme_commands()
    assert len(commands) == 2, commands
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci_lines[-2:] == commands
    # the documentation's development page shows the same two
    assert blocks((DOCS / "development.md").read_text(), "bash")[0].splitlines() == commands


def test_the_install_line_comes_first_and_names_every_extra():
    assert blocks(README, "bash")[0].strip() == "pip install timm-sched-fix"
    table = (ROOT / "pyproject.toml").read_text().split("\n[project.optional-dependencies]\n", 1)[1].split("\n[", 1)[0]
    extras = re.findall(r"^([a-z][a-z0-9-]*) = ", table, flags=re.MULTILINE)  # no tomllib before Python 3.11
    assert extras
    install = README.split("\n## ", 1)[0]
    assert [name for name in extras if f"[{name}]" not in install] == []


def test_links_and_images_work_on_the_package_index():
    """The README is the package's long description: relative links and images break there."""
    targets = re.findall(r"\]\(([^)\s]+)\)", README) + re.findall(r"<img [^>]*src=\"([^\"]+)\"", README)
    assert targets
    assert [target for target in targets if not target.startswith(("https://", "#"))] == []


def tracked_files():
    """The project's files: git's list in a checkout, the sdist's own list in an unpacked sdist."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode == 0 and listed.stdout:
        return set(listed.stdout.decode().split("\0")) - {""}
    sources = sorted(ROOT.glob("*.egg-info/SOURCES.txt"))
    assert sources, "neither a git checkout nor an unpacked sdist"
    return set(sources[0].read_text().split())


def shown_commands():
    """Every command the README and the documentation pages show: the lines of ```bash blocks and the ``$ `` lines
    of ```text blocks, with backslash continuations joined."""
    commands = []
    for (language, prefix), page in itertools.product((("bash", ""), ("text", "$ ")), pages()):
        for block in blocks(page.read_text(), language):
            joined = block.replace("\\\n", " ")
            commands += [line[len(prefix):] for line in joined.splitlines() if line.startswith(prefix) and line]
    return commands


def written_paths(command):
    words = shlex.split(command, comments=True)
    return [after for before, after in itertools.pairwise(words) if before in ("--out", "--plot", ">", ">>")]


def test_readme_commands_never_overwrite_a_file_of_the_project():
    commands = shown_commands()
    assert any("--plot" in command for command in commands)  # the trace command with its plot is among them
    tracked = tracked_files()
    written = [path for command in commands for path in written_paths(command)]
    assert written and [path for path in written if path in tracked] == []


def test_readme_commands_are_valid_command_lines():
    from timm_sched_fix.cli import build_parser

    parser, _ = build_parser()
    shown = [shlex.split(command) for command in shown_commands() if command.startswith("timm-sched-fix ")]
    assert {"check", "trace", "run", "audit"} <= {words[1] for words in shown}
    for words in shown:
        parser.parse_args(words[1:])  # exits with status 2 on an unknown option or value
