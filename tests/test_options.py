"""The options of connect(), start_server() and Session are typed: editors and mypy see them.

``aioh2s.ConfigOptions`` (and ``SessionConfigOptions``) spell out :class:`aioh2s.Config`'s
fields for ``**options: Unpack[...]``. These tests keep the TypedDicts equal to the dataclass,
check that a misspelt or mistyped option is a mypy error (by running mypy on a snippet, with
this tree's ``src`` first on mypy's path) and still a ``TypeError`` at run time, and that
nothing of it is needed at run time on Python 3.10 (no ``typing_extensions``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import aioh2s
from helpers import IN_CI

# Typing does not change with the Python version: CI runs this file once, on the newest
# Python (noxfile.py).
pytestmark = pytest.mark.once

SRC = str(Path(__file__).resolve().parent.parent / "src")

# What a Session takes as arguments of its own rather than as Config fields (see
# SessionConfigOptions).
SESSION_OWN = {"max_connections", "idle_timeout", "keepalive_interval"}


def test_config_options_are_the_config_fields() -> None:
    fields = typing.get_type_hints(aioh2s.Config)
    options = typing.get_type_hints(aioh2s.ConfigOptions)
    assert options == fields
    assert aioh2s.ConfigOptions.__total__ is False
    session = typing.get_type_hints(aioh2s.SessionConfigOptions)
    assert session == {k: v for k, v in fields.items() if k not in SESSION_OWN}


def test_session_own_keywords_are_its_parameters() -> None:
    params = inspect.signature(aioh2s.Session).parameters
    assert SESSION_OWN <= set(params)


def test_session_honours_a_handshake_timeout_option() -> None:
    # Typed (SessionConfigOptions) as it is honoured: it becomes Timeouts.connect, unless
    # timeout= is given, which wins.
    assert aioh2s.Session(handshake_timeout=5).timeouts.connect == 5
    assert aioh2s.Session(config=aioh2s.Config(handshake_timeout=4)).timeouts.connect == 4
    assert aioh2s.Session(handshake_timeout=5, timeout=2).timeouts.connect == 2
    assert aioh2s.Session().timeouts.connect == aioh2s.Timeouts.connect


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.Unpack is 3.11+")
def test_signatures_resolve_at_run_time() -> None:
    # Tools that read annotations at run time (documentation, IDE helpers) can resolve them.
    for func in (aioh2s.connect, aioh2s.start_server, aioh2s.Session.__init__):
        hints = typing.get_type_hints(func)
        assert "options" in hints


def test_no_typing_extensions_at_run_time() -> None:
    code = (
        "import sys; sys.modules['typing_extensions'] = None; import aioh2s, aioh2s.cli; "
        "print(aioh2s.ConfigOptions.__name__)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30,
                       env={**os.environ, "PYTHONPATH": SRC}, check=False)
    assert p.returncode == 0, p.stderr.decode()


async def test_misspelt_option_is_a_type_error_at_run_time() -> None:
    with pytest.raises(TypeError, match="stream_windw"):
        await aioh2s.connect("127.0.0.1", 1, stream_windw=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="max_concurent_streams"):
        await aioh2s.start_server(
            _handler, "127.0.0.1", 0, max_concurent_streams=1  # type: ignore[call-arg]
        )
    with pytest.raises(TypeError, match="idle_timout"):
        aioh2s.Session(idle_timout=1)  # type: ignore[call-arg]


async def _handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    writer.send_headers({":status": "200"}, end_stream=True)


# Each line ending in "# E: <substring>" must get a mypy error containing it; no other may.
SNIPPET = '''
import aioh2s


async def handler(reader: aioh2s.H2StreamReader, writer: aioh2s.H2StreamWriter) -> None:
    pass


async def main() -> None:
    await aioh2s.connect("127.0.0.1", 1, stream_window=2**20, handshake_timeout=None)
    await aioh2s.start_server(handler, "127.0.0.1", 0, max_concurrent_streams=10, grace=1.5)
    aioh2s.Session(stream_window=2**20, idle_timeout=5, max_connections=2)
    await aioh2s.connect("127.0.0.1", 1, stream_windw=1)  # E: "stream_windw"
    await aioh2s.connect("127.0.0.1", 1, stream_window="1 MiB")  # E: incompatible type "str"
    await aioh2s.start_server(handler, "h", 0, max_concurent_streams=1)  # E: "max_concurent_s
    aioh2s.Session(idle_timout=1)  # E: "idle_timout"
    aioh2s.Session(handshake_timeout=1)
    aioh2s.Session(handshake_timeout="1 s")  # E: incompatible type "str"
    aioh2s.Session(linger="long")  # E: incompatible type "str"
    await aioh2.open_connection("h", 1, concurrency=3, ssl=True, stream_window=2**20)
    await aioh2.start_server(on_connected, port=0, concurrency=3, backlog=10, grace=1.0)
    await aioh2.open_connection("h", 1, concurency=3)  # E: "concurency"
    await aioh2.start_server(on_connected, port=0, functional_timeout="2")  # E: incompatible
'''
SNIPPET = SNIPPET.replace("import aioh2s\n", "import aioh2s\nimport aioh2s.compat as aioh2\n\n"
                          "def on_connected(proto: aioh2.H2Protocol) -> None:\n    pass\n", 1)

# The httpx transport takes Session's keywords (needs httpx, an optional extra).
TRANSPORT_SNIPPET = '''
import aioh2s
from aioh2s.httpx_transport import Transport

Transport(max_connections=10, retries=1, timeout=5, stream_window=2**20, handshake_timeout=3)
Transport(aioh2s.Session())
Transport(max_conections=10)  # E: "max_conections"
Transport(stream_windw=1)  # E: "stream_windw"
Transport(retries="3")  # E: incompatible type "str"
'''


def test_misspelt_option_is_a_mypy_error(tmp_path: Path) -> None:
    _check_mypy_errors(SNIPPET, tmp_path)


def test_misspelt_transport_option_is_a_mypy_error(tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    _check_mypy_errors(TRANSPORT_SNIPPET, tmp_path)


def test_transport_options_are_the_session_keywords() -> None:
    pytest.importorskip("httpx")
    from aioh2s.httpx_transport import TransportOptions

    params = inspect.signature(aioh2s.Session).parameters
    own = {n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    options = set(typing.get_type_hints(aioh2s.SessionConfigOptions))
    assert TransportOptions.__optional_keys__ == own | options
    assert not TransportOptions.__required_keys__
    assert not own & options


def test_compat_options_are_what_the_wrappers_take() -> None:
    import aioh2s.compat as aioh2

    config = set(typing.get_type_hints(aioh2s.ConfigOptions))
    protocol = set(aioh2.PROTOCOL_KWARGS)
    connect = {n for n, p in inspect.signature(aioh2s.connect).parameters.items()
               if p.kind is inspect.Parameter.KEYWORD_ONLY}
    serve = {n for n, p in inspect.signature(aioh2s.start_server).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert aioh2.OpenConnectionOptions.__optional_keys__ == config | protocol | connect
    assert aioh2.StartServerOptions.__optional_keys__ == config | protocol | serve


def _check_mypy_errors(code: str, tmp_path: Path) -> None:
    """Run mypy --strict on ``code``: the lines marked ``# E: <text>`` and no others fail."""
    if importlib.util.find_spec("mypy") is None:
        if IN_CI:
            pytest.fail("mypy is not installed (it is a test dependency: pyproject's [test])")
        pytest.skip("mypy is not installed")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(code)
    # MYPYPATH puts this tree's src before any installed aioh2s (an editable install of
    # another checkout, say).
    p = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.10",
         "--cache-dir", str(tmp_path / "cache"), "--no-color-output", "--hide-error-context",
         str(snippet)],
        capture_output=True, timeout=180, cwd=tmp_path, check=False,
        env={**os.environ, "MYPYPATH": SRC},
    )
    out = p.stdout.decode()
    errors: dict[int, list[str]] = {}
    for m in re.finditer(r"^[^\n]*snippet\.py:(\d+): error: (.*)$", out, re.M):
        errors.setdefault(int(m.group(1)), []).append(m.group(2))
    expected = {
        n: line.split("# E: ", 1)[1]
        for n, line in enumerate(code.splitlines(), 1) if "# E: " in line
    }
    assert set(errors) == set(expected), out
    for n, want in expected.items():
        assert any(want in e for e in errors[n]), (n, want, errors[n])

