"""nox sessions: tests (every supported Python), lint, typecheck, bench(_scale).

The test command of README.md and .ci/run is ``nox -s tests``: the whole suite on Python 3.10
to 3.13. The oldest Python runs it with the lowest h2 and hpack that pyproject.toml admits (the
corner a user on an old distribution is in), the others with the newest. Tests marked ``once``
run on the newest Python only (see ``_pytest``).
"""

from __future__ import annotations

import glob
import os
import re

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.download_python = "never"  # only interpreters that are on this machine


def _put_pythons_on_path() -> None:
    """Make every ``pythonX.Y`` of PYTHONS that pyenv installed findable by nox.

    pyenv's shims only run the versions named by ``pyenv global``/``local``, so on a machine
    where only 3.11 is global, ``python3.10`` on PATH is a shim that fails. Link each pyenv
    interpreter into .nox/pythons and put that directory first on PATH; a Python that is not
    installed through pyenv is still looked up on PATH as usual (and on CI a missing one fails
    the run instead of being skipped).
    """
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    links = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".nox", "pythons")
    os.makedirs(links, exist_ok=True)
    for version in PYTHONS:
        found = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}"))
        found = [p for p in found if re.search(rf"/{re.escape(version)}\.\d+/bin/", p)]
        if not found:
            continue
        newest = max(found, key=lambda p: int(p.split(f"/{version}.")[1].split("/")[0]))
        link = os.path.join(links, f"python{version}")
        if os.path.islink(link) and os.readlink(link) != newest:
            os.unlink(link)
        if not os.path.lexists(link):
            os.symlink(newest, link)
    os.environ["PATH"] = links + os.pathsep + os.environ.get("PATH", "")


_put_pythons_on_path()


def _lowest_dependencies() -> list[str]:
    """``name==X`` for each run-time dependency's ``>=X`` bound in pyproject.toml."""
    pins = []
    for dep in nox.project.load_toml("pyproject.toml")["project"]["dependencies"]:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(?:\[[^]]*\])?\s*(.*)", dep)
        assert m, dep
        name, spec = m.groups()
        low = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", spec)
        assert low, f"dependency {dep!r} has no lower bound to test"
        pins.append(f"{name}=={low.group(1)}")
    return pins


# Two pytest-xdist workers, one per core of the CI machine: most tests wait on sockets and
# timers rather than the CPU, so the suite takes about 55% of its serial time (it must stay
# near 15 minutes across four sessions). More workers than cores made the in-process floods
# (attacker, server and healthy client on one loop, under tracemalloc) too slow to trust.
_PYTEST = ("-q", "-n", "2")
# Tests marked ``once`` (the CLI and README through subprocesses, mypy on the typed options,
# 10,000-request runs against external servers) do not change with the Python version or
# h2's: they run in the newest Python's session only, which keeps four sessions near 15
# minutes. ``pytest`` on its own runs them all.
_ONCE_ON = PYTHONS[-1]


def _pytest(session: nox.Session) -> tuple[str, ...]:
    if session.name == f"tests-{_ONCE_ON}" or session.posargs:
        return _PYTEST
    return (*_PYTEST, "-m", "not once")


# Run in the oldest Python's session: the pins of _lowest_dependencies() are what got installed.
_CHECK_PINS = (
    "import importlib.metadata as m, sys\n"
    "from packaging.version import Version\n"
    "for pin in sys.argv[1:]:\n"
    "    name, want = pin.split('==')\n"
    "    got = m.version(name)\n"
    "    assert Version(got) == Version(want), f'{name} {got} installed, {want} wanted'\n"
    "    print('lowest dependencies:', name, got)\n"
)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite (pass pytest arguments after --); ``once`` tests on the newest only.

    The oldest Python gets the lowest h2 and hpack, checked to be what is installed. A separate
    session for them would run the suite a fifth time, for the pairing (oldest Python, newest
    h2), which only a change that depends on both at once would break.
    """
    pins = _lowest_dependencies() if session.python == PYTHONS[0] else []
    session.install("-e", ".[test]", *pins)
    if pins:
        session.run("python", "-c", _CHECK_PINS, *pins)
    session.run("python", "-m", "pytest", *_pytest(session), *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".", "mypy")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (benchmarks/README.md): needs h2load, nghttpd and taskset."""
    session.install("-e", ".", "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def bench_scale(session: nox.Session) -> None:
    """ASGI on aioh2s vs hypercorn vs granian, and workers (benchmarks/README.md)."""
    session.install("-e", ".", "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/scale.py", *session.posargs)
