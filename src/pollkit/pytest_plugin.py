"""A pytest plugin that runs tests once per pollkit driver.

Installed with pollkit and loaded through the ``pytest11`` entry point, so
any suite can use it without configuration:

* ``poller``: a fresh :class:`~pollkit.Poller`, closed after the test; a test
  that uses it runs once per driver, with the driver's name in the test id
  (``test_echo[epoll]``).
* ``poller_backend``: the driver's name for this run of the test.
* ``poller_factory``: a callable that opens more pollers of the same driver,
  all closed after the test.
* ``--pollkit-backend NAME[,NAME]``: run only those drivers.  Without it, the
  ``POLLKIT_BACKEND`` environment variable restricts the run to one driver;
  without that, every driver runs, and one that cannot open here is skipped
  with the reason.
* ``@pytest.mark.pollkit_backends("epoll", "poll")``: pin a test to some
  drivers.
* ``@pytest.mark.pollkit_exact``: skip the test under a ``chaos:`` backend,
  for tests that assert one ``poll()`` call's exact result (an optional
  argument gives the reason).
* ``@pytest.mark.pollkit_misuse``: the test misuses a poller on purpose
  (closes a registered fd, say); under a ``debug:`` backend it runs with
  ``PollkitDebugWarning`` ignored and without the open-registrations check.
* ``--pollkit-chaos-seed N``: replay the ``chaos:`` faults of an earlier run.
  Every test runs with ``POLLKIT_CHAOS_SEED`` set to a seed derived from the
  session's seed and the test's id, so one test rerun alone replays what it
  saw in the whole run; the session's seed is in the header and in the
  report of every failed test that used a chaos poller.
* Under ``debug:``, a test that leaves fds registered on a poller from
  ``poller``/``poller_factory`` fails at teardown, naming them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Generator, Iterator, Mapping

import pluggy
import pytest

from . import _chaos
from ._backends import DRIVERS, ENV_VAR, PREFIXES, backend_status, open_poller, parse_backend
from ._base import Poller
from .errors import BackendUnavailableError, InvalidArgumentError

__all__ = ["poller", "poller_backend", "poller_factory"]

_MARKER = "pollkit_backends"
_EXACT_MARKER = "pollkit_exact"
_MISUSE_MARKER = "pollkit_misuse"
_EXACT_REASON = "asserts one poll() call's exact result, which chaos: varies on purpose"
_SEED_OPTION = "--pollkit-chaos-seed"

_session_seed_key = pytest.StashKey[int]()
# The prefixes any of the session's backend specs carries ("chaos", "debug").
_session_prefixes_key = pytest.StashKey[frozenset[str]]()
_test_seed_key = pytest.StashKey[int]()
_opened_before_key = pytest.StashKey[int]()
_seed_reported_key = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pollkit")
    group.addoption(
        "--pollkit-backend",
        metavar="NAME[,NAME]",
        default=None,
        help=f"run poller tests only on these drivers ({', '.join(DRIVERS)}, each "
        f"optionally prefixed by {' or '.join(p + ':' for p in PREFIXES)}); "
        f"default: ${ENV_VAR}, else every driver",
    )
    group.addoption(
        _SEED_OPTION,
        metavar="N",
        default=None,
        help=f"seed for the chaos: faults (a whole number), to replay a run; default: "
        f"${_chaos.SEED_ENV}, else drawn at random; each test runs with "
        f"${_chaos.SEED_ENV} derived from it and the test's id",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*names): run this test only on the named pollkit drivers",
    )
    config.addinivalue_line(
        "markers",
        f"{_EXACT_MARKER}(reason=None): skip this test under a chaos: pollkit backend "
        "(it asserts one poll() call's exact result)",
    )
    config.addinivalue_line(
        "markers",
        f"{_MISUSE_MARKER}(reason=None): under a debug: pollkit backend, this test misuses "
        "a poller on purpose: PollkitDebugWarning is ignored and the poller fixtures' "
        "open-registrations check is off",
    )
    option = config.getoption("--pollkit-backend")
    if option:
        # A bad name is a usage error before collection, not one collection
        # error per module (nor silence when no test uses the fixtures).
        _parse_names(option, "--pollkit-backend")
    config.stash[_session_seed_key] = _session_seed(config)
    rates = os.environ.get(_chaos.RATES_ENV, "")
    try:
        _chaos.parse_rates(rates)
    except InvalidArgumentError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        prefixes = frozenset(
            prefix for spec in selected_backends(config) for prefix in parse_backend(spec).prefixes
        )
    except pytest.UsageError:
        prefixes = frozenset()  # a bad $POLLKIT_BACKEND is reported where the fixtures use it
    config.stash[_session_prefixes_key] = prefixes


def _session_seed(config: pytest.Config) -> int:
    """``--pollkit-chaos-seed``, else ``$POLLKIT_CHAOS_SEED``, else a random one."""
    option: str | None = config.getoption(_SEED_OPTION)
    env = os.environ.get(_chaos.SEED_ENV, "").strip()
    try:
        if option is not None:
            return _chaos.parse_seed(option, _SEED_OPTION)
        if env:
            return _chaos.parse_seed(env)
    except InvalidArgumentError as exc:
        raise pytest.UsageError(str(exc)) from None
    return random.SystemRandom().randrange(2**32)


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[_session_seed_key]
    return f"pollkit chaos seed: {seed} (replay with {_SEED_OPTION} {seed})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, None]:
    """Run each test with its own ``POLLKIT_CHAOS_SEED``, derived from the session's seed."""
    seed = _chaos.derive_seed(item.config.stash[_session_seed_key], item.nodeid)
    item.stash[_test_seed_key] = seed
    item.stash[_opened_before_key] = _chaos.opened_total
    previous = os.environ.get(_chaos.SEED_ENV)
    os.environ[_chaos.SEED_ENV] = str(seed)
    _chaos.restart_streams()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_chaos.SEED_ENV, None)
        else:
            os.environ[_chaos.SEED_ENV] = previous


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """Add the chaos seed to the report of a failed test that used (or may have used) chaos."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and not item.stash.get(_seed_reported_key, False):
        used = _chaos.opened_total > item.stash.get(_opened_before_key, _chaos.opened_total)
        if used or "chaos" in item.config.stash.get(_session_prefixes_key, frozenset()):
            item.stash[_seed_reported_key] = True
            seed = item.config.stash[_session_seed_key]
            report.sections.append(
                (
                    "pollkit chaos seed",
                    f"pollkit chaos seed: {seed}; replay with {_SEED_OPTION} {seed} "
                    f"(this test ran with {_chaos.SEED_ENV}={item.stash[_test_seed_key]})",
                )
            )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pollkit_exact`` tests under ``chaos:``; quiet ``@pollkit_misuse`` under ``debug:``.

    A misuse test is quieted, not skipped: the driver's behaviour is still checked.
    """
    for item in items:
        exact = item.get_closest_marker(_EXACT_MARKER)
        if exact is not None and "chaos" in _prefixes_of(item):
            reason = exact.args[0] if exact.args else exact.kwargs.get("reason", _EXACT_REASON)
            item.add_marker(pytest.mark.skip(reason=f"under chaos: {reason}"))
        if item.get_closest_marker(_MISUSE_MARKER) is not None and "debug" in _prefixes_of(item):
            item.add_marker(pytest.mark.filterwarnings("ignore::pollkit.PollkitDebugWarning"))


