"""The README's commands are the ones CI and scripts/quickstart.sh run."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[str]:
    """Shell commands of a block, continuation lines joined, comments dropped."""
    joined = block.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.append(" ".join(shlex.split(line)))
    return commands


def test_quickstart_block_matches_script():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    main_job = next(b for b in blocks if "edge-iapp synth" in b)
    script = _commands((ROOT / "scripts" / "quickstart.sh").read_text())
    readme = _commands(main_job)
    assert readme, "the README has no quick-start commands"
    assert readme == [c for c in script if c.startswith("edge-iapp")]


def test_ci_runs_the_readme_test_command():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    test_block = next(b for b in blocks if "pytest" in b)
    (test_command,) = _commands(test_block)
    ci = _commands((ROOT / ".ci" / "run").read_text())
    # one test command, run under each interpreter: exactly the README's
    assert [c for c in ci if "pytest" in c] == [test_command]


def test_readme_commands_exist():
    """Every `edge-iapp X` in the README's shell blocks is a registered command."""
    from typer.main import get_command

    from edge_iapp.cli.main import app

    group = get_command(app)
    names = set(group.commands)
    for block in _bash_blocks((ROOT / "README.md").read_text()):
        for command in _commands(block):
            if command.startswith("edge-iapp "):
                assert command.split()[1] in names, command
