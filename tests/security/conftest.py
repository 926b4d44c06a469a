"""Fixtures of tests/node (a real signaling server on loopback) for the security tests."""

from tests.node.conftest import server

__all__ = ["server"]
