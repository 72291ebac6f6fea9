"""README.md runs as shown: its Python blocks, its ``python -m aioh2s`` commands, its synopsis.

The convention (also in README's Development section):

- every fenced ``python`` block is a whole program, run on its own (``python block.py``, with
  this tree's ``src`` first on the path) as a reader who pasted it would run it. It must exit
  0 within a minute, offline (the examples start their own local servers), with nothing on
  stderr that signals trouble (a traceback, a warning, an unclosed resource, a task that
  was destroyed pending). A block that cannot run starts with a ``# not run: <why>`` line,
  which readers see too; it must still compile (top-level ``await`` allowed: such a block
  is a fragment), and every ``aioh2s.NAME`` it uses must exist;
- what a block prints is in its ``# prints: TEXT`` comments (at the end of the printing line
  or on a line of their own): one per line of stdout, in order, and none means the block
  prints nothing. A ``# logs: TEXT`` comment is a line that must appear on stderr. In both,
  ``...`` matches any text (a port number). A block that sets up logging must leave other
  loggers' records printable (its format on its own handler, not the root's);
- in fenced ``sh`` blocks, every ``python -m aioh2s ...`` command (also as the last step of
  an ``&&`` chain, after a venv's setup) runs and must exit 0; the other commands install
  packages or take minutes, and are left to CI;
- the ``text`` block under "Command line" is the synopsis: it names every option of every
  subcommand, and no option the parser does not have.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aioh2s import _cli_get, cli
from helpers import unavailable

# The CLI, the README and typing do not change with the Python version: CI runs this
# file once, on the newest Python (noxfile.py).
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SRC = str(ROOT / "src")
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p),
}
# Markers of trouble on stderr. (A frame trace may print "error=NO_ERROR": not one of them.)
TROUBLE = (
    "Traceback (most recent call last)",
    "Exception ignored",
    "Warning:",
    "Task was destroyed",
    "never retrieved",
    "unclosed",
)


def blocks(language: str) -> list[tuple[int, str]]:
    """(line number, text) of each fenced block of ``language`` in README.md."""
    found = []
    for m in re.finditer(rf"^```{language}\n(.*?)^```$", README, re.S | re.M):
        found.append((README.count("\n", 0, m.start()) + 1, m.group(1)))
    return found


PYTHON = blocks("python")
RUNNABLE = [(n, code) for n, code in PYTHON if not code.startswith("# not run:")]
FRAGMENTS = [(n, code) for n, code in PYTHON if code.startswith("# not run:")]

_CLAIM = re.compile(r"#\s*(prints|logs):\s?(.*?)\s*$", re.M)


def claims(code: str, kind: str) -> list[str]:
    """The ``# prints:`` (``kind`` "prints") or ``# logs:`` texts of a block, in order."""
    return [m.group(2) for m in _CLAIM.finditer(code) if m.group(1) == kind]


def _matches(claim: str, line: str) -> bool:
    """Whether an output line is what a claim says; ``...`` in the claim matches any text."""
    pattern = ".*?".join(re.escape(part) for part in claim.split("..."))
    return re.fullmatch(pattern, line) is not None


def output_problems(code: str, stdout: str, stderr: str) -> list[str]:
    """How a block's output differs from its ``# prints:`` and ``# logs:`` comments."""
    problems = []
    printed = stdout.splitlines()
    said = claims(code, "prints")
    if len(printed) != len(said) or not all(map(_matches, said, printed)):
        problems.append(f"it printed {printed!r}; its '# prints:' comments say {said!r}")
    logged = stderr.splitlines()
    for claim in claims(code, "logs"):
        if not any(_matches(claim, line) for line in logged):
            problems.append(f"it never logged {claim!r} (its '# logs:' comment)")
    return problems


def run_block(code: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script)],
        capture_output=True, env=ENV, cwd=tmp_path, timeout=60, check=False,
    )


def test_readme_has_blocks() -> None:
    assert len(PYTHON) >= 5, "the README's Python blocks were not found"
    assert len(RUNNABLE) >= len(PYTHON) - 1, "at most one block may be left unrun"
    # The blocks that print say what (the convention is only as good as its use).
    assert sum(bool(claims(code, "prints")) for _, code in RUNNABLE) >= 5


@pytest.mark.parametrize(("line", "code"), PYTHON, ids=[f"line{n}" for n, _ in PYTHON])
def test_python_block_runs_as_pasted(line: int, code: str, tmp_path: Path) -> None:
    if code.startswith("# not run:"):
        reason = code.splitlines()[0].removeprefix("# not run:").strip()
        assert reason, f"README line {line}: '# not run:' needs a reason"
        pytest.skip(f"README line {line}: {reason}")
    p = run_block(code, tmp_path)
    err = p.stderr.decode(errors="replace")
    missing = re.search(r"ModuleNotFoundError: No module named '([\w.]+)'", err)
    if p.returncode and missing and not missing.group(1).startswith("aioh2s"):
        # An optional extra (httpx) the test extras install: skip here, fail under CI.
        unavailable(f"README line {line} needs {missing.group(1)!r}")
    assert p.returncode == 0, f"README line {line} failed:\n{err}"
    bad = [marker for marker in TROUBLE if marker.lower() in err.lower()]
    assert not bad, f"README line {line} ran with trouble ({bad}):\n{err}"
    problems = output_problems(code, p.stdout.decode(errors="replace"), err)
    assert not problems, f"README line {line}: " + "; ".join(problems) + f"\nstderr:\n{err}"


