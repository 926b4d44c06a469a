"""The node's clock: monotonic, anchored once per process to the wall clock.

The session core takes `now` as an argument and uses it for two things besides its timers:
every frame header carries `now + timestamp_offset` as the sender's wall-clock time (the peer
computes latency from it), and a key epoch's start (`SendKeys.started`) is persisted in
sessions.db and compared with `now` after a restore (rekey after an hour). A raw
`time.monotonic()` restarts at boot and is meaningless in another process, so a session
restored from a previous process or boot would compare unrelated values (a negative key age:
never rekeyed by age). A raw `time.time()` steps when the wall clock is set, and would fire
or starve timers.

So the node gives the core (and uses for its own timers and timestamps) `now()`: the
monotonic clock plus the wall-clock offset taken once at process start. It never steps
within a process, and it is seconds since the epoch, so values persisted by an earlier
process or boot stay comparable (to the accuracy of the wall clock at the two starts).
A timer delay is always the difference of two `now()` values: monotonic.
"""

from __future__ import annotations

import time

_ANCHOR = time.time() - time.monotonic()


def now() -> float:
    """Seconds since the epoch, advancing with the monotonic clock."""
    return time.monotonic() + _ANCHOR
