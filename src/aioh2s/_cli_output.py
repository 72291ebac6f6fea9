"""Where ``get`` writes a response (and ``ws`` its messages): stdout or ``-o FILE``, as in curl.

Theory of operation: :class:`Output` opens ``-o FILE`` only once the response is there (a
request that failed before leaves no empty file), writes ``-i``'s head and trailer lines in
the form curl prints HTTP/2 ones, and keeps the rules a terminal needs. A body with a NUL
byte in its first 2000 bytes (curl's window, :data:`_BINARY_WINDOW`) is not printed to a
terminal unless ``-o -`` insists, since control sequences in it can garble, or reprogram,
the terminal. When stdout and stderr are the same terminal or file (``2>&1``,
:func:`_same_file`), a body without a final newline leaves stderr's line open
(:data:`~aioh2s._cli_common.open_line`), so the next message starts on a line of its own. A
reader that left (``| head``) ends the transfer as a local error, quietly.

:class:`Progress` is the download bar on stderr: bytes done, total (from content-length),
rate, and a redraw throttled to 10 Hz with a carriage return. :func:`want_progress` never
draws it onto the terminal the body is printed to (an explicit ``--progress`` says why).
Why a hand-written bar: it is about thirty lines; ``rich`` or ``tqdm`` would add a
dependency (or an optional extra with two code paths to test) to a package whose only
runtime dependencies are ``h2`` and ``hpack``, for one line of output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from typing import IO, Any, TextIO

from aioh2s._cli_common import EXIT_ERROR, CLIError, open_line, warn

__all__ = ["Output", "Progress", "want_progress"]


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """A one-line download progress bar on a text stream, redrawn at most 10 times a second."""

    WIDTH = 30

    def __init__(self, out: TextIO, total: int | None) -> None:
        self.out = out
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.last_draw = 0.0

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_draw >= 0.1:
            self.last_draw = now
            self._draw(now)

    def finish(self) -> None:
        self._draw(time.monotonic())
        self.out.write("\n")
        self.out.flush()
        open_line.pending = False

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self.start, 1e-6)
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(self.WIDTH * frac)
            text = (
                f"{frac * 100:3.0f}% [{bar:<{self.WIDTH}}] "
                f"{_human(self.done)}/{_human(self.total)} {_human(rate)}/s"
            )
        else:
            text = f"{_human(self.done)} {_human(rate)}/s"
        # Trailing spaces wipe what a longer previous line left behind.
        self.out.write(f"\r{text}   ")
        self.out.flush()
        # The bar's line stays open until finish(): an error or warning printed meanwhile
        # (a reset mid-body) ends it first (OpenLine), instead of running into it.
        open_line.pending = True


def _same_file(a: IO[Any], b: IO[Any]) -> bool:
    """Whether two streams write to the same file, pipe or terminal (``2>&1``, a tty)."""
    try:
        return os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (OSError, ValueError, AttributeError):
        return False


#: How much of the body the binary check looks at: curl's 2000 bytes. A NUL past them comes
#: after text the terminal already showed; refusing then would only cut a long text short.
_BINARY_WINDOW = 2000


class Output:
    """Where the response goes (stdout or ``-o FILE``), opened at its first byte."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.stream: IO[bytes] | None = None
        self.to_stdout = path is None or path == "-"
        self.shares_stderr = self.to_stdout and _same_file(sys.stdout, sys.stderr)
        # curl's rule: a body with a NUL byte (in its first 2000 bytes) is not written to a
        # terminal unless asked for with "-o -", since control sequences in it can garble
        # (or reprogram) the terminal.
        self.guard_binary = path is None and _isatty(sys.stdout)
        self.body_bytes = 0  # body bytes written so far (while guard_binary: see write)

    def open(self) -> None:
        if self.stream is not None:
            return
        if self.to_stdout:
            self.stream = sys.stdout.buffer
            return
        assert self.path is not None
        try:
            self.stream = open(self.path, "wb")
        except OSError as e:
            raise CLIError(EXIT_ERROR, f"cannot write {self.path}: {e.strerror or e}") from e

    def write_head(self, status: str, headers: Iterable[tuple[str, str]]) -> None:
        """``-i``: a response's status line and headers, as curl prints HTTP/2 ones."""
        lines = [f"HTTP/2 {status}\r\n"]
        lines += [f"{n}: {v}\r\n" for n, v in headers if not n.startswith(":")]
        lines.append("\r\n")
        self._write("".join(lines).encode("utf-8", "surrogateescape"))

    def write_trailers(self, trailers: Iterable[tuple[str, str]]) -> None:
        """``-i``: the trailer fields after the body, as curl writes them."""
        lines = [f"{n}: {v}\r\n" for n, v in trailers if not n.startswith(":")]
        self._write("".join(lines).encode("utf-8", "surrogateescape"))

    def write(self, chunk: bytes) -> None:
        """Write body bytes; the binary check looks at the first :data:`_BINARY_WINDOW`."""
        if self.guard_binary:
            seen = self.body_bytes
            if seen < _BINARY_WINDOW and b"\0" in chunk[: _BINARY_WINDOW - seen]:
                raise CLIError(
                    EXIT_ERROR,
                    "binary output can mess up your terminal: use '-o FILE' to save it, "
                    "or '-o -' to print it anyway",
                )
            self.body_bytes = seen + len(chunk)
        self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.open()
        assert self.stream is not None
        try:
            self.stream.write(chunk)
            if self.to_stdout:
                self.stream.flush()
        except BrokenPipeError:
            # A reader like `head` left: stop writing, and keep Python's exit-time flush of
            # stdout from raising again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise CLIError(EXIT_ERROR, "output closed (broken pipe)") from None
        except OSError as e:
            raise CLIError(
                EXIT_ERROR, f"cannot write {self.path or 'stdout'}: {e.strerror or e}"
            ) from e
        if self.shares_stderr:
            open_line.pending = not chunk.endswith(b"\n")

    def close(self) -> None:
        if self.stream is not None and not self.to_stdout:
            self.stream.close()


def _isatty(f: IO[Any]) -> bool:
    try:
        return f.isatty()
    except (ValueError, AttributeError):
        return False


def want_progress(args: argparse.Namespace, out: Output) -> bool:
    """Whether to draw the bar: ``--progress`` says so, else when stderr is a terminal.

    Never onto the terminal the body is printed to: the two would garble each other. An
    explicit ``--progress`` that cannot be honoured says so instead of being ignored.
    """
    if args.progress is False:
        return False
    if out.shares_stderr:
        if args.progress:
            warn("--progress ignored: the body goes to the same terminal as the bar; "
                  "use -o FILE or redirect stdout")
        return False
    if args.progress:
        return True
    return _isatty(sys.stderr) and not args.verbose
