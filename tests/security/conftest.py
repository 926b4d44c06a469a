"""Fixtures of tests/node (a real signaling server on loopback) and tests/signaling (a server
with a client harness) for the security tests."""

from tests.node.conftest import server
from tests.signaling.conftest import h, http, srv

__all__ = ["h", "http", "server", "srv"]
