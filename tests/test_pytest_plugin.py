"""The pytest plugin, as a user's own suite sees it.

Each test writes a small test file into a fresh directory outside the
package and runs pytest on it with ``pytester``: the plugin is found through
its ``pytest11`` entry point, exactly as in a project that merely installed
pollkit.  ``POLLKIT_BACKEND`` is removed from the environment first, because
tox sets it to force one driver for pollkit's own suite.
"""

from __future__ import annotations

import pytest

import pollkit.pytest_plugin
from pollkit import available_backends

ALL_DRIVERS = ("epoll", "poll", "select")

#: Plugins the inner runs do not need.  pytester restores ``sys.modules``
#: after each in-process run, so hypothesis's plugin would re-import
#: hypothesis (about 2 s) in every one.  Blocking an absent plugin is harmless.
UNRELATED_PLUGINS_OFF = ("-p", "no:hypothesispytest", "-p", "no:benchmark")

USES_POLLER = """
    from pollkit import Poller

    seen = []

    def test_uses_poller(poller, poller_backend):
        assert isinstance(poller, Poller)
        assert not poller.closed
        assert poller.name == poller_backend
        seen.append(poller)

    def test_every_poller_was_closed():
        assert seen, "test_uses_poller did not run"
        assert all(poller.closed for poller in seen)
"""


@pytest.fixture(autouse=True)
def _no_forced_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLLKIT_BACKEND", raising=False)


@pytest.fixture
def all_drivers_available() -> None:
    missing = set(ALL_DRIVERS) - set(available_backends())
    if missing:
        pytest.skip(f"drivers unavailable here: {sorted(missing)}")


def _passed_ids(result: pytest.RunResult) -> list[str]:
    """The ``[id]`` of every passed ``test_uses_poller`` run, in run order (needs ``-v``)."""
    ids = []
    for line in result.outlines:
        if "::test_uses_poller[" in line and " PASSED" in line:
            ids.append(line.split("[", 1)[1].split("]", 1)[0])
    return ids


@pytest.mark.usefixtures("all_drivers_available")
def test_a_test_using_poller_runs_once_per_driver(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "--strict-markers")
    result.assert_outcomes(passed=4)
    assert _passed_ids(result) == list(ALL_DRIVERS)


def test_the_plugin_loads_through_its_entry_point(pytester: pytest.Pytester) -> None:
    # A separate interpreter: nothing of this session's plugins carries over.
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest_subprocess(
        *UNRELATED_PLUGINS_OFF, "-v", "--pollkit-backend", "poll"
    )
    result.assert_outcomes(passed=2)
    assert _passed_ids(result) == ["poll"]


def test_the_plugin_can_be_named_with_p_when_autoload_is_off(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest_subprocess(
        *UNRELATED_PLUGINS_OFF, "-v", "-p", "pollkit.pytest_plugin", "--pollkit-backend", "select"
    )
    result.assert_outcomes(passed=2)
    assert _passed_ids(result) == ["select"]


def test_pollkit_backend_option_runs_one_driver(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "--pollkit-backend", "poll")
    result.assert_outcomes(passed=2)
    assert _passed_ids(result) == ["poll"]


@pytest.mark.usefixtures("all_drivers_available")
def test_pollkit_backend_option_takes_a_list_in_preference_order(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "--pollkit-backend", " Select,EPOLL ")
    result.assert_outcomes(passed=3)
    assert _passed_ids(result) == ["epoll", "select"]


def test_environment_variable_runs_one_driver(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", "select")
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v")
    result.assert_outcomes(passed=2)
    assert _passed_ids(result) == ["select"]


def test_option_wins_over_environment_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", "select")
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "--pollkit-backend", "poll")
    assert _passed_ids(result) == ["poll"]


@pytest.mark.usefixtures("all_drivers_available")
@pytest.mark.parametrize("value", ["auto", "AUTO", ""])
def test_environment_variable_auto_means_every_driver(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", value)
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v")
    assert _passed_ids(result) == list(ALL_DRIVERS)


@pytest.mark.parametrize("value", ["bogus", "poll,bogus", ","])
def test_unknown_driver_in_option_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    # Even in a suite that never asks for a poller: the option itself is wrong.
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "--pollkit-backend", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --pollkit-backend: unknown pollkit driver(s) *; choose from epoll, poll, select*"]
    )


def test_unknown_driver_in_environment_fails_the_tests_that_use_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POLLKIT_BACKEND", "bogus")
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*POLLKIT_BACKEND: unknown pollkit driver(s) bogus*"])


def test_marker_pins_a_test_to_some_drivers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.pollkit_backends("poll", "select")
        def test_uses_poller(poller):
            assert poller.name in ("poll", "select")
        """
    )
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "--strict-markers")
    assert _passed_ids(result) == [n for n in available_backends() if n in ("poll", "select")]


def test_marker_and_option_together_can_leave_nothing_to_run(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.pollkit_backends("poll")
        def test_uses_poller(poller):
            pass
        """
    )
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "-rs", "--pollkit-backend", "epoll")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*test_uses_poller[[]no-driver[]] SKIPPED*",
            "*no selected pollkit driver applies to this test*",
        ]
    )


def test_marker_with_an_unknown_driver_names_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.pollkit_backends("epol")
        def test_typo(poller):
            pass
        """
    )
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF)
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["*@pollkit_backends on test_typo: unknown pollkit driver(s) epol*"]
    )


def test_poller_backend_alone_parametrizes_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_user="""
        import pollkit

        def test_uses_poller(poller_backend):
            with pollkit.open_poller(poller_backend) as poller:
                assert poller.name == poller_backend
        """
    )
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "--pollkit-backend", "poll,select")
    assert _passed_ids(result) == ["poll", "select"]


def test_poller_factory_opens_more_of_the_same_driver_and_closes_them(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_user="""
        opened = []

        def test_uses_poller(poller_factory, poller_backend):
            first, second = poller_factory(), poller_factory()
            assert first is not second
            assert first.name == second.name == poller_backend
            opened.extend((first, second))

        def test_all_closed():
            assert len(opened) == 2
            assert all(poller.closed for poller in opened)
        """
    )
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "--pollkit-backend", "epoll")
    result.assert_outcomes(passed=2)


def test_a_driver_that_cannot_open_is_skipped_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In-process run, so the stand-in probe below is the one the plugin calls.
    def status() -> dict[str, str | None]:
        return {"epoll": "OSError: no epoll in this kernel", "poll": None, "select": None}

    monkeypatch.setattr(pollkit.pytest_plugin, "backend_status", status)
    pytester.makepyfile(test_user=USES_POLLER)
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "-v", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines(["*epoll unavailable: OSError: no epoll in this kernel*"])
    assert _passed_ids(result) == ["poll", "select"]


def test_help_lists_the_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "--help")
    result.stdout.fnmatch_lines(["*--pollkit-backend=NAME[[],NAME[]]*"])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*UNRELATED_PLUGINS_OFF, "--markers")
    result.stdout.fnmatch_lines(["*pollkit_backends(*names): run this test only on the named*"])
