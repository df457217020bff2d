"""Choosing a driver: ``open_poller()``, ``available_backends()``, ``POLLKIT_BACKEND``."""

from __future__ import annotations

import pytest

from pollkit import (
    BackendUnavailableError,
    EpollPoller,
    Poller,
    PollkitError,
    PollPoller,
    SelectPoller,
    available_backends,
    open_poller,
)

DRIVERS: dict[str, type[Poller]] = {
    "epoll": EpollPoller,
    "poll": PollPoller,
    "select": SelectPoller,
}


def test_available_backends_in_preference_order() -> None:
    # All three open on Linux, and the order is epoll > poll > select.
    assert available_backends() == ["epoll", "poll", "select"]


@pytest.mark.parametrize("name", list(DRIVERS))
def test_open_poller_by_name(name: str) -> None:
    with open_poller(name) as poller:
        assert type(poller) is DRIVERS[name]
        assert poller.name == name
        assert isinstance(poller, Poller)


@pytest.mark.parametrize("name", list(DRIVERS))
def test_driver_classes_are_constructible_directly(name: str) -> None:
    with DRIVERS[name]() as poller:
        assert poller.name == name
        assert poller.poll(0) == []


def test_auto_picks_the_first_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", "select")  # "auto" must not read it
    with open_poller("auto") as poller:
        assert poller.name == available_backends()[0]


@pytest.mark.parametrize("name", list(DRIVERS))
def test_none_reads_the_environment(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", name)
    with open_poller(None) as poller:
        assert poller.name == name
    with open_poller() as poller:
        assert poller.name == name


@pytest.mark.parametrize("value", [None, "", "auto"])
def test_none_without_the_environment_means_auto(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("POLLKIT_BACKEND", raising=False)
    else:
        monkeypatch.setenv("POLLKIT_BACKEND", value)
    with open_poller() as poller:
        assert poller.name == available_backends()[0]


@pytest.mark.parametrize("name", ["kqueue", "nonsense", "epoll2", "devpoll"])
def test_unknown_name_lists_what_is_available(name: str) -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        open_poller(name)
    message = str(caught.value)
    assert name in message
    for available in available_backends():
        assert available in message
    assert isinstance(caught.value, PollkitError)


def test_unknown_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", "kqueue")
    with pytest.raises(BackendUnavailableError, match="kqueue") as caught:
        open_poller()
    assert "epoll" in str(caught.value)


def test_explicit_name_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", "select")
    with open_poller("poll") as poller:
        assert poller.name == "poll"


def test_unavailable_driver_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make epoll fail its probe, as on a kernel built without it.
    def no_epoll() -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr("select.epoll", no_epoll)
    assert available_backends() == ["poll", "select"]
    with pytest.raises(BackendUnavailableError) as caught:
        open_poller("epoll")
    message = str(caught.value)
    assert "epoll" in message
    assert "Function not implemented" in message
    assert "poll" in message
    with open_poller("auto") as poller:
        assert poller.name == "poll"


def test_features_are_known_before_opening() -> None:
    for name, driver in DRIVERS.items():
        assert driver.name == name
        assert "oneshot" in driver.features
        assert ({"edge", "exclusive"} <= driver.features) == (name == "epoll")
