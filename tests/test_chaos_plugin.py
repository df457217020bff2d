"""The pytest plugin's chaos support: seeds in the header and in failures, replay, marks.

As in ``test_pytest_plugin.py``, each test runs pytest on a throwaway suite
with ``pytester``, as a project that merely installed pollkit would.
"""

from __future__ import annotations

import importlib.util

import pytest

from pollkit._chaos import SEED_ENV, derive_seed

UNRELATED_PLUGINS_OFF = ("-p", "no:hypothesispytest", "-p", "no:benchmark", "-p", "no:randomly")

SEES_ITS_SEED = """
    import os

    from pollkit import open_poller

    def chaos(backend):
        return backend if backend.startswith("chaos:") else "chaos:" + backend

    def test_seed(poller_backend, request):
        with open_poller(chaos(poller_backend)) as poller, open("seen.txt", "a") as seen:
            seen.write(
                f"{request.node.nodeid} {os.environ['POLLKIT_CHAOS_SEED']} {poller.stream}\\n"
            )

    def test_fails_with_chaos(poller_backend):
        with open_poller(chaos(poller_backend)):
            assert False, "boom"

    def test_fails_without_chaos():
        assert False, "plain"
"""


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("POLLKIT_BACKEND", SEED_ENV, "POLLKIT_CHAOS"):
        monkeypatch.delenv(name, raising=False)


def _lines(result: pytest.RunResult, prefix: str) -> list[str]:
    return [line for line in result.outlines if line.startswith(prefix)]


@pytest.mark.timeout(60)
def test_the_seed_is_in_the_header_and_in_each_chaos_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=SEES_ITS_SEED)
    result = pytester.runpytest(
        *UNRELATED_PLUGINS_OFF, "--pollkit-backend", "poll", "--pollkit-chaos-seed", "123"
    )
    result.assert_outcomes(passed=1, failed=2)
    assert "pollkit chaos seed: 123 (replay with --pollkit-chaos-seed 123)" in result.outlines
    sections = _lines(result, "pollkit chaos seed: 123; replay with --pollkit-chaos-seed 123")
    # The chaos test's failure has it; the plain test's (no chaos poller, plain session) not.
    assert len(sections) == 1
    nodeid = "test_user.py::test_fails_with_chaos[poll]"
    assert f"{SEED_ENV}={derive_seed(123, nodeid)}" in sections[0]


@pytest.mark.timeout(60)
def test_each_test_runs_with_its_own_seed_and_a_rerun_alone_replays_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_user=SEES_ITS_SEED)
    whole = pytester.runpytest(
        *UNRELATED_PLUGINS_OFF, "--pollkit-chaos-seed", "77", "-k", "test_seed"
    )
    seen = _seen(pytester)
    assert len(seen) >= 2
    for nodeid, (seed, _) in seen.items():
        assert seed == derive_seed(77, nodeid)
    assert len({seed for seed, _ in seen.values()}) == len(seen)
    # Each test's poller is stream 0 of that test's seed, however many ran before.
    assert {stream for _, stream in seen.values()} == {0}
    whole.assert_outcomes(passed=len(seen))
    nodeid = sorted(seen)[-1]
    (pytester.path / "seen.txt").unlink()
    pytester.runpytest(*UNRELATED_PLUGINS_OFF, "--pollkit-chaos-seed", "77", nodeid)
    assert _seen(pytester) == {nodeid: seen[nodeid]}


def _seen(pytester: pytest.Pytester) -> dict[str, tuple[int, int]]:
    """What each inner ``test_seed`` wrote: its id, its seed, its poller's stream."""
    seen = {}
    for line in (pytester.path / "seen.txt").read_text().splitlines():
        nodeid, seed, stream = line.split()
        seen[nodeid] = (int(seed), int(stream))
    return seen


@pytest.mark.timeout(60)
def test_the_environment_seed_is_the_session_seed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SEED_ENV, "5")
    pytester.makepyfile(test_user=SEES_ITS_SEED)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-k", "test_seed")
    assert "pollkit chaos seed: 5 (replay with --pollkit-chaos-seed 5)" in result.outlines


@pytest.mark.timeout(60)
def test_a_chaos_session_reports_the_seed_for_every_failure(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=SEES_ITS_SEED)
    result = pytester.runpytest(
        *UNRELATED_PLUGINS_OFF, "--pollkit-backend", "chaos:select", "--pollkit-chaos-seed", "9"
    )
    result.assert_outcomes(passed=1, failed=2)
    assert len(_lines(result, "pollkit chaos seed: 9; replay with --pollkit-chaos-seed 9")) == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["abc", "-3", "1.5"])
