"""Sphinx directives that write pollkit's reference pages from the code itself.

Nothing here is typed by hand, so the pages cannot drift from the library:

* ``pollkit-api``: autodoc for every name in each module's ``__all__``, and a
  build warning (an error under ``-W``) for a public name without a docstring
  or ``#:`` comment;
* ``pollkit-driver-table``: what each driver class declares (``features``)
  and what it does with an fd past ``FD_SETSIZE`` or a regular file, tried at
  build time;
* ``pollkit-events-table``: which ``Events`` bits each driver really reports,
  found by provoking each condition on loopback sockets and pipes;
* ``pollkit-cli``: the ``--help`` of every command in
  ``pollkit.cli.build_parser()``, subcommands included;
* ``pollkit-command-output``: the output of one ``pollkit`` command.

The directives emit reStructuredText, so in a MyST page they go inside an
``{eval-rst}`` block.  A ``missing-reference`` handler turns references to
private modules (``pollkit._base.Poller``) into links to the public name, and
leaves stdlib and third-party names as plain text: these docs build offline,
without intersphinx.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import inspect
import io
import os
import re
import socket
import sys
import tempfile
import typing
from collections.abc import Callable, Iterator
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext.napoleon import Config as NapoleonConfig
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

import pollkit
import pollkit.cli
import pollkit.server
from pollkit import Events, Poller

logger = logging.getLogger(__name__)

_MISSING = object()

#: Third-party packages whose own docs we do not link (no intersphinx offline).
_UNLINKED_PACKAGES = frozenset({"pytest", "_pytest", "typing_extensions", "sphinx", "docutils"})
#: Annotations imported from typing_extensions under TYPE_CHECKING, so unqualified.
_UNLINKED_NAMES = frozenset({"Buffer", "Self"})
#: The packages whose ``__all__`` the API page documents classes from.
_PUBLIC_PACKAGES = (pollkit, pollkit.server)


def _is_private_server_base(cls: type) -> bool:
    return (
        cls.__module__.startswith("pollkit.server.") and cls.__name__ not in pollkit.server.__all__
    )


def _is_private_wrapper_base(cls: type) -> bool:
    return cls.__module__ == "pollkit._wrap"


_STDLIB = frozenset(getattr(sys, "stdlib_module_names", ())) | {
    "collections",
    "selectors",
    "asyncio",
    "socket",
    "types",
    "typing",
}


class _RstDirective(SphinxDirective):
    """A directive whose output is reStructuredText generated at build time."""

    def generate(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        container = nodes.Element()
        source = self.get_source_info()[0] or self.env.docname
        nested_parse_with_titles(self.state, StringList(self.generate(), source), container)
        return list(container.children)


# -- the API reference -----------------------------------------------------------------


def _is_fixture(obj: object) -> bool:
    """A pytest fixture: ``FixtureFunctionDefinition`` (pytest 8.4+) or a marked function."""
    return type(obj).__name__ == "FixtureFunctionDefinition" or hasattr(
        obj, "_pytestfixturefunction"
    )


def _attribute_doc(name: str, value: object) -> list[str]:
    """The ``#:`` comment documenting ``name``, in whichever pollkit module defines it."""
    for module_name, module in sorted(sys.modules.items()):
        if not (module_name == "pollkit" or module_name.startswith("pollkit.")):
            continue
        if getattr(module, name, _MISSING) is not value:
            continue
        try:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except Exception:  # noqa: BLE001  # a module without source: look further
            continue
        lines = docs.get(("", name))
        if lines:
            return list(lines)
    return []


