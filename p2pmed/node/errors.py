"""Why a node cannot start or run, and the exit codes `p2pmed node` gives for it."""

from __future__ import annotations

# `p2pmed node` exit codes a service manager can act on (deploy/systemd/p2pmed-node.service
# does not restart on 2, 3 or 4: a retry cannot cure them)
EXIT_FAILED = 1  # transient: the server could not be reached, ...
EXIT_TLS = 3  # the server's TLS certificate is not trusted
EXIT_REFUSED = 4  # the server refused the join token for good
EXIT_REVOKED = 5  # the token was revoked during the consultation

__all__ = ["EXIT_FAILED", "EXIT_REFUSED", "EXIT_REVOKED", "EXIT_TLS", "JoinTimeout", "NodeError"]


class NodeError(RuntimeError):
    """The node cannot start or run; the message says why."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class JoinTimeout(NodeError):
    """Not joined within the join timeout: the server unreachable, too slow, or refusing the
    join for a limit or capacity of the moment (`busy`, the last such refusal), for now."""

    @classmethod
    def after(cls, server: str, seconds: float, busy: str | None) -> JoinTimeout:
        why = (
            f"the signaling server at {server} refused the join for now ({busy})"
            if busy
            else f"cannot reach the signaling server at {server}"
        )
        return cls(f"{why} (not joined within {seconds:g} s)")