def _prefixes_of(item: pytest.Item) -> frozenset[str]:
    """The wrapper prefixes of the backend this test runs on (else of the session's)."""
    spec = getattr(item, "callspec", None)
    backend = spec.params.get("poller_backend") if spec is not None else None
    if isinstance(backend, str):
        return frozenset(parse_backend(backend).prefixes)
    return item.config.stash.get(_session_prefixes_key, frozenset())


def _parse_names(value: str, source: str) -> list[str]:
    """Backend specs from a comma-separated list (``epoll,debug:poll``), normalised.

    ``auto`` stands for every driver, each with the prefixes given.
    """
    specs: list[str] = []
    unknown: list[str] = []
    for text in (part.strip() for part in value.split(",")):
        if not text:
            continue
        try:
            spec = parse_backend(text)
        except BackendUnavailableError:
            unknown.append(text)
            continue
        drivers = list(DRIVERS) if spec.driver == "auto" else [spec.driver]
        specs.extend(str(spec._replace(driver=driver)) for driver in drivers)
    if unknown or not specs:
        raise pytest.UsageError(
            f"{source}: unknown pollkit driver(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(DRIVERS)} (or auto), each optionally prefixed by "
            f"{' or '.join(p + ':' for p in PREFIXES)}"
        )
    return list(dict.fromkeys(specs))


