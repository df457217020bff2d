"""The signal wakeup pipe lives in the server layer; the client's stdin reader uses it too."""

from __future__ import annotations

from ..server._signals import SignalWakeup as SignalWakeup

__all__ = ["SignalWakeup"]
