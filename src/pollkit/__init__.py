"""pollkit: one typed readiness interface, three Linux drivers chosen at run time."""

from __future__ import annotations

from ._backends import available_backends as available_backends
from ._backends import open_poller as open_poller
from ._base import FileDescriptorLike as FileDescriptorLike
from ._base import Poller as Poller
from ._base import Registration as Registration
from ._chaos import ChaosPoller as ChaosPoller
from ._debug import DebugPoller as DebugPoller
from ._epoll import EpollPoller as EpollPoller
from ._events import Events as Events
from ._poll import PollPoller as PollPoller
from ._select import FD_SETSIZE as FD_SETSIZE
from ._select import SelectPoller as SelectPoller
from .errors import AlreadyRegisteredError as AlreadyRegisteredError
from .errors import BackendUnavailableError as BackendUnavailableError
from .errors import FdOutOfRangeError as FdOutOfRangeError
from .errors import InvalidArgumentError as InvalidArgumentError
from .errors import NotRegisteredError as NotRegisteredError
from .errors import PollerClosedError as PollerClosedError
from .errors import PollerForkedError as PollerForkedError
from .errors import PollkitDebugWarning as PollkitDebugWarning
from .errors import PollkitError as PollkitError
from .errors import UnsupportedFeatureError as UnsupportedFeatureError

#: The installed pollkit's version.
__version__ = "0.1.0"

__all__ = [
    "FD_SETSIZE",
    "AlreadyRegisteredError",
    "BackendUnavailableError",
    "ChaosPoller",
    "DebugPoller",
    "EpollPoller",
    "Events",
    "FdOutOfRangeError",
    "FileDescriptorLike",
    "InvalidArgumentError",
    "NotRegisteredError",
    "PollPoller",
    "Poller",
    "PollerClosedError",
    "PollerForkedError",
    "PollkitDebugWarning",
    "PollkitError",
    "Registration",
    "SelectPoller",
    "UnsupportedFeatureError",
    "__version__",
    "available_backends",
    "open_poller",
]