class ApiDirective(_RstDirective):
    """``.. pollkit-api:: module [module ...]``: document each module's ``__all__``."""

    required_arguments = 1
    optional_arguments = 20

    def generate(self) -> list[str]:
        documented: dict[int, str] = {}
        lines: list[str] = []
        for module_name in self.arguments:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise self.error(f"cannot import {module_name}: {exc}") from exc
            lines += self._module(module, documented)
        return lines

    def _module(self, module: Any, documented: dict[int, str]) -> list[str]:
        title = f"``{module.__name__}``"
        lines = [title, "-" * len(title), "", f".. automodule:: {module.__name__}", ""]
        public = getattr(module, "__all__", None)
        if public is None:
            self._warn(f"{module.__name__} has no __all__: its public names are unknown")
            return lines
        seen_elsewhere = []
        for name in public:
            qualname = f"{module.__name__}.{name}"
            obj = getattr(module, name, _MISSING)
            if obj is _MISSING:
                self._warn(f"{qualname} is listed in __all__ but does not exist")
                continue
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and id(obj) in documented:
                seen_elsewhere.append(f"* ``{qualname}`` is :py:obj:`{documented[id(obj)]}`")
                continue
            lines += self._entry(qualname, name, obj)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                documented[id(obj)] = qualname
        if seen_elsewhere:
            lines += ["Also importable from here, documented above:", "", *seen_elsewhere, ""]
        return lines

    def _entry(self, qualname: str, name: str, obj: object) -> list[str]:
        if _is_fixture(obj):
            function = inspect.unwrap(getattr(obj, "__wrapped__", obj))  # type: ignore[arg-type]  # a fixture object wraps a function
            params = ", ".join(inspect.signature(function).parameters)
            fixture_doc = inspect.getdoc(obj) or inspect.getdoc(function) or ""
            if not fixture_doc:
                self._warn(f"fixture {qualname} has no docstring")
            return [
                f".. py:function:: {qualname}({params})",
                "",
                "   *A pytest fixture*" + (f"; depends on ``{params}``." if params else "."),
                "",
                *_indent(fixture_doc.splitlines()),
                "",
            ]
        if inspect.isclass(obj):
            if not inspect.getdoc(obj):
                self._warn(f"class {qualname} has no docstring")
            options = ["   :members:", "   :show-inheritance:"]
            # Server's methods live in a private base: show them on Server.
            if any(_is_private_server_base(base) for base in obj.__mro__[1:]):
                options.append("   :inherited-members:")
            elif any(_is_private_wrapper_base(base) for base in obj.__mro__[1:]):
                # What a wrapper forwards lives in its private base: show it on
                # the wrapper, but not Poller's own members again.
                options += ["   :inherited-members: Poller", "   :exclude-members: name, features"]
            return [f".. autoclass:: {qualname}", *options, ""]
        if inspect.isroutine(obj):
            if not inspect.getdoc(obj):
                self._warn(f"function {qualname} has no docstring")
            return [f".. autofunction:: {qualname}", ""]
        doc = _attribute_doc(name, obj)
        if not doc:
            self._warn(f"{qualname} has no '#:' comment where it is defined")
        if typing.get_origin(obj) is not None:  # a type alias such as Union[int, HasFileno]
            return [f".. py:type:: {qualname}", "", *_indent(doc), ""]
        return [f".. py:data:: {qualname}", f"   :value: {obj!r}", "", *_indent(doc), ""]

    def _warn(self, message: str) -> None:
        logger.warning("pollkit-api: %s", message, location=self.get_location())


def _indent(lines: list[str]) -> list[str]:
    return [f"   {line}" if line else "" for line in lines]


# -- the driver tables ---------------------------------------------------------------------------


def _driver_classes() -> list[type[Poller]]:
    """Every driver class, in preference order (``open_poller("auto")``'s)."""
    from pollkit._backends import DRIVERS

    return list(DRIVERS.values())


def _list_table(header: list[str], rows: list[list[str]], widths: str = "auto") -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines += [f"     - {cell}" for cell in row[1:]]
    return [*lines, ""]


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


