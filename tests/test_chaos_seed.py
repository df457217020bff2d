"""chaos: the seed replays a run; bad settings are refused, naming what to fix."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from conftest import READ, WRITE, open_fds
from pollkit import InvalidArgumentError, _chaos, open_poller
from pollkit._chaos import FAULTS, RATES_ENV, SEED_ENV, ChaosPoller
from test_chaos_faults import plain_spec

#: Every fault on, often.
BUSY = dict.fromkeys(FAULTS, 0.5)


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(5)]
    for left, right in made:
        left.setblocking(False)
        right.setblocking(False)
    yield made
    for left, right in made:
        left.close()
        right.close()


def script(
    poller: ChaosPoller, pairs: list[tuple[socket.socket, socket.socket]]
) -> list[list[tuple[int, int]]]:
    """A fixed sequence of calls; the results, with fds as pair indexes."""
    index = {left.fileno(): number for number, (left, _) in enumerate(pairs)}
    results = []
    for number, (left, right) in enumerate(pairs):
        poller.register(left, READ | WRITE if number % 2 else READ)
        right.send(b"x")
    for call in range(30):
        ready = poller.poll(0.001 if call % 3 else 0, 2 if call % 5 == 4 else None)
        results.append([(index[fd], mask) for fd, mask in ready])
        if call % 4 == 3:
            left, right = pairs[call % len(pairs)]
            poller.modify(left, READ)
    for left, _ in pairs:
        poller.unregister(left)
    return results


def run_script(
    backend: str, pairs: list[tuple[socket.socket, socket.socket]], **kwargs: object
) -> list[list[tuple[int, int]]]:
    with ChaosPoller(open_poller(plain_spec(backend)), **kwargs) as poller:  # type: ignore[arg-type]  # seed=/rates= from the callers
        return script(poller, pairs)


@pytest.mark.timeout(60)
def test_same_seed_same_calls_same_results(
    poller_backend: str, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    first = run_script(poller_backend, pairs, seed=42, rates=BUSY)
    again = run_script(poller_backend, pairs, seed=42, rates=BUSY)
    assert first == again


@pytest.mark.timeout(60)
def test_other_seeds_give_other_results(
    poller_backend: str, pairs: list[tuple[socket.socket, socket.socket]]
) -> None:
    runs = {repr(run_script(poller_backend, pairs, seed=seed, rates=BUSY)) for seed in range(4)}
    assert len(runs) > 1


@pytest.mark.timeout(60)
def test_the_environment_seed_replays_like_the_constructor(
    poller_backend: str,
    pairs: list[tuple[socket.socket, socket.socket]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SEED_ENV, "42")
    monkeypatch.setenv(RATES_ENV, ",".join(f"{name}=0.5" for name in FAULTS))
    _chaos.restart_streams()
    with open_poller(f"chaos:{plain_spec(poller_backend)}") as poller:
        assert isinstance(poller, ChaosPoller)
        assert (poller.seed, poller.stream) == (42, 0)
        assert poller.rates == BUSY
        from_env = script(poller, pairs)
    assert from_env == run_script(poller_backend, pairs, seed=42, rates=BUSY)


def test_each_poller_of_an_environment_seed_gets_its_own_stream(
    poller_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEED_ENV, "7")
    _chaos.restart_streams()
    spec = f"chaos:{plain_spec(poller_backend)}"
    with open_poller(spec) as first, open_poller(spec) as second:
        assert isinstance(first, ChaosPoller)
        assert isinstance(second, ChaosPoller)
        assert (first.seed, first.stream) == (7, 0)
        assert (second.seed, second.stream) == (7, 1)
        assert second.name == spec
        assert second.features == second.inner.features


def test_an_explicit_seed_is_stream_zero(poller_backend: str) -> None:
    with ChaosPoller(open_poller(plain_spec(poller_backend)), seed=9) as poller:
        assert (poller.seed, poller.stream) == (9, 0)
        assert repr(poller) == f"<ChaosPoller {poller.name} seed=9 stream=0>"


def test_without_a_seed_one_is_drawn_once_per_process_and_logged(
    poller_backend: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(SEED_ENV, raising=False)
    monkeypatch.setattr(_chaos, "_process_seed", None)
    spec = f"chaos:{plain_spec(poller_backend)}"
    with (
        caplog.at_level(logging.INFO, logger="pollkit.chaos"),
        open_poller(spec) as first,
        open_poller(spec) as second,
    ):
        assert isinstance(first, ChaosPoller)
        assert isinstance(second, ChaosPoller)
        assert first.seed == second.seed
    records = [r for r in caplog.records if r.name == "pollkit.chaos"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert f"{SEED_ENV}={first.seed}" in records[0].getMessage()


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert _chaos.derive_seed(1, "a") == _chaos.derive_seed(1, "a")
    assert len({_chaos.derive_seed(1, label) for label in "abcdef"}) == 6
    assert _chaos.derive_seed(1, "a") != _chaos.derive_seed(2, "a")
    assert _chaos.derive_seed(123, "test_x.py::test_y") == 3307636429


@pytest.mark.parametrize("value", ["abc", "1.5", "-1", "0x10"])
def test_a_bad_seed_in_the_environment_is_refused(
    poller_backend: str, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(SEED_ENV, value)
    before = open_fds()
    with pytest.raises(InvalidArgumentError, match=SEED_ENV) as caught:
        open_poller(f"chaos:{plain_spec(poller_backend)}")
    assert value in str(caught.value)
    assert open_fds() == before  # the wrapped driver was closed again


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("split=2", "split = 2"),
        ("split=-0.1", "split = -0.1"),
        ("split=lots", "split = 'lots'"),
        ("bogus=0.1", "'bogus' is not a chaos fault"),
        ("split", "'split' is not name=rate"),
    ],
)
def test_a_bad_rate_in_the_environment_is_refused(
    poller_backend: str, monkeypatch: pytest.MonkeyPatch, value: str, shown: str
) -> None:
    monkeypatch.setenv(RATES_ENV, value)
    before = open_fds()
    with pytest.raises(InvalidArgumentError) as caught:
        open_poller(f"chaos:{plain_spec(poller_backend)}")
    message = str(caught.value)
    assert RATES_ENV in message
    assert repr(value) in message
    assert shown in message
    assert ", ".join(FAULTS) in message  # the valid names
    assert open_fds() == before


def test_rates_from_the_environment_tune_only_what_they_name(
    poller_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RATES_ENV, " split=0.3, EARLY=0 ,")
    with open_poller(f"chaos:{plain_spec(poller_backend)}") as poller:
        assert isinstance(poller, ChaosPoller)
        assert poller.rates == {**_chaos.DEFAULT_RATES, "split": 0.3, "early": 0.0}


@pytest.mark.parametrize(
    ("rates", "shown"),
    [({"split": 1.5}, "split = 1.5"), ({"nope": 0.1}, "'nope'"), ({"early": True}, "early")],
)
def test_bad_constructor_rates_are_refused(
    poller_backend: str, rates: dict[str, float], shown: str
) -> None:
    with open_poller(plain_spec(poller_backend)) as inner:
        with pytest.raises(InvalidArgumentError, match="rates") as caught:
            ChaosPoller(inner, rates=rates)
        assert shown in str(caught.value)
        assert ", ".join(FAULTS) in str(caught.value)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_a_bad_constructor_seed_is_refused(poller_backend: str, seed: object) -> None:
    with (
        open_poller(plain_spec(poller_backend)) as inner,
        pytest.raises(InvalidArgumentError, match="seed"),
    ):
        ChaosPoller(inner, seed=seed)  # type: ignore[arg-type]  # the point of the test


def test_every_default_rate_fires_at_least_one_call_in_ten() -> None:
    assert set(_chaos.DEFAULT_RATES) == set(FAULTS)
    assert all(0.1 <= rate <= 1 for rate in _chaos.DEFAULT_RATES.values())
