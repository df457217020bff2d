"""The code in the documentation runs, on every driver, and prints what the pages say.

The pages include these files with ``literalinclude``, so a change that
breaks an example breaks this test before it misleads a reader.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXAMPLES = DOCS / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _console_output(page: str, command: str) -> list[str]:
    """The lines a page's console block shows after ``$ command``."""
    text = (DOCS / page).read_text()
    block = re.search(rf"```console\n\$ {re.escape(command)}\n(.*?)```", text, re.DOTALL)
    assert block is not None, f"{page} has no console block for {command!r}"
    return block.group(1).splitlines()


def test_tutorial_echoes_every_byte(
    poller_backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tutorial = _load("tutorial")
    echoes = tutorial.main(["--backend", poller_backend])
    assert echoes == [b"hello\n", b"readiness\n", b"x" * 50_000 + b"\n"]
    shown = _console_output("tutorial.md", "python3 docs/examples/tutorial.py --backend select")
    assert capsys.readouterr().out.splitlines() == shown


def test_tutorial_runs_as_a_script(poller_backend: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "tutorial.py"), "--backend", poller_backend],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.splitlines()[0] == "echoed 6 bytes: b'hello\\n'"


def test_tutorial_serve_takes_several_clients(poller_backend: str) -> None:
    tutorial = _load("tutorial")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(
            target=tutorial.serve, args=(listener, poller_backend), kwargs={"clients": 3}
        )
        server.start()
        try:
            clients = [
                socket.create_connection(listener.getsockname(), timeout=10) for _ in range(3)
            ]
            for index, client in enumerate(clients):
                with client:
                    message = f"client {index}\n".encode()
                    client.sendall(message)
                    assert tutorial.receive_exactly(client, len(message)) == message
        finally:
            server.join(10)
        assert not server.is_alive()


def test_asyncio_example(poller_backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    example = _load("asyncio_echo")
    assert example.main(["--backend", poller_backend]) == b"hello, asyncio\n"
    assert capsys.readouterr().out == f"{poller_backend}: b'hello, asyncio\\n'\n"


def test_pytest_example_runs_once_per_driver_as_the_page_shows(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLLKIT_BACKEND", raising=False)
    pytester.makepyfile(test_with_pollkit=(EXAMPLES / "test_with_pollkit.py").read_text())
    # Plugins this run does not need (see test_pytest_plugin.py for why).
    result = pytester.runpytest("-p", "no:hypothesispytest", "-p", "no:benchmark", "-v")
    result.assert_outcomes(passed=7)
    shown = _console_output("pytest.md", "pytest -v test_with_pollkit.py")
    result.stdout.fnmatch_lines([_fnmatch_escape(line) + "*" for line in shown])


def _fnmatch_escape(text: str) -> str:
    return re.sub(r"[][*?]", lambda match: f"[{match.group()}]", text)


@pytest.mark.timeout(30)
def test_examples_use_only_public_names() -> None:
    """What a reader copies from an example must not break at pollkit's next release:
    every name it imports from pollkit is in its module's ``__all__``."""
    import ast
    import importlib

    sources = sorted(EXAMPLES.glob("*.py")) + sorted((DOCS.parent / "examples").glob("*.py"))
    assert sources, "no examples found"
    private: list[str] = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                private += [
                    f"{path.name}: import {alias.name}"
                    for alias in node.names
                    if alias.name.split(".")[0] == "pollkit" and "._" in alias.name
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pollkit"):
                module = importlib.import_module(node.module or "")
                hidden = any(part.startswith("_") for part in module.__name__.split("."))
                public = set() if hidden else set(getattr(module, "__all__", ()))
                private += [
                    f"{path.name}: from {node.module} import {alias.name}"
                    for alias in node.names
                    if alias.name not in public
                ]
    assert not private, private
