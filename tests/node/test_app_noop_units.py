"""One set of no-op App hooks: the node's app before start() and the base of the role apps."""

from __future__ import annotations

import asyncio
import inspect

from p2pmed.node.app import App, NoOpApp
from p2pmed.node.clinician import ClinicianApp


def hooks() -> list[str]:
    return [n for n, _ in inspect.getmembers(App, inspect.isfunction) if not n.startswith("_")]


def test_noop_app_has_every_hook_and_does_nothing() -> None:
    app: App = NoOpApp()
    assert hooks() and all(callable(getattr(app, name)) for name in hooks())
    app.on_joined()
    app.on_signaling(True)
    app.command({"cmd": "ack"})
    asyncio.run(app.run())
    asyncio.run(app.close())


def test_the_clinician_keeps_only_the_hooks_it_needs() -> None:
    own = {name for name in hooks() if name in vars(ClinicianApp)}
    inherited = set(hooks()) - own
    assert {"on_established", "on_acked", "on_closed"} <= inherited
    for name in own:  # what it defines does something
        lines = inspect.getsource(getattr(ClinicianApp, name)).strip().splitlines()
        assert lines[-1].strip() != "return None" or len(lines) > 2, name