def _driver_of(spec: str) -> str:
    return parse_backend(spec).driver


def selected_backends(config: pytest.Config) -> list[str]:
    """The backend specs this run covers, in the drivers' preference order."""
    option = config.getoption("--pollkit-backend")
    if option:
        chosen = _parse_names(option, "--pollkit-backend")
    elif os.environ.get(ENV_VAR, "").strip():
        chosen = _parse_names(os.environ[ENV_VAR], ENV_VAR)
    else:
        chosen = list(DRIVERS)
    order = list(DRIVERS)
    return sorted(chosen, key=lambda spec: order.index(_driver_of(spec)))


_DRIVER_STATUS = pytest.StashKey[dict[str, "str | None"]]()


def _driver_status(config: pytest.Config) -> dict[str, str | None]:
    """Which drivers open here: probed once per session, not once per test function."""
    status = config.stash.get(_DRIVER_STATUS, None)
    if status is None:
        status = config.stash[_DRIVER_STATUS] = backend_status()
    return status


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "poller_backend" not in metafunc.fixturenames:
        return
    names = selected_backends(metafunc.config)
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is not None:
        pinned = _parse_names(",".join(marker.args), f"@{_MARKER} on {metafunc.definition.name}")
        pinned_drivers = {_driver_of(spec) for spec in pinned}
        names = [name for name in names if _driver_of(name) in pinned_drivers]
    status = _driver_status(metafunc.config)
    params = []
    for name in names:
        reason = status[_driver_of(name)]
        marks = [pytest.mark.skip(reason=f"{name} unavailable: {reason}")] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    if not params:
        params.append(
            pytest.param(
                None,
                id="no-driver",
                marks=pytest.mark.skip(reason="no selected pollkit driver applies to this test"),
            )
        )
    metafunc.parametrize("poller_backend", params, scope="function")


@pytest.fixture
def poller_backend(request: pytest.FixtureRequest) -> str:
    """The backend spec this run of the test uses (``"epoll"``, ``"debug:poll"``)."""
    name: str = request.param
    return name


@pytest.fixture
def poller_factory(
    poller_backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Poller]]:
    """Open more pollers of this run's driver; all are closed after the test.

    Under ``debug:``, a poller that still has fds registered when the test
    ends fails the test (at teardown), naming them -- unless the test is
    marked ``@pytest.mark.pollkit_misuse``.
    """
    opened: list[Poller] = []

    def factory() -> Poller:
        poller = open_poller(poller_backend)
        opened.append(poller)
        return poller

    yield factory
    problems: list[str] = []
    check = request.node.get_closest_marker(_MISUSE_MARKER) is None
    for poller in opened:
        if check and not poller.closed:
            left = _open_registrations(poller)
            if left:
                problems.append(f"{poller.name} poller: {left}")
        poller.close()
    if problems:
        pytest.fail(
            "the test left fds registered (unregister each fd before the test ends): "
            + "; ".join(problems),
            pytrace=False,
        )


def _open_registrations(poller: Poller) -> str | None:
    """What a ``debug:`` poller still watches, in words; ``None`` for other pollers.

    Uses ``open_registrations()`` of a debug wrapper anywhere in the chain
    (``chaos:debug:epoll``), else ``len()`` of a poller whose spec has the
    ``debug:`` prefix.
    """
    layer: object = poller
    for _ in range(len(PREFIXES) + 1):
        lister = getattr(layer, "open_registrations", None)
        if callable(lister):
            listed = lister()
            if isinstance(listed, Mapping):
                listed = [f"fd {fd} ({where})" for fd, where in listed.items()]
            shown = [str(entry) for entry in listed]
            return ", ".join(shown) if shown else None
        layer = getattr(layer, "inner", None)
        if layer is None:
            break
    try:
        prefixes = parse_backend(poller.name).prefixes
    except BackendUnavailableError:
        return None
    if "debug" in prefixes and len(poller):
        return f"{len(poller)} fd(s) still registered"
    return None


@pytest.fixture
def poller(poller_factory: Callable[[], Poller]) -> Poller:
    """A fresh poller of this run's driver, closed after the test."""
    return poller_factory()
