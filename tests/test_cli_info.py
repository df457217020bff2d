"""``pollkit info`` (and ``--json``), run as a user would: ``python3 -m pollkit``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pollkit import FD_SETSIZE
from pollkit.cli import info_report

DRIVERS = ["epoll", "poll", "select"]


def run_pollkit(*args: str, backend: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "POLLKIT_BACKEND"}
    if backend is not None:
        env["POLLKIT_BACKEND"] = backend
    return subprocess.run(
        [sys.executable, "-m", "pollkit", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_info_lists_every_driver_as_available() -> None:
    result = run_pollkit("info")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    for name in DRIVERS:
        matching = [line for line in lines if line.split()[:1] == [name]]
        assert len(matching) == 1, result.stdout
        assert "available" in matching[0]
        assert "unavailable" not in matching[0]
    assert "default" in result.stdout
    assert str(FD_SETSIZE) in result.stdout
    assert "RLIMIT_NOFILE" in result.stdout


def test_info_shows_each_drivers_features() -> None:
    result = run_pollkit("info")
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "edge" in lines["epoll"]
    assert "exclusive" in lines["epoll"]
    assert "oneshot" in lines["poll"]
    assert "edge" not in lines["poll"]
    assert "edge" not in lines["select"]


def test_info_json() -> None:
    result = run_pollkit("info", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    drivers = {driver["name"]: driver for driver in report["drivers"]}
    assert list(drivers) == DRIVERS  # preference order
    for driver in drivers.values():
        assert driver["available"] is True
        assert "oneshot" in driver["features"]
    assert {"edge", "exclusive"} <= set(drivers["epoll"]["features"])
    assert not {"edge", "exclusive"} & set(drivers["select"]["features"])
    assert report["default"] == "epoll"
    assert report["fd_setsize"] == FD_SETSIZE
    assert report["rlimit_nofile"]["soft"] >= 1


@pytest.mark.parametrize("backend", DRIVERS)
def test_info_default_follows_the_environment(backend: str) -> None:
    result = run_pollkit("info", "--json", backend=backend)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["default"] == backend


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="no-command"),
        pytest.param(["nosuchcommand"], id="unknown-command"),
        pytest.param(["info", "--bogus"], id="unknown-option"),
        pytest.param(["info", "extra"], id="extra-argument"),
    ],
)
def test_bad_command_line_is_one_line_on_stderr(args: list[str]) -> None:
    result = run_pollkit(*args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_info_report_says_why_a_driver_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_epoll() -> None:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr("select.epoll", no_epoll)
    monkeypatch.delenv("POLLKIT_BACKEND", raising=False)
    report = info_report()
    drivers = report["drivers"]
    assert isinstance(drivers, list)
    epoll = next(driver for driver in drivers if driver["name"] == "epoll")
    assert epoll["available"] is False
    assert "Function not implemented" in epoll["reason"]
    assert report["default"] == "poll"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["info", "echo", "client", "bench"])
def test_every_command_runs_without_docstrings(command: str) -> None:
    """``python -OO`` strips docstrings: no command may build its help from one."""
    result = subprocess.run(
        [sys.executable, "-OO", "-m", "pollkit", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert f"pollkit {command}" in result.stdout