@contextlib.contextmanager
def _high_fd() -> Iterator[int | None]:
    """An open fd numbered at least ``FD_SETSIZE``, or ``None`` if the fd limit forbids it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as low:
        try:
            fd = fcntl.fcntl(low.fileno(), fcntl.F_DUPFD_CLOEXEC, pollkit.FD_SETSIZE)
        except OSError:
            yield None
            return
        try:
            yield fd
        finally:
            os.close(fd)


def _try_register(backend: str, fd: int) -> str:
    try:
        with pollkit.open_poller(backend) as poller:
            poller.register(fd, Events.READ)
    except Exception as exc:  # noqa: BLE001  # the refusal is what the table reports
        return f"refused (``{type(exc).__name__}``)"
    return "accepted"


class DriverTableDirective(_RstDirective):
    """``.. pollkit-driver-table::``: features and limits, one column per driver."""

    def generate(self) -> list[str]:
        drivers = _driver_classes()
        status = pollkit._backends.backend_status()
        features = sorted(set().union(*(cls.features for cls in drivers)))
        rows = [
            [
                "available here",
                *(
                    "yes" if status[cls.name] is None else f"no: {status[cls.name]}"
                    for cls in drivers
                ),
            ],
            ["class", *(f":class:`~pollkit.{cls.__name__}`" for cls in drivers)],
        ]
        rows += [
            [f"``{feature}``", *(_yes_no(feature in cls.features) for cls in drivers)]
            for feature in features
        ]
        usable = [cls.name for cls in drivers if status[cls.name] is None]
        with _high_fd() as high:
            rows.append(
                [
                    f"fd >= ``FD_SETSIZE`` ({pollkit.FD_SETSIZE})",
                    *(
                        "not tried (driver unavailable)"
                        if cls.name not in usable
                        else "not tried (fd limit too low)"
                        if high is None
                        else _try_register(cls.name, high)
                        for cls in drivers
                    ),
                ]
            )
        with tempfile.TemporaryFile() as regular:
            rows.append(
                [
                    "a regular file",
                    *(
                        _try_register(cls.name, regular.fileno())
                        if cls.name in usable
                        else "not tried (driver unavailable)"
                        for cls in drivers
                    ),
                ]
            )
        return _list_table(["", *(f"**{cls.name}**" for cls in drivers)], rows)


def _reported(backend: str, fd: int, events: int) -> int | None:
    """The mask one ``poll()`` reports for ``fd``: 0 if none, ``None`` if refused."""
    with pollkit.open_poller(backend) as poller:
        try:
            poller.register(fd, events)
        except pollkit.UnsupportedFeatureError:
            return None
        return dict(poller.poll(1.0)).get(fd, 0)


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return client, server


def _probe_read(backend: str, events: int) -> int | None:
    left, right = socket.socketpair()
    with left, right:
        right.send(b"x")
        return _reported(backend, left.fileno(), events)


def _probe_write(backend: str, events: int) -> int | None:
    left, right = socket.socketpair()
    with left, right:
        return _reported(backend, left.fileno(), events)


def _probe_priority(backend: str, events: int) -> int | None:
    client, server = _tcp_pair()
    with client, server:
        client.send(b"!", socket.MSG_OOB)
        return _reported(backend, server.fileno(), events)


def _probe_error(backend: str, events: int) -> int | None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return _reported(backend, write_end, events)
    finally:
        os.close(write_end)


def _probe_hangup(backend: str, events: int) -> int | None:
    left, right = socket.socketpair()
    with left:
        right.close()
        return _reported(backend, left.fileno(), events)


def _probe_invalid(backend: str, events: int) -> int | None:
    left, right = socket.socketpair()
    with left, right, pollkit.open_poller(backend) as poller:
        fd = left.fileno()
        poller.register(fd, events)
        left.close()
        mask = dict(poller.poll(0)).get(fd, 0)
        poller.unregister(fd)  # quiet for a closed fd on every driver
        return mask


def _probe_read_hangup(backend: str, events: int) -> int | None:
    left, right = socket.socketpair()
    with left, right:
        right.shutdown(socket.SHUT_WR)
        return _reported(backend, left.fileno(), events)


#: Each event bit: how it is provoked, what is registered, and the probe that does it.
_EVENT_PROBES: list[tuple[Events, str, Events, Callable[[str, int], int | None]]] = [
    (Events.READ, "the peer sent data", Events.READ, _probe_read),
    (Events.WRITE, "an empty send buffer", Events.WRITE, _probe_write),
    (
        Events.PRIORITY,
        "TCP urgent data (``MSG_OOB``)",
        Events.READ | Events.PRIORITY,
        _probe_priority,
    ),
    (Events.ERROR, "a pipe whose read end is closed", Events.WRITE, _probe_error),
    (Events.HANGUP, "the peer closed the socket", Events.READ, _probe_hangup),
    (Events.INVALID, "the fd was closed while registered", Events.READ, _probe_invalid),
    (
        Events.READ_HANGUP,
        "the peer shut down its writing half",
        Events.READ | Events.READ_HANGUP,
        _probe_read_hangup,
    ),
]


def _flag_names(events: int) -> str:
    return " | ".join(f"``{flag.name}``" for flag in Events if flag & events)


class EventsTableDirective(_RstDirective):
    """``.. pollkit-events-table::``: which bits each driver reports, found by trying."""

    def generate(self) -> list[str]:
        drivers = _driver_classes()
        usable = set(pollkit.available_backends())
        rows = []
        for event, condition, registered, probe in _EVENT_PROBES:
            cells = []
            for cls in drivers:
                if cls.name not in usable:
                    cells.append("not tried (driver unavailable)")
                    continue
                mask = probe(cls.name, registered)
                if mask is None:
                    cells.append("refused (``UnsupportedFeatureError``)")
                elif mask & event:
                    cells.append("yes")
                elif mask:
                    cells.append(f"no: reports {_flag_names(mask)}")
                else:
                    cells.append("no: reports nothing")
            rows.append([f"``{event.name}``", condition, _flag_names(registered), *cells])
        return _list_table(
            ["event", "provoked by", "registered for", *(f"**{cls.name}**" for cls in drivers)],
            rows,
        )


# -- the command line ------------------------------------------------------------------------------


@contextlib.contextmanager
def _help_width(columns: int) -> Iterator[None]:
    """argparse wraps help to ``$COLUMNS``: fix it so the page does not depend on a terminal."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def _commands(
    parser: argparse.ArgumentParser, depth: int = 0, summary: str = ""
) -> Iterator[tuple[int, argparse.ArgumentParser, str]]:
    """``(depth, parser, one-line help)`` for the parser and every subcommand below it."""
    yield depth, parser, summary
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        seen: set[int] = set()
        for name, subparser in action.choices.items():
            if id(subparser) not in seen:  # aliases map to the same parser
                seen.add(id(subparser))
                yield from _commands(subparser, depth + 1, helps.get(name, ""))


