"""The command line's habits: completion installs, --help groups the commands in panels, each command shows examples."""

import re
import shlex
import subprocess
import sys

import pytest
import shellingham
import typer
from typer.testing import CliRunner

from comp.cli import app

runner = CliRunner()
PANELS = {
    "Data": ["init", "download", "folds", "duplicates"],
    "Train": ["train", "lr-find", "probe", "pseudo"],
    "Predict": ["predict", "evaluate", "ensemble"],
    "Submit": ["validate", "submit", "submissions", "kernel"],
    "Tools": ["demo", "info", "env"],
}


def help_text(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}, prog_name="comp")
    assert result.exit_code == 0, result.output
    return result.output


def panel(text: str, title: str) -> str:
    """The lines of the --help panel titled `title`."""
    match = re.search(rf"╭─ {title} ─+╮\n(.*?)\n╰", text, re.S)
    assert match, f"no {title} panel in --help"
    return match.group(1)


def test_help_groups_the_commands_in_panels():
    text = help_text()
    for title, commands in PANELS.items():
        listed = re.findall(r"^│ (\S+)", panel(text, title), re.M)
        assert set(commands) <= set(listed), (title, listed)
    assert "--install-completion" in text


@pytest.mark.parametrize("command", [c for commands in PANELS.values() for c in commands])
def test_each_commands_help_ends_with_examples(command):
    text = help_text(command)
    examples = text[text.index("Examples:") :].split("\n")[1:]
    lines = [line.strip() for line in examples if line.strip()]
    assert len(lines) >= 2 and all(line.startswith(f"comp {command}") for line in lines), lines


def test_the_examples_are_real_command_lines():
    """Every example parses: its command exists and takes those options (checked by click, without running)."""
    group = typer.main.get_command(app)
    for commands in PANELS.values():
        for name in commands:
            text = help_text(name)
            for line in [x.strip() for x in text[text.index("Examples:") :].split("\n")[1:] if x.strip()]:
                words = shlex.split(line.split(" > ")[0])[1:]
                ctx = group.make_context("comp", words, resilient_parsing=False)
                sub = group.get_command(ctx, words[0])
                sub.make_context(words[0], words[1:], parent=ctx)


def test_install_completion_writes_the_bash_completion(tmp_path, monkeypatch):
    # Typer finds the shell among comp's parent processes (shellingham), which a test run from an IDE,
    # a container's entry point or a detached job has none of: here the shell is bash.
    monkeypatch.setattr(shellingham, "detect_shell", lambda: ("bash", "/bin/bash"))
    result = runner.invoke(
        app, ["--install-completion"], env={"HOME": str(tmp_path), "SHELL": "/bin/bash"}, prog_name="comp"
    )
    assert result.exit_code == 0, result.output
    script = tmp_path / ".bash_completions/comp.sh"
    assert "complete -o default -F _comp_completion comp" in script.read_text()
    assert f"source '{script}'" in (tmp_path / ".bashrc").read_text()


def test_completion_completes_command_names():
    """What the installed script asks comp: the commands starting with what was typed."""
    env = {"_COMP_COMPLETE": "complete_bash", "COMP_WORDS": "comp sub", "COMP_CWORD": "1"}
    result = runner.invoke(app, [], env=env, prog_name="comp")
    assert set(result.output.split()) == {"submit", "submissions"}


def test_comp_env_help_runs_in_a_subprocess():
    out = subprocess.run([sys.executable, "-m", "comp", "env", "--help"], capture_output=True, text=True, check=True)
    assert "comp env --json" in out.stdout