def test_a_bad_seed_option_is_a_one_line_usage_error(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile(test_user=SEES_ITS_SEED)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "--pollkit-chaos-seed", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1, result.errlines
    assert "--pollkit-chaos-seed" in errors[0]
    assert value in errors[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "value"), [(SEED_ENV, "x1"), ("POLLKIT_CHAOS", "split=9"), ("POLLKIT_CHAOS", "nope=1")]
)
def test_bad_chaos_settings_in_the_environment_are_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    pytester.makepyfile(test_user=SEES_ITS_SEED)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = " ".join(result.errlines)
    assert name in errors
    assert value in errors


EXACT = """
    import pytest

    @pytest.mark.pollkit_exact
    def test_exact(poller):
        assert poller.poll(0) == []

    @pytest.mark.pollkit_exact("one call's order")
    def test_exact_without_a_driver_fixture():
        pass
"""


@pytest.mark.timeout(60)
def test_pollkit_exact_runs_on_plain_drivers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=EXACT)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "--pollkit-backend", "epoll,poll")
    result.assert_outcomes(passed=3)


@pytest.mark.timeout(60)
def test_pollkit_exact_skips_under_chaos_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", "chaos:poll")
    pytester.makepyfile(test_user=EXACT)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(
        [
            "*under chaos: asserts one poll() call's exact result, which chaos: varies on purpose",
            "*under chaos: one call's order",
        ]
    )


@pytest.mark.timeout(60)
def test_pollkit_exact_skips_only_the_chaos_runs_of_a_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=EXACT)
    result = pytester.runpytest(
        *UNRELATED_PLUGINS_OFF, "--pollkit-backend", "poll,chaos:poll", "-k", "test_exact["
    )
    result.assert_outcomes(passed=1, skipped=1)


LEAVES_ONE_REGISTERED = """
    import socket

    import pytest

    from pollkit import Events

    @pytest.fixture
    def pair():
        left, right = socket.socketpair()
        left.setblocking(False)
        yield left, right
        left.close()
        right.close()

    # pair is set up before poller, so torn down after it: the sockets are
    # still open when the poller's teardown looks.
    def test_leaves_it(pair, poller):
        poller.register(pair[0], Events.READ)

    def test_cleans_up(pair, poller):
        poller.register(pair[0], Events.READ)
        poller.unregister(pair[0])
"""


@pytest.mark.timeout(60)
def test_under_debug_a_test_that_leaves_an_fd_registered_fails_at_teardown(
    pytester: pytest.Pytester,
) -> None:
    if importlib.util.find_spec("pollkit._debug") is None:
        pytest.skip("the debug: wrapper is not built yet")
    pytester.makepyfile(test_user=LEAVES_ONE_REGISTERED)
    result = pytester.runpytest(
        *UNRELATED_PLUGINS_OFF,
        "--pollkit-backend",
        "debug:poll,chaos:debug:poll",
        "-W",
        "ignore::UserWarning",
        "-W",
        "ignore::ResourceWarning",
    )
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(["*the test left fds registered*fd *"])


@pytest.mark.timeout(60)
def test_on_plain_drivers_leaving_an_fd_registered_is_not_an_error(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_user=LEAVES_ONE_REGISTERED)
    result = pytester.runpytest(
        *UNRELATED_PLUGINS_OFF, "--pollkit-backend", "poll,chaos:poll", "-W", "ignore"
    )
    result.assert_outcomes(passed=4)


MISUSES = """
    import socket

    import pytest

    from pollkit import Events

    @pytest.fixture
    def pair():
        left, right = socket.socketpair()
        left.setblocking(False)
        yield left, right
        left.close()
        right.close()

    @pytest.mark.pollkit_misuse("leaves a registration, on purpose")
    def test_leaves_it_on_purpose(pair, poller):
        poller.register(pair[0], Events.READ)

    @pytest.mark.pollkit_misuse
    def test_registers_a_blocking_fd_on_purpose(poller):
        left, right = socket.socketpair()
        with left, right:
            poller.register(left, Events.READ)
            poller.unregister(left)
"""


@pytest.mark.timeout(60)
def test_pollkit_misuse_runs_quietly_under_debug(pytester: pytest.Pytester) -> None:
    if importlib.util.find_spec("pollkit._debug") is None:
        pytest.skip("the debug: wrapper is not built yet")
    pytester.makepyfile(test_user=MISUSES)
    # Every warning an error, as in pollkit's own suite: the misuse draws one,
    # and the mark quiets it.
    quiet = pytester.runpytest(
        *UNRELATED_PLUGINS_OFF, "--pollkit-backend", "debug:poll,chaos:debug:epoll", "-W", "error"
    )
    quiet.assert_outcomes(passed=4)
    unmarked = MISUSES.replace("@pytest.mark.pollkit_misuse", "# (unmarked)")
    pytester.makepyfile(test_user=unmarked)
    loud = pytester.runpytest(
        *UNRELATED_PLUGINS_OFF, "--pollkit-backend", "debug:poll", "-W", "error"
    )
    # The leftover registration fails at teardown; the blocking fd fails the call.
    loud.assert_outcomes(passed=1, failed=1, errors=1)
