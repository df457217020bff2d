"""The listening socket: batched accept, limits, and out-of-fds back-off.

* **Bounded accepts per readiness report** (``ACCEPT_BATCH``): a flood of
  connections cannot hold up the connections already served; the rest wait
  in the backlog, and a level-triggered poller reports the socket again.
* **Errors that belong to one connection** (accept(2), "Error handling":
  ``ECONNABORTED``, ``EPROTO``, the network errors Linux passes on from the
  new socket) drop that connection and go on accepting.
* **Out of fds or memory.**  ``accept()`` failing with ``EMFILE``/``ENFILE``
  (or ``ENOBUFS``/``ENOMEM``) leaves the connection in the backlog and the
  socket readable: watching it would spin.  The listener unregisters itself
  and retries after a back-off (50 ms doubling to 1 s), or at once when one
  of the server's connections closes and frees an fd.  Waiting clients stay
  in the backlog and are served when fds free up.  (trio sleeps on EMFILE,
  Netty turns auto-read off for a second: the same reasoning.)
* **Limits.**  Past ``max_clients``, connections are accepted and closed at
  once (counted in ``rejected_max_clients``): in the backlog they would wait
  for nothing, and their peers would time out instead of being told.  A
  driver that cannot watch an fd (select, for fds >= 1024) makes
  ``register()`` raise :class:`~pollkit.FdOutOfRangeError`: that connection
  is closed, the first such refusal logged as a warning, and serving goes on.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING

from .._events import Events

if TYPE_CHECKING:
    from ._loop import Timer
    from ._server import Server

__all__ = ["Listener"]

log = logging.getLogger("pollkit.server")

#: accept() calls per readiness report.
ACCEPT_BATCH = 64
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0

#: accept() errors that mean "no resources now": the connection stays queued.
#: Any other error that is not one connection's is treated the same way: back
#: off rather than spin on a socket that keeps failing.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors that belong to one failed connection (accept(2), "Error handling").
_CONNECTION_ERRNOS = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.EPERM,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
    }
)


class Listener:
    """The server's listening socket and its accept policy."""

    __slots__ = ("_backoff", "_resume", "_server", "_troubled", "fd", "registered", "sock")

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self._server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.registered = False
        self._backoff = _BACKOFF_FIRST
        self._troubled = False
        self._resume: Timer | None = None

    def start(self) -> None:
        """Watch the socket for connections."""
        if not self.registered and self.fd >= 0:
            self._server._poller.register(self.fd, Events.READ)
            self._server._handlers[self.fd] = self.ready
            self.registered = True

    def stop(self) -> None:
        """Stop watching (the socket stays open: connections wait in the backlog)."""
        if self.registered:
            self.registered = False
            self._server._handlers.pop(self.fd, None)
            self._server._unregister(self.fd)

    def close(self) -> None:
        """Stop watching and close: new connections are refused from now on."""
        self.stop()
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        self.sock.close()
        self.fd = -1  # start() refuses from now on: the number may belong to another file

    def ready(self, mask: int) -> None:
        """Accept up to ``ACCEPT_BATCH`` connections."""
        server = self._server
        if server._stop_requested:
            return  # shutdown() was called: the drain closes this socket next
        accept = self.sock.accept
        admit = server._admit
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _CONNECTION_ERRNOS:
                    log.debug("accept() failed for one connection: %s", exc)
                    continue
                self._pause(exc)
                return
            if self._troubled:
                self._troubled = False
                self._backoff = _BACKOFF_FIRST
                log.info("accepting connections again")
            admit(sock, peer)
            if not self.registered or server._stop_requested:
                return  # stopped meanwhile (a shutdown from a callback)

    def _pause(self, exc: OSError) -> None:
        """Stop watching the socket for a while: it would spin."""
        self.stop()
        delay = self._backoff
        self._backoff = min(delay * 2, _BACKOFF_MAX)
        if not self._troubled:
            self._troubled = True
            self._server._accept_pauses += 1
            log.warning(
                "accept() failed: %s; serving the %d open connections and retrying every "
                "%g-%g s, or when one closes",
                exc,
                len(self._server._connections),
                _BACKOFF_FIRST,
                _BACKOFF_MAX,
            )
        if self._resume is not None:
            self._resume.cancel()
        self._resume = self._server.call_later(delay, self._retry)

    def _retry(self) -> None:
        self._resume = None
        if not self._server._draining:
            self.start()

    def connection_closed(self) -> None:
        """An fd is free now: retry ``accept()`` at once if backing off."""
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
            if not self._server._draining:
                self.start()
