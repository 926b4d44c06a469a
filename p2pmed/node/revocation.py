"""Revocation on the node: a revoked peer's session ends on every path; a revoked node exits.

The server closes a revoked endpoint's WebSocket, but a direct WebRTC path between peers
never passes the server. So (docs/protocol.md 8.3.6):
- every remaining peer gets `peer-revoked`: it closes the E2E session with that endpoint
  (CLOSE on every path), tears the peer connection down, forgets the link, answers
  `revocation-done`, and takes nothing more from that endpoint until the server announces
  it as a new join (`peer-joined`: it joined again with a valid token);
- the revoked node itself (error `token-revoked`, close 4410, or a rejoin refused for it)
  tells its user, closes its sessions and exits with EXIT_REVOKED instead of retrying.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING

from p2pmed.node import clock
from p2pmed.node import events as ne
from p2pmed.node.errors import EXIT_REVOKED

if TYPE_CHECKING:
    from p2pmed.node.app import NodeHandle
    from p2pmed.node.peer import PeerLink

CLOSE_WAIT = 1.0  # seconds to let the CLOSE exchange finish before the paths are torn down


class Revoked(SystemExit):
    """Raised by Node.run() after a revocation, so `p2pmed node` exits with EXIT_REVOKED."""

    def __init__(self) -> None:
        super().__init__(EXIT_REVOKED)


def self_revoked(node: NodeHandle, message: str) -> None:
    if node.ctx.exit_code == EXIT_REVOKED:
        return
    node.ctx.exit_code = EXIT_REVOKED
    text = (
        "access revoked by the signaling server: this consultation has ended "
        f"(exit code {EXIT_REVOKED}); ask for a new join URL to continue"
    )
    node.events.publish(ne.Revoked(text, message[:300], EXIT_REVOKED))
    if not node.config.json_out:
        print(f"p2pmed node: {text}", file=sys.stderr, flush=True)
    node.stop()  # Node.close() sends CLOSE on every path of every session


def peer_revoked(node: NodeHandle, peer_id: str) -> None:
    node.revoked_peers.add(peer_id)
    link = node.peers.pop(peer_id, None)  # from now on nothing is queued for it
    node.events.publish(ne.PeerState(peer_id, state="revoked"))
    node.spawn(_end(node, peer_id, link))


async def _end(node: NodeHandle, peer_id: str, link: PeerLink | None) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    if link is not None and not link.closed:
        with contextlib.suppress(Exception):
            link.session.close(clock.now(), 0, "revoked")
            _persist(link)
            link.kick()
        while (
            not link.closed
            and link.session.state.name != "CLOSED"
            and loop.time() - t0 < CLOSE_WAIT
        ):
            await asyncio.sleep(0.02)
        _persist(link)
        await link.close()  # the direct and any pending peer connection
    node.events.publish(ne.RevocationDone(peer_id, round((loop.time() - t0) * 1000, 1)))
    if not node.signaling.send_json({"type": "revocation-done", "endpoint_id": peer_id}):
        node.events.publish(
            ne.NodeErrorEvent(
                "revocation-done",
                f"signaling down: could not confirm that {peer_id}'s paths are closed",
            )
        )


def _persist(link: PeerLink) -> None:
    """The link is no longer in node.peers, so node.persist() skips it: its driver commits
    its session itself (the store records it as closed: a restart must not resume it)."""
    with contextlib.suppress(Exception):
        link.driver.commit()