_OPTION = re.compile(r"(?<![\w`])--?[A-Za-z][\w-]*")


class CliDirective(_RstDirective):
    """``.. pollkit-cli::``: a section per command with its ``--help``."""

    def generate(self) -> list[str]:
        underline = "-~^"
        lines: list[str] = []
        with _help_width(88):
            for depth, parser, summary in _commands(pollkit.cli.build_parser()):
                title = f"``{parser.prog}``"
                lines += [title, underline[min(depth, 2)] * len(title), ""]
                if summary:
                    # Options as literals: docutils would turn "--file" into an en dash.
                    summary = _OPTION.sub(r"``\g<0>``", summary[:1].upper() + summary[1:])
                    lines += [f"{summary}.", ""]
                lines += [".. code-block:: text", ""]
                lines += _indent(parser.format_help().rstrip().splitlines())
                lines.append("")
        return lines


class CommandOutputDirective(_RstDirective):
    """``.. pollkit-command-output:: info``: what ``pollkit info`` prints on the build machine."""

    required_arguments = 1
    optional_arguments = 10

    def generate(self) -> list[str]:
        output = io.StringIO()
        with contextlib.redirect_stdout(output):
            status = pollkit.cli.main(self.arguments)
        if status != 0:
            raise self.error(f"pollkit {' '.join(self.arguments)} exited with {status}")
        command = " ".join(["pollkit", *self.arguments])
        return [
            ".. code-block:: console",
            "",
            f"   $ {command}",
            *_indent(output.getvalue().rstrip().splitlines()),
            "",
        ]


