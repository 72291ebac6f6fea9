"""``Headers``: an ordered, multi-valued header list, the one shape aioh2s hands out.

Theory of operation: HTTP/2 header blocks are lists of ``(name, value)`` pairs in which order
matters (pseudo-headers first) and names may repeat. ``Headers`` keeps that list as-is, with
names lowercased ``str`` (HTTP/2 requires lowercase on the wire) and values ``str``, and adds
the lookups people want. Anything that *sends* headers goes through :func:`to_wire`, which
accepts a mapping or an iterable of pairs of ``str`` or ``bytes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, Union, overload

__all__ = ["Headers", "HeadersLike"]

_T = TypeVar("_T")

#: What header-sending methods accept.
HeadersLike = Union[
    "Headers",
    Mapping[str, str],
    Mapping[bytes, bytes],
    Iterable[tuple[str, str]],
    Iterable[tuple[bytes, bytes]],
]


def _text(v: str | bytes) -> str:
    return v if isinstance(v, str) else v.decode("utf-8", "surrogateescape")


class Headers:
    """Ordered, multi-valued HTTP headers with lowercase ``str`` names and ``str`` values.

    ``h[name]`` returns the first value (``KeyError`` if absent), ``h.getall(name)`` all of
    them; iteration yields ``(name, value)`` pairs; a ``Headers`` compares equal to a list of
    pairs with the same content and order.
    """

    __slots__ = ("_items",)

    def __init__(self, items: HeadersLike | None = None) -> None:
        if items is None:
            self._items: list[tuple[str, str]] = []
        elif isinstance(items, Headers):
            self._items = list(items._items)
        else:
            pairs: Iterable[Any] = items.items() if isinstance(items, Mapping) else items
            self._items = [(_text(n).lower(), _text(v)) for n, v in pairs]

    @classmethod
    def _from_h2(cls, items: list[tuple[str, str]]) -> Headers:
        """Wrap a list h2 decoded and validated already (lowercase ``str``), without copying."""
        h = cls.__new__(cls)
        h._items = items
        return h

    def __getitem__(self, name: str) -> str:
        name = name.lower()
        for n, v in self._items:
            if n == name:
                return v
        raise KeyError(name)

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: _T) -> str | _T: ...

    def get(self, name: str, default: object = None) -> object:
        """The first value of ``name``, or ``default``."""
        try:
            return self[name]
        except KeyError:
            return default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` in order (an empty list when absent)."""
        name = name.lower()
        return [v for n, v in self._items if n == name]

    def keys(self) -> list[str]:
        """Names in order, repeated names repeated."""
        return [n for n, _ in self._items]

    def items(self) -> list[tuple[str, str]]:
        """A copy of the ``(name, value)`` pairs."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == name.lower() for n, _ in self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._items == other._items
        if isinstance(other, (list, tuple)):
            try:
                return self._items == [(_text(n).lower(), _text(v)) for n, v in other]
            except (TypeError, ValueError):
                return False
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._items))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


def to_wire(headers: HeadersLike) -> list[tuple[bytes, bytes]]:
    """Normalise user-supplied headers to the lowercase bytes pairs h2 sends."""
    if isinstance(headers, Headers):
        return [(n.encode(), v.encode()) for n, v in headers._items]
    pairs: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for n, v in pairs:
        bn = n.encode() if isinstance(n, str) else bytes(n)
        bv = v.encode() if isinstance(v, str) else bytes(v)
        out.append((bn.lower(), bv))
    return out
