"""The ``debug:`` wrapper: a :class:`Poller` that names misuse, and changes nothing.

``open_poller("debug:epoll")`` wraps the epoll driver in a
:class:`DebugPoller`.  Every call goes to the wrapped poller, and its result
(the same list object) or its exception comes back unchanged; what the
wrapper adds is a :class:`PollkitDebugWarning` when the program misuses the
poller.  Each message names the fd, what was seen, what to do, and the
``file:line`` of the ``register()`` call: the first frame outside pollkit's
own wrapper modules (this one, ``_chaos``, ``_wrap``, ``_base`` and the
``compat`` adapter), so a server layer that registers on the application's
behalf is named as the site, which is where the fix goes.

The checks, and the facts they rest on:

1. **Closed or replaced while registered.**  At ``register()`` the wrapper
   takes the file's identity (``st_dev``, ``st_ino`` from ``fstat``) and
   compares it whenever the fd is reported, modified or unregistered.
   ``EBADF`` means it was closed; another identity means its number now
   belongs to another file, and events reach the wrong object.  One warning
   per registration.  Anonymous-inode files (eventfd, timerfd, signalfd,
   epoll) all share one inode, so replacing one by another is not seen.
2. **Spin.**  An fd reported on many consecutive ``poll()`` calls while the
   program makes no progress on it.  Progress is read from the kernel, without
   the program's help, and only where it cannot be mistaken: a correct
   program draws nothing, however busy.

   * TCP: ``TCP_INFO`` byte counters give the bytes the program has *read*
     (``bytes_received - SIOCINQ``) and *written* (``bytes_acked +
     SIOCOUTQ``) since the connection began.  A READ report after which the
     first never grows is input never read (or an end of input never
     handled); a WRITE report after which the second never grows is WRITE
     interest with nothing to send.
   * pipes, FIFOs, AF_UNIX stream sockets: no such counters, and a queue
     level that stays the same proves nothing (a fast writer refills what a
     reader takes).  Only end-of-input states are judged, where nothing new
     can arrive: ``HANGUP``/``READ_HANGUP`` (or ``ERROR`` on a pipe whose
     reader is gone), or READ with nothing queued when a ``poll(0)`` of the
     fd alone shows the hang-up (select reports one as READ; without the
     probe, a reader that another process keeps beating to a shared pipe
     would look the same); the same mask and level on every report means the
     program never handles it.
   * everything else (listening sockets, datagram sockets, eventfd, timerfd,
     ttys, regular files): progress cannot be seen, so no spin is reported.

   Edge-triggered registrations are not judged (a repeat report there means
   new events).  ``modify()`` restarts the count.  Only fds already reported
   on :data:`_SAMPLE_AFTER` consecutive calls are sampled, so a short run
   costs nothing but a counter.
3. **Blocking fd** at ``register()`` (no ``O_NONBLOCK``).  Regular files,
   directories and block devices are exempt (their reads never wait), and so
   are fds 0-2: stdin, stdout and stderr share their file description with
   the shell, so making them non-blocking would break other programs; and
   so is an epoll fd nested in another poller (O_NONBLOCK does not change
   ``epoll_wait()``).
4. **close() while open fds are registered** lists each with its site (fds
   already closed are not listed: closing them all, then the poller, is a
   harmless shutdown); a wrapper garbage-collected unclosed gets a
   ``ResourceWarning``, as files do.
5. **Threads.**  ``poll()`` entered while another thread is in it; and
   ``register()``/``modify()`` from another thread while ``poll()`` blocks on
   a driver that sees changes only at its next call (poll, select, or a
   chaos wrapper, which holds such changes back), with no ``wakeup()``
   after it for :data:`_LATE_CHANGE_GRACE` seconds of that ``poll()``.  The
   grace period keeps "register, then ``wakeup()``" silent even when the
   registering thread is descheduled between the two calls.

Cost: per ``poll()``, a non-blocking lock and one pass over the reported fds
(a dict lookup, an ``fstat`` and a counter each).  Only an fd reported on
more than :data:`_SAMPLE_AFTER` consecutive calls is sampled, on each further
report: for TCP two ``ioctl`` calls and a ``TCP_INFO`` ``getsockopt``; for a
pipe or AF_UNIX socket one ``ioctl`` (and a ``poll(0)`` probe when READ comes
with nothing queued); nothing for other kinds.  A busy streaming connection
is such an fd, so that is the price of a busy loop; an idle or bursty one
pays only the ``fstat``.  ``register()`` adds an ``fstat``, an ``fcntl``, a
socket-type probe and a frame walk.  The plain drivers are untouched.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import stat
import struct
import sys
import termios
import threading
import time
import warnings
from typing import TYPE_CHECKING

from ._backends import parse_backend
from ._base import FileDescriptorLike, Poller, to_fd
from ._events import Events
from ._validate import positive_int
from ._wrap import WrapperBase
from .errors import BackendUnavailableError, PollkitDebugWarning

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["DebugPoller", "PollkitDebugWarning"]


#: Consecutive reports after which an fd starts being sampled for progress.
_SAMPLE_AFTER = 8
#: Default number of consecutive no-progress reports that make a spin.
DEFAULT_SPIN_THRESHOLD = 64
#: Seconds a poll() must go on blocking after another thread's change, with
#: no wakeup(), before the change is called unseen.
_LATE_CHANGE_GRACE = 0.2

_READ = int(Events.READ)
_WRITE = int(Events.WRITE)
_ERROR = int(Events.ERROR)
_HANGUP = int(Events.HANGUP)
_INVALID = int(Events.INVALID)
_READ_HANGUP = int(Events.READ_HANGUP)

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received,
# two u64 at offset 120, present since Linux 4.1.
_TCP_INFO_LEN = 136
_TCP_BYTES = struct.Struct("=QQ")
_TCP_BYTES_OFFSET = 120
_SIOCINQ = termios.FIONREAD
_SIOCOUTQ = termios.TIOCOUTQ
_INT = struct.Struct("=i")
_POLLRDHUP: int = getattr(select, "POLLRDHUP", _READ_HANGUP)

# What the spin detector can measure for an fd (see the module docstring).
_UNMEASURED = 0
_TCP = 1
_STREAM = 2  # AF_UNIX stream socket: end-of-input states only
_PIPE = 3  # pipe or FIFO: end-of-input states, and ERROR (no reader) too

#: Standard input, output and error are exempt from the blocking-fd check:
#: their file descriptions are shared with the shell and every other process
#: on the terminal, so setting O_NONBLOCK on them breaks those programs.
_STDERR = 2

_HERE = os.path.dirname(os.path.abspath(__file__))
#: Frames in these files are pollkit's own wrappers; a site is the first
#: frame outside them.
_WRAPPER_FILES = frozenset(
    os.path.join(_HERE, name)
    for name in ("_debug.py", "_chaos.py", "_wrap.py", "_base.py", "compat.py")
)


def _caller() -> tuple[FrameType | None, int]:
    """The first frame outside pollkit's wrappers, and its ``stacklevel`` from our caller.

    ``stacklevel`` counts as :func:`warnings.warn` does when called from the
    function that called this one.
    """
    frame: FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_code.co_filename in _WRAPPER_FILES:
        frame = frame.f_back
        level += 1
    return frame, level


def _site() -> str:
    frame, _ = _caller()
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def _warn(message: str) -> None:
    """Warn at the first frame outside pollkit's wrappers (the application's call)."""
    _, level = _caller()
    warnings.warn(PollkitDebugWarning(message), stacklevel=level)


def _bits(mask: int) -> str:
    names = [flag.name for flag in Events if flag & mask and flag.name]
    return "|".join(names) or f"{mask:#x}"


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISFIFO, "pipe"),
        (stat.S_ISREG, "regular file"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "anonymous-inode file (eventfd, timerfd, signalfd, epoll...)"


#: How many leftover registrations close()'s warning lists by name.
_LISTED_AT_CLOSE = 20

#: What :meth:`DebugPoller._identity_change` says of a closed fd.
_CLOSED = "closed"


def _blocking_matters(fd: int, st: os.stat_result) -> bool:
    """Whether a read or write of this fd can wait, so that O_NONBLOCK matters.

    Not for regular files, directories and block devices (they never wait),
    nor an epoll fd (nested pollers: O_NONBLOCK does not change
    ``epoll_wait()``), nor fds 0-2 (see :data:`_STDERR`).
    """
    mode = st.st_mode
    if fd <= _STDERR or stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISBLK(mode):
        return False
    if stat.S_IFMT(mode) == 0:  # an anonymous inode: which kind, only /proc says
        try:
            return os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventpoll]"
        except OSError:
            return True
    return True


def _at_end_of_input(fd: int) -> bool:
    """Whether the peer of this pipe or AF_UNIX stream socket has shut down its side.

    READ with nothing queued means end of input -- or that another reader of
    a shared fd took the data first; only the hang-up bits tell them apart
    (select, reporting a hang-up as READ, cannot).
    """
    probe = select.poll()
    probe.register(fd, select.POLLIN | _POLLRDHUP)
    ready = probe.poll(0)
    return bool(ready) and bool(ready[0][1] & (select.POLLHUP | _POLLRDHUP))


def _describe(st: os.stat_result) -> str:
    return f"{_file_kind(st.st_mode)}, inode {st.st_ino}"


class _Watch:
    """What the wrapper knows about one registration."""

    __slots__ = (
        "edge",
        "events",
        "family",
        "fd",
        "identity",
        "kind",
        "last_call",
        "last_mask",
        "last_progress",
        "proto",
        "site",
        "sock_type",
        "spin_warned",
        "stale",
        "streak",
        "was_warned",
        "what",
    )

    def __init__(self, fd: int, events: int, edge: bool, site: str, st: os.stat_result) -> None:
        self.fd = fd
        self.events = events
        self.edge = edge
        self.site = site
        self.identity = (st.st_dev, st.st_ino)
        self.what = _describe(st)
        self.was_warned = False  # closed or replaced: warned once
        self.spin_warned = False
        self.kind = _UNMEASURED
        self.family = self.sock_type = self.proto = 0
        self.last_call = -2
        self.streak = 0
        self.stale = 0
        self.last_mask = 0
        self.last_progress: tuple[int, ...] | None = None

    def restart(self) -> None:
        self.streak = 0
        self.stale = 0
        self.last_progress = None


class _LateChange:
    __slots__ = ("fd", "op", "site", "thread", "when")

    def __init__(self, fd: int, op: str, site: str, when: float) -> None:
        self.fd = fd
        self.op = op
        self.site = site
        self.when = when
        self.thread = threading.current_thread().name


def _sees_changes_live(name: str) -> bool:
    """Whether a blocked ``poll()`` of this poller sees another thread's change at once.

    True for epoll.  False for poll and select (they watch the set they were
    called with) and for anything with a chaos wrapper (it holds such changes
    back on purpose).  A poller of unknown kind counts as live, so it draws
    no warning.
    """
    try:
        spec = parse_backend(name)
    except BackendUnavailableError:
        return True
    return spec.driver == "epoll" and "chaos" not in spec.prefixes


class DebugPoller(WrapperBase):
    """A :class:`Poller` around ``inner`` that warns about misuse.

    It returns exactly what ``inner`` returns and raises exactly what it
    raises; see the module documentation for the checks.  ``spin_threshold``
    is how many consecutive reports without progress make a spin.
    """

    def __init__(self, inner: Poller, *, spin_threshold: int = DEFAULT_SPIN_THRESHOLD) -> None:
        self._closed = True  # until construction is complete (see __del__)
        self._spin_threshold = positive_int("spin_threshold", spin_threshold)
        super().__init__(inner, f"debug:{inner.name}")
        self._watches: dict[int, _Watch] = {}
        self._calls = 0
        self._pid = os.getpid()
        # poll() ownership: the lock is held while a thread is in poll().
        self._poll_lock = threading.Lock()
        self._poll_thread: int | None = None
        self._poll_thread_name = ""
        self._live_changes = _sees_changes_live(inner.name)
        self._late: list[_LateChange] = []
        self._closed = False

    # -- registration ---------------------------------------------------------

    def register(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
        exclusive: bool = False,
    ) -> None:
        self._inner.register(fd, events, oneshot=oneshot, edge=edge, exclusive=exclusive)
        number = to_fd(fd)  # valid: the inner poller took it
        site = _site()
        try:
            st = os.fstat(number)
            flags = fcntl.fcntl(number, fcntl.F_GETFL)
        except OSError:
            return  # closed under us by another thread: nothing to compare against
        watch = _Watch(number, int(events), edge, site, st)
        self._classify(watch, st)
        self._watches[number] = watch
        if not flags & os.O_NONBLOCK and _blocking_matters(number, st):
            _warn(
                f"fd {number} ({watch.what}) was registered in blocking mode (no O_NONBLOCK): "
                "readiness reports can be spurious, and then the next read or write blocks "
                "the whole loop; make it non-blocking first (sock.setblocking(False) or "
                f"os.set_blocking(fd, False)). Registered at {site}"
            )
        self._note_cross_thread_change(number, "registered", site)

    def modify(
        self,
        fd: FileDescriptorLike,
        events: int,
        *,
        oneshot: bool = False,
        edge: bool = False,
    ) -> None:
        self._inner.modify(fd, events, oneshot=oneshot, edge=edge)
        number = to_fd(fd)
        watch = self._watches.get(number)
        if watch is None:
            return
        watch.events = int(events)
        watch.edge = edge
        watch.restart()
        self._check_identity(watch, "at modify()")
        self._note_cross_thread_change(number, "modified", _site())

    def unregister(self, fd: FileDescriptorLike) -> None:
        self._inner.unregister(fd)
        watch = self._watches.pop(to_fd(fd), None)
        if watch is not None:
            self._check_identity(watch, "at unregister()")

    # -- waiting --------------------------------------------------------------

    def poll(
        self, timeout: float | None = None, max_events: int | None = None
    ) -> list[tuple[int, int]]:
        lock = self._poll_lock
        owner = lock.acquire(False)
        if owner:
            self._poll_thread = threading.get_ident()
            self._poll_thread_name = threading.current_thread().name
        else:
            self._concurrent_poll()
        try:
            ready = self._inner.poll(timeout, max_events)
        finally:
            if owner:
                self._poll_thread = None
                lock.release()
        if owner and self._late:
            self._judge_late_changes()
        self._calls += 1
        if ready:
            self._inspect(ready)
        return ready

    def wakeup(self) -> None:
        # Whatever another thread changed before this is now seen: the poll() returns.
        self._late.clear()
        self._inner.wakeup()

    # -- life cycle -----------------------------------------------------------
    # closed, fileno(), len(), ``in``, get_registration(), the context manager
    # and repr() are WrapperBase's: inner's answers and errors, unchanged.

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if os.getpid() == self._pid and not self._inner.closed:
                left = self.open_registrations()
                if left:
                    listed = "; ".join(left[:_LISTED_AT_CLOSE])
                    if len(left) > _LISTED_AT_CLOSE:
                        listed += f"; and {len(left) - _LISTED_AT_CLOSE} more"
                    _warn(
                        f"closing the {self.name} poller while it still watches "
                        f"{len(left)} fd(s): {listed}; unregister() each fd "
                        "before closing the poller (and before closing the fd)"
                    )
        finally:
            self._watches.clear()
            self._late.clear()
            self._inner.close()

    def open_registrations(self) -> list[str]:
        """One line per registered fd that is still open: the fd, its events, its site.

        What ``close()`` warns about, and what a test fixture's teardown can
        fail on.  An fd closed (or its number reused) while registered is left
        out: closing every fd and then the poller is a harmless way to shut
        down, and using the poller in between is what check 1 reports.
        """
        if self._inner.closed:
            return []
        lines = []
        for fd, watch in list(self._watches.items()):
            if fd in self._inner and not self._identity_change(watch):
                lines.append(f"fd {fd} ({_bits(watch.events)}) registered at {watch.site}")
        return lines

    def __del__(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            if os.getpid() == self._pid and not self._inner.closed:
                warnings.warn(
                    f"unclosed poller {self!r}: close it, or use it as a context manager",
                    ResourceWarning,
                    stacklevel=1,  # a finalizer has no caller worth naming; source= does
                    source=self,
                )
        finally:
            self._inner.close()

    # -- check 1: identity ------------------------------------------------------

    def _identity_change(self, watch: _Watch) -> str:
        """``""`` if ``watch.fd`` is still the file registered, else what it is now.

        :data:`_CLOSED` for a closed fd; otherwise a description of the file
        that now has the number.
        """
        try:
            st = os.fstat(watch.fd)
        except OSError:
            return _CLOSED
        if (st.st_dev, st.st_ino) != watch.identity:
            return _describe(st)
        return ""

    def _check_identity(self, watch: _Watch, when: str) -> None:
        if watch.was_warned:
            return
        change = self._identity_change(watch)
        if change:
            self._warn_identity(watch, change, when)

    def _warn_identity(self, watch: _Watch, change: str, when: str) -> None:
        watch.was_warned = True
        if change == _CLOSED:
            _warn(
                f"fd {watch.fd} ({watch.what}) was closed while registered (seen {when}); "
                "unregister() an fd before closing it: epoll goes on reporting a closed fd "
                "while a duplicate keeps its file open, and a new file that gets the number "
                f"inherits the registration. Registered at {watch.site}"
            )
        else:
            _warn(
                f"fd {watch.fd} now refers to another file ({change}) than the one registered "
                f"({watch.what}), seen {when}: it was closed while registered and its number "
                "reused, so events now reach the wrong object; unregister() an fd before "
                f"closing it. Registered at {watch.site}"
            )

    # -- check 2: spin ---------------------------------------------------------

    def _classify(self, watch: _Watch, st: os.stat_result) -> None:
        """Decide what progress can be measured for this fd (see the module docstring)."""
        mode = st.st_mode
        if stat.S_ISFIFO(mode):
            if self._level(watch.fd) is not None:
                watch.kind = _PIPE
            return
        if not stat.S_ISSOCK(mode) or socket.getdefaulttimeout() is not None:
            # (With a default timeout set, wrapping the fd in a socket object
            # would make it non-blocking: leave the application's fd alone.)
            return
        try:
            probe = socket.socket(fileno=watch.fd)
        except OSError:
            return
        try:
            if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                return  # a listener: accepts leave no count to read
            if probe.type != socket.SOCK_STREAM:
                return  # datagrams: a zero-length one looks like end of input
            watch.family, watch.sock_type, watch.proto = probe.family, probe.type, probe.proto
            if probe.family in (socket.AF_INET, socket.AF_INET6) and probe.proto in (
                0,
                socket.IPPROTO_TCP,
            ):  # (MPTCP and SCTP streams have other counters)
                info = probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
                if len(info) >= _TCP_INFO_LEN:
                    watch.kind = _TCP
            elif probe.family == socket.AF_UNIX:
                watch.kind = _STREAM
        except OSError:
            return
        finally:
            probe.detach()

    def _level(self, fd: int, request: int = _SIOCINQ) -> int | None:
        buffer = bytearray(4)  # one per call: register() may run in another thread
        try:
            fcntl.ioctl(fd, request, buffer, True)
        except OSError:
            return None
        level: int = _INT.unpack(buffer)[0]
        return level

    def _tcp_progress(self, watch: _Watch) -> tuple[int, int] | None:
        """(bytes the program has read, bytes it has written) on this connection."""
        fd = watch.fd
        inq = self._level(fd)
        outq = self._level(fd, _SIOCOUTQ)
        if inq is None or outq is None or socket.getdefaulttimeout() is not None:
            return None
        sock = socket.socket(watch.family, watch.sock_type, watch.proto, fileno=fd)
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        except OSError:
            return None
        finally:
            sock.detach()
        acked, received = _TCP_BYTES.unpack_from(info, _TCP_BYTES_OFFSET)
        return received - inq, acked + outq

    def _sample(self, watch: _Watch, mask: int) -> None:
        """Compare this report with the last; warn after enough without progress."""
        progress: tuple[int, ...] | None
        if watch.kind == _TCP:
            progress = self._tcp_progress(watch)
            if progress is None:
                watch.restart()
                return
            stale = watch.last_progress is not None and mask == watch.last_mask
            if stale and watch.last_progress is not None:
                read, written = progress
                last_read, last_written = watch.last_progress[:2]
                if mask & _READ and read != last_read:
                    stale = False
                if mask & _WRITE and written != last_written:
                    stale = False
                if not mask & (_READ | _WRITE) and progress != watch.last_progress:
                    stale = False
        else:
            level = self._level(watch.fd)
            if level is None:
                watch.restart()
                return
            sticky = _HANGUP | _READ_HANGUP | (_ERROR if watch.kind == _PIPE else 0)
            at_end = bool(mask & sticky) or (
                bool(mask & _READ) and level == 0 and _at_end_of_input(watch.fd)
            )
            progress = (level,)
            stale = at_end and mask == watch.last_mask and progress == watch.last_progress
        watch.last_mask = mask
        watch.last_progress = progress
        watch.stale = watch.stale + 1 if stale else 0
        if watch.stale >= self._spin_threshold:
            watch.spin_warned = True
            self._warn_spin(watch, mask)

    def _warn_spin(self, watch: _Watch, mask: int) -> None:
        fd = watch.fd
        what = []
        if mask & (_HANGUP | _ERROR) or (watch.kind != _TCP and mask & _READ_HANGUP):
            what.append(
                "the hang-up or error was never handled; on HANGUP or ERROR read what is "
                "left, then unregister() and close the fd"
            )
        else:
            if mask & _READ:
                waiting = self._level(fd) or 0
                if waiting:
                    what.append(
                        f"its input was never read ({waiting} bytes waiting); read it until "
                        "EAGAIN, or modify() it to drop READ while you cannot take input"
                    )
                else:
                    what.append(
                        "it is at end of input (nothing left to read); when a read returns "
                        "b'' (EOF), unregister() the fd or modify() READ away"
                    )
            if mask & _WRITE:
                what.append(
                    "nothing was written to it; ask for WRITE only while output is pending, "
                    "and modify() it away when the buffer empties"
                )
        _warn(
            f"fd {fd} ({watch.what}) was reported {_bits(mask)} on {watch.streak} consecutive "
            f"poll() calls with no progress, a busy loop: {'; and '.join(what)}. "
            f"Registered at {watch.site}"
        )

    def _inspect(self, ready: list[tuple[int, int]]) -> None:
        """Per reported fd: identity, then the consecutive-report count and sampling."""
        calls = self._calls
        watches = self._watches
        fstat = os.fstat
        for fd, mask in ready:
            watch = watches.get(fd)
            if watch is None:
                continue
            if not watch.was_warned:
                if mask & _INVALID:
                    self._warn_identity(watch, _CLOSED, "when poll() reported INVALID")
                    continue
                try:
                    st = fstat(fd)
                except OSError:
                    self._warn_identity(watch, _CLOSED, "when poll() reported it")
                    continue
                if (st.st_dev, st.st_ino) != watch.identity:
                    self._warn_identity(watch, _describe(st), "when poll() reported it")
                    continue
            elif mask & _INVALID:
                continue
            if watch.last_call == calls - 1:
                watch.streak += 1
            else:
                watch.restart()
                watch.streak = 1
            watch.last_call = calls
            if (
                watch.streak > _SAMPLE_AFTER
                and watch.kind != _UNMEASURED
                and not watch.spin_warned
                and not watch.edge
                and not watch.was_warned
            ):
                self._sample(watch, mask)

    # -- check 5: threads --------------------------------------------------------

    def _concurrent_poll(self) -> None:
        if self._poll_thread == threading.get_ident():
            return  # re-entered from a signal handler in the polling thread
        _warn(
            f"poll() of the {self.name} poller was entered from thread "
            f"{threading.current_thread().name!r} while thread {self._poll_thread_name!r} "
            "is in poll(): a poller serves one thread's event loop; give each thread its "
            "own poller, or hand work to the loop's thread (wakeup() is the one method "
            "meant for other threads)"
        )

    def _note_cross_thread_change(self, fd: int, op: str, site: str) -> None:
        polling = self._poll_thread
        if self._live_changes or polling is None or polling == threading.get_ident():
            return
        self._late.append(_LateChange(fd, op, site, time.monotonic()))

    def _judge_late_changes(self) -> None:
        """In the polling thread, after poll(): warn of changes it went on blocking past."""
        now = time.monotonic()
        late = self._late
        self._late = []
        for change in late:
            waited = now - change.when
            if waited < _LATE_CHANGE_GRACE:
                continue  # the next poll() sees it; a wakeup() may still be on its way
            _warn(
                f"fd {change.fd} was {change.op} from thread {change.thread!r} while thread "
                f"{self._poll_thread_name!r} was blocked in poll() on the {self.name} "
                "poller, which sees such a change only at its next call, and no wakeup() "
                f"followed ({waited:.2f} s): call wakeup() after changing registrations from "
                f"another thread. {change.op.capitalize()} at {change.site}"
            )