# -- references -----------------------------------------------------------------------------


def _resolve_reference(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.TextElement
) -> nodes.Element | None:
    """Link ``pollkit._private.Name`` to ``pollkit.Name``; leave stdlib names as text."""
    if node.get("refdomain") != "py":
        return None
    target: str = node["reftarget"]
    top = target.split(".", 1)[0]
    python = env.get_domain("py")
    known: dict[str, Any] = python.objects  # type: ignore[attr-defined]  # PythonDomain's registry
    candidates: list[str] = []
    if top == "pollkit":
        last = target.rsplit(".", 1)[-1]
        if last.startswith("_"):
            return contnode  # a private name (a TypeVar, say): nothing to link to
        candidates += [f"pollkit.{last}", f"pollkit.compat.{last}"]
    elif "." not in target and node.get("py:class"):
        # A method inherited from a documented base: `wakeup` in EpollPoller's
        # copy of Poller.poll's docstring is pollkit.Poller.wakeup.
        for package in _PUBLIC_PACKAGES:
            context = getattr(package, node["py:class"], None)
            for base in inspect.getmro(context) if inspect.isclass(context) else ():
                candidates.append(f"{package.__name__}.{base.__name__}.{target}")
                candidates.append(f"{package.__name__}.{node['py:class']}.{target}")
    for candidate in candidates:
        if candidate in known and candidate != target:
            return python.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], candidate, node, contnode
            )
    if top == "pollkit" and any(part.startswith("_") for part in target.split(".")):
        return contnode  # a base in a private module (DriverBase, LoopBase): not documented
    if top == "pollkit":
        return None
    if top in _STDLIB or top in _UNLINKED_PACKAGES or target in _UNLINKED_NAMES:
        return contnode
    return None


def _google_sections(
    app: Sphinx, what: str, name: str, obj: object, options: Any, lines: list[str]
) -> None:
    """Turn the "Raises:" sections of functions and classes into reST (napoleon).

    Only for those: napoleon would read an attribute's ``#:`` comment such as
    "Output only: the peer hung up" as "type: description".
    """
    if what in ("attribute", "data", "property", "module"):
        return
    # napoleon's own Config stands in for Sphinx's (its options are not
    # registered, since the extension itself is not loaded); `what` is one of
    # autodoc's object types, which typeshed spells as a Literal.
    config: Any = _NAPOLEON_CONFIG
    kind: Any = what
    parsed = GoogleDocstring(lines, config, app, kind, name, obj, options).lines()
    lines[:] = parsed


_NAPOLEON_CONFIG = NapoleonConfig(napoleon_use_rtype=False)

_ALIAS_REPR = re.compile(r"TypeAliasForwardRef\('([\w.]+)'\)")


def _alias_names(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: Any,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show ``FileDescriptorLike`` where autodoc prints an alias nested in a generic.

    Sphinx renders ``Mapping[FileDescriptorLike, ...]`` with the alias's repr,
    ``TypeAliasForwardRef('pollkit.FileDescriptorLike')``.
    """
    fixed = [
        None if text is None else _ALIAS_REPR.sub(r"\1", text)
        for text in (signature, return_annotation)
    ]
    return fixed[0], fixed[1]


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.connect("autodoc-process-docstring", _google_sections)
    app.connect("autodoc-process-signature", _alias_names)
    app.add_directive("pollkit-api", ApiDirective)
    app.add_directive("pollkit-driver-table", DriverTableDirective)
    app.add_directive("pollkit-events-table", EventsTableDirective)
    app.add_directive("pollkit-cli", CliDirective)
    app.add_directive("pollkit-command-output", CommandOutputDirective)
    app.connect("missing-reference", _resolve_reference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
