"""Property tests: any loss/duplication/reordering/corruption schedule, with or without restarts."""

from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pmed.core.persist import SessionSnapshot
from p2pmed.core.session import Session
from tests.core.sessionkit import Sent, all_idle, check_delivery, establish, send_all, workload
from tests.core.simnet import PathCfg, make_pair

path_st = st.builds(
    PathCfg,
    latency=st.floats(0.001, 0.05),
    jitter=st.floats(0.0, 0.05),
    loss=st.floats(0.0, 0.3),
    dup=st.floats(0.0, 0.3),
    corrupt=st.floats(0.0, 0.1),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    direct=path_st,
    relay=path_st,
    n=st.integers(1, 120),
    cut_direct_at=st.one_of(st.none(), st.floats(0.0, 0.2)),
)
def test_exactly_once_under_any_schedule(
    seed: int, direct: PathCfg, relay: PathCfg, n: int, cut_direct_at: float | None
) -> None:
    net, a, b = make_pair(seed, paths={"direct": direct, "relay": relay})
    establish(net, max_time=120)
    sent_a: Sent = {}
    sent_b: Sent = {}
    send_all(net, "a", workload(seed, n), sent_a)
    send_all(net, "b", workload(seed + 1, n // 3), sent_b)
    if cut_direct_at is not None:
        net.run_for(cut_direct_at)
        net.paths["direct"].up = False
    net.run(lambda: all_idle(a, b), max_time=600)
    check_delivery(sent_a, net.ends["b"].events, net.ends["a"].events)
    check_delivery(sent_b, net.ends["a"].events, net.ends["b"].events)
    for s in (a, b):
        assert s.stats.get("rejected_frame_internal", 0) == 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    path=path_st,
    crashes=st.lists(st.tuples(st.sampled_from("ab"), st.floats(0.0, 0.05)), max_size=4),
)
def test_exactly_once_across_restarts(
    seed: int, path: PathCfg, crashes: list[tuple[str, float]]
) -> None:
    stores = {"a": SessionSnapshot(), "b": SessionSnapshot()}
    net, a, b = make_pair(
        seed, paths={"direct": path}, stores=(stores["a"], stores["b"]), persist=True
    )
    establish(net, max_time=120)
    sent: Sent = {}
    msgs = workload(seed, 60)
    for i, (victim, after) in enumerate([*crashes, ("", 0.0)]):
        send_all(net, "a", msgs[i * 12 : (i + 1) * 12], sent)
        net.run_for(after)
        if victim:
            ep = net.ends[victim]
            new = Session(ep.session.config, now=net.now, restored=copy.deepcopy(stores[victim]))
            ep.session = new
            new.add_path("direct", net.now)
            net.flush(victim)
    send_all(net, "a", msgs[len(crashes) * 12 + 12 :], sent)
    a, b = net.ends["a"].session, net.ends["b"].session
    net.run(lambda: all_idle(a, b), max_time=600)
    check_delivery(sent, net.ends["b"].events, net.ends["a"].events)
