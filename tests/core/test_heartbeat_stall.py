"""A path dies only once its dead timer really expired while the endpoint was running: a timer
that fires late because the endpoint itself did not run (loaded event loop) is not silence on
the path (issue #11.5: all-paths-down three times in 75 s on a loaded loopback, nothing lost)."""

from __future__ import annotations

from p2pmed.core.events import PathDown
from tests.core.sessionkit import establish, of
from tests.core.simnet import PathCfg, make_pair


def test_late_timer_is_not_path_silence() -> None:
    net, a, _b = make_pair(5, paths={"direct": PathCfg(0.005), "relay": PathCfg(0.02)})
    establish(net)
    net.run_for(1.0)
    events = net.ends["a"].events
    before = len(events)
    # a did not run for 3 s: its timer callback runs first, the PONGs still wait unread
    late = net.now + 3.0
    net.call("a", lambda s: s.handle_timer(late))
    assert not of(events[before:], PathDown)
    assert a.stats["stalls"] == 1
    net.now = late
    net.run_for(1.0)
    assert not of(events[before:], PathDown)
    assert all(a.path_status(p).alive for p in ("direct", "relay"))


def test_really_silent_paths_still_die_on_time() -> None:
    net, a, _b = make_pair(6, paths={"direct": PathCfg(0.005), "relay": PathCfg(0.02)})
    establish(net)
    net.run_for(1.0)
    events = net.ends["a"].events
    before = len(events)
    for cfg in net.paths.values():
        cfg.up = False
    t0 = net.now
    net.run(lambda: len(of(events[before:], PathDown)) == 2, max_time=5)
    assert net.now - t0 <= a.config.path_dead_after + a.config.heartbeat_interval + 0.05
    assert a.stats.get("stalls", 0) == 0
