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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from ._backends import DRIVERS, ENV_VAR, PREFIXES, backend_status, open_poller, parse_backend
from ._base import Poller
from .errors import BackendUnavailableError

__all__ = ["poller", "poller_backend", "poller_factory"]

_MARKER = "pollkit_backends"


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(*names): run this test only on the named pollkit drivers",
    )
    option = config.getoption("--pollkit-backend")
    if option:
        # A bad name is a usage error before collection, not one collection
        # error per module (nor silence when no test uses the fixtures).
        _parse_names(option, "--pollkit-backend")


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "poller_backend" not in metafunc.fixturenames:
        return
    names = selected_backends(metafunc.config)
    marker = metafunc.definition.get_closest_marker(_MARKER)
    if marker is not None:
        pinned = _parse_names(",".join(marker.args), f"@{_MARKER} on {metafunc.definition.name}")
        pinned_drivers = {_driver_of(spec) for spec in pinned}
        names = [name for name in names if _driver_of(name) in pinned_drivers]
    status = backend_status()
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
def poller_factory(poller_backend: str) -> Iterator[Callable[[], Poller]]:
    """Open more pollers of this run's driver; all are closed after the test."""
    opened: list[Poller] = []

    def factory() -> Poller:
        poller = open_poller(poller_backend)
        opened.append(poller)
        return poller

    yield factory
    for poller in opened:
        poller.close()


@pytest.fixture
def poller(poller_factory: Callable[[], Poller]) -> Poller:
    """A fresh poller of this run's driver, closed after the test."""
    return poller_factory()
