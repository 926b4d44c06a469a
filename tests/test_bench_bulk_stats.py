"""bench/bulk_stats.py and node_bench's bulk figures: pair ratios, spread, process CPU."""

from __future__ import annotations

import os
import time

import pytest

from bench.bulk_stats import (
    _TICK,
    abba,
    clean_pairs,
    machine_busy_s,
    mb_per_s,
    pair_ratios,
    proc_cpu_s,
    spread,
    stat_cpu_s,
    udp_counters,
)
from bench.node_bench import BULK_TP, bulk_cpu, bulk_valid, bulk_wall, cpu_per_mib


def test_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    # fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime ...
    line = f"42 (a) b (c) S 1 42 42 0 -1 4194560 10 0 0 0 {3 * _TICK} {_TICK // 2} 0 0 20 0 1"
    assert stat_cpu_s(line) == pytest.approx(3.5)


def test_proc_cpu_counts_what_this_process_burned() -> None:
    before = proc_cpu_s(os.getpid())
    start = time.process_time()
    while time.process_time() - start < 0.3:  # burn CPU, not wall time
        sum(range(10_000))
    assert proc_cpu_s(os.getpid()) - before >= 0.3 - 2 / _TICK


def test_pair_ratios_skip_a_failed_transfer_and_refuse_unmatched_pairs() -> None:
    assert pair_ratios([14.0, 0.0, 13.0], [15.0, 15.0, 0.0]) == [pytest.approx(14 / 15)]
    with pytest.raises(ValueError, match="pairs do not match"):
        pair_ratios([1.0, 2.0], [1.0])


def test_spread_is_relative_to_the_median() -> None:
    s = spread([0.90, 0.88, 0.85])
    assert s.median == 0.88
    assert (s.low, s.high) == (0.85, 0.90)
    assert s.deviation == pytest.approx(0.03 / 0.88)
    assert "n=3" in s.text()
    assert spread([]).text() == "no values"


def test_pairs_alternate_abba() -> None:
    assert [abba(k) for k in range(4)] == [(0, 1), (1, 0), (0, 1), (1, 0)]


def test_bulk_ratios_point_the_same_way_for_wall_time_and_cpu() -> None:
    # p2pmed slower and dearer than bare in every pair: both ratios under 1
    mib = BULK_TP / 2**20
    p = {
        "bulk_runs_mb_s": [14.0, 13.0],
        "bulk_cpu_s": [(1.2, 0.8), (1.3, 0.9)],
        "bulk_clean": [True, True],
    }
    b = {"bulk_runs_mb_s": [16.0, 15.0], "bulk_cpu_s": [(1.0, 0.6), (1.0, 0.7)]}
    assert cpu_per_mib(p["bulk_cpu_s"]) == pytest.approx([2000 / mib, 2200 / mib])
    assert bulk_wall(p, b).values == pytest.approx((14 / 16, 13 / 15))
    assert bulk_cpu(p, b).values == pytest.approx((1.6 / 2.0, 1.7 / 2.2))


def test_udp_counters_read_sent_and_receive_buffer_drops() -> None:
    snmp = (
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 100 2 7 120 5 0\n"
        "UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "UdpLite: 0 0 0 0 0 0\n"
    )
    assert udp_counters(snmp) == (120, 5)
    sent, dropped = udp_counters()  # this machine's, as the bench reads them
    assert sent >= 0 and dropped >= 0
    with pytest.raises(ValueError, match="no Udp"):
        udp_counters("Ip: a\nIp: 1\n")


def test_mb_per_s_times_each_transfer_from_its_own_start() -> None:
    assert mb_per_s([(2_000_000, 11.0), (3_000_000, 20.0)], [10.0, 17.0]) == [2.0, 1.0]
    assert mb_per_s([(5, 1.0)], [1.0]) == [0.0]  # no time passed: no figure, not a crash
    with pytest.raises(ValueError, match="2 transfers arrived, 1 started"):
        mb_per_s([(1, 2.0), (1, 3.0)], [1.0])


def test_machine_busy_counts_user_nice_system_and_steal() -> None:
    line = f"cpu  {_TICK} {_TICK} {_TICK} 999 5 7 9 {_TICK} 0 0\n"
    assert machine_busy_s(line) == pytest.approx(4.0)
    assert machine_busy_s() > 0  # this machine's
    with pytest.raises(ValueError, match="cpu total"):
        machine_busy_s("intr 1 2 3")


def test_a_pair_is_clean_only_if_both_transfers_were() -> None:
    assert clean_pairs([(0.1, 0.2), (0.1, 0.6), (0.9, 0.0)], 0.25) == [True, False, False]


def test_ratios_use_clean_pairs_and_fall_back_to_all_when_none_was() -> None:
    p = {
        "bulk_runs_mb_s": [14.0, 5.0, 14.0],
        "bulk_cpu_s": [(1.0, 1.0)] * 3,
        "bulk_clean": [True, False, True],
    }
    b = {"bulk_runs_mb_s": [16.0, 16.0, 16.0], "bulk_cpu_s": [(1.0, 1.0)] * 3}
    assert bulk_valid(p)
    assert bulk_wall(p, b).values == pytest.approx((14 / 16, 14 / 16))  # the disturbed pair out
    p["bulk_clean"] = [False, False, False]
    assert not bulk_valid(p)
    assert len(bulk_wall(p, b).values) == 3