def test_output_check_catches_a_wrong_claim() -> None:
    # The check itself, on a made-up block: output against claims that are right, wrong,
    # missing or in excess; "..." stands for any text.
    code = 'print(1)  # prints: 200 ok\nprint(2)\n# prints: port ...\n# logs: server [...] recv\n'
    assert output_problems(code, "200 ok\nport 8000\n", "server [127.0.0.1:1] recv\n") == []
    assert output_problems(code, "404 no\nport 8000\n", "server [x] recv\n")
    assert output_problems(code, "200 ok\n", "server [x] recv\n")  # a line short
    assert output_problems(code, "200 ok\nport 1\nmore\n", "server [x] recv\n")  # one over
    assert output_problems(code, "200 ok\nport 1\n", "client [x] send\n")  # not logged
    assert output_problems("print(1)\n", "1\n", "")  # printing without saying so


@pytest.mark.parametrize(("line", "code"), FRAGMENTS, ids=[f"line{n}" for n, _ in FRAGMENTS])
def test_fragment_compiles_and_names_what_exists(line: int, code: str) -> None:
    import aioh2s

    tree = compile(code, f"README.md:{line}", "exec",
                   flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "aioh2s"}
    assert used, f"README line {line}: the fragment uses no aioh2s name"
    missing = sorted(name for name in used if not hasattr(aioh2s, name))
    assert not missing, f"README line {line} uses aioh2s.{missing}, which do not exist"


LOGGING = [(n, code) for n, code in RUNNABLE if "import logging" in code]


@pytest.mark.parametrize(("line", "code"), LOGGING, ids=[f"line{n}" for n, _ in LOGGING])
def test_logging_setup_leaves_other_records_alone(line: int, code: str, tmp_path: Path) -> None:
    # Pasted into a program, a block's logging setup must not break that program's own
    # records (a root format naming the trace's h2_side fails every other record).
    probe = "import logging\nlogging.getLogger('app').warning('disk almost full')\n"
    p = run_block(code + probe, tmp_path)
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, err
    assert "Logging error" not in err and "disk almost full" in err, err


def aioh2s_commands() -> list[tuple[int, list[str]]]:
    """The ``python -m aioh2s ...`` commands of the README's sh blocks, as argument lists."""
    found = []
    for line, text in blocks("sh"):
        for command in text.splitlines():
            for part in command.split("&&"):
                words = shlex.split(part, comments=True)
                if (len(words) >= 3 and re.fullmatch(r"(\S*/)?python3?", words[0])
                        and words[1:3] == ["-m", "aioh2s"]):
                    found.append((line, words[3:]))
    return found


COMMANDS = aioh2s_commands()


@pytest.mark.parametrize(("line", "args"), COMMANDS, ids=[" ".join(a) for _, a in COMMANDS])
def test_shell_command_runs(line: int, args: list[str]) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "aioh2s", *args],
        capture_output=True, env=ENV, timeout=60, check=False,
    )
    assert p.returncode == 0, f"README line {line}: {args}: {p.stderr.decode()}"


def test_setup_commands_make_a_venv_first() -> None:
    # Debian's and Ubuntu's system Python refuse a bare `pip install .`
    # (externally-managed-environment): the first command must set up a venv before pip.
    first = blocks("sh")[0][1]
    assert first.index("python3 -m venv") < first.index("pip install .") < first.index("demo")
    assert COMMANDS and COMMANDS[0][1][0] == "demo"


def synopsis() -> dict[str, str]:
    """Subcommand -> its part of the README's synopsis (the text block under Command line)."""
    section = README[README.index("## Command line"):]
    m = re.search(r"^```text\n(.*?)^```$", section, re.S | re.M)
    assert m, "no synopsis block under 'Command line'"
    parts: dict[str, str] = {}
    current = None
    for text_line in m.group(1).splitlines():
        head = re.match(r"aioh2s (\w+)", text_line)
        if head:
            current = head.group(1)
            parts[current] = ""
        assert current is not None, text_line
        parts[current] += text_line + "\n"
    return parts


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli._build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_synopsis_names_every_option() -> None:
    text = synopsis()
    commands = subcommands()
    assert set(text) == set(commands)
    for name, sub in commands.items():
        listed = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", text[name]))
        known = set()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            known.update(action.option_strings)
            if action.option_strings:
                assert listed & set(action.option_strings), (
                    f"README's synopsis of '{name}' lacks {'/'.join(action.option_strings)}"
                )
        assert listed <= known, f"README's synopsis of '{name}' names {listed - known}"


def test_exit_codes_in_readme_are_the_commands() -> None:
    m = re.search(r"list the exit codes \(for `get`: (.*?)\)\.", README, re.S)
    assert m, "README's Command line section no longer summarises get's exit codes"
    listed = [int(n) for n in re.findall(r"(?:^|,)\s*(\d+)\s", m.group(1))]
    assert listed == [code for code, _ in _cli_get.GET_EXIT_CODES]
