"""The plumbing every checking wrapper shares: a :class:`Poller` around another.

A wrapper (``debug:``, ``chaos:``, a test double) holds an ``inner`` poller,
takes its ``features``, and names itself after it.  What it does not check it
hands to ``inner`` unchanged, result and exception alike: that forwarding is
here, once.  The operations a wrapper exists to check -- ``register()``,
``modify()``, ``unregister()`` and ``poll()`` -- are each subclass's own, so
``poll()`` stays one flat method with no call through this base.  A wrapper
that keeps a state of its own (chaos: closed, forked, held changes) overrides
the methods that must consult it; the rest it inherits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._base import FileDescriptorLike, Poller, Registration

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["WrapperBase"]


class WrapperBase(Poller):
    """A :class:`Poller` that forwards to ``inner`` whatever its subclass does not override.

    ``name`` is the wrapper's whole spec (``"debug:epoll"``); ``features`` are
    ``inner``'s.  Errors come from ``inner``, naming it: a wrapper that must
    name itself in them overrides the method.
    """

    def __init__(self, inner: Poller, name: str) -> None:
        self._inner = inner
        self.name: str = name
        self.features: frozenset[str] = inner.features

    @property
    def inner(self) -> Poller:
        """The poller this one wraps (a driver, or another checking wrapper)."""
        return self._inner

    def wakeup(self) -> None:
        self._inner.wakeup()

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def close(self) -> None:
        self._inner.close()

    def fileno(self) -> int:
        return self._inner.fileno()

    def __len__(self) -> int:
        return len(self._inner)

    def __contains__(self, fd: object) -> bool:
        return fd in self._inner

    def get_registration(self, fd: FileDescriptorLike) -> Registration:
        return self._inner.get_registration(fd)

    def __enter__(self) -> Self:
        self._inner.__enter__()  # refuses a closed or forked poller, as a driver does
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} around {self._inner!r}>"
