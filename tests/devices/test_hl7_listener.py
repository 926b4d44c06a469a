"""p2pmed/devices/hl7.py: PCD-01/PCD-04 parsing and the MLLP listener on a real loopback
socket, with good and bad input: every message gets an ACK (AA, AE or AR with a reason)
or its connection is closed, every bad input is counted, and the listener keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import hl7  # type: ignore[import-untyped]
import pytest
from hl7.mllp import open_hl7_connection  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pmed.devices import hl7 as hl7_module
from p2pmed.devices import hl7sim
from p2pmed.devices import reading as rd
from p2pmed.devices.hl7 import Hl7Error, Hl7Source, ack_for, parse_hl7, parse_message

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


def r01(patient: str = "PID-7") -> str:
    return hl7sim.oru_r01("C1", time.time(), patient=patient, device="MON-1")


def frame(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return VT + raw + FS + CR


@pytest.fixture
async def listener() -> AsyncIterator[Hl7Source]:
    src = Hl7Source("127.0.0.1", 0, idle_s=60.0)
    await src.start()
    yield src
    await src.aclose()


@pytest.fixture
async def taken(listener: Hl7Source) -> AsyncIterator[list[rd.Reading]]:
    """A consumer of `listener` taking every batch (as the patient node does once it made the
    batch durable): the readings it took so far. The listener ACKs only what was taken."""
    got: list[rd.Reading] = []

    async def consume() -> None:
        async for r in listener.readings():
            got.append(r)

    task = asyncio.create_task(consume())
    yield got
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def connect(src: Hl7Source) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(src.host, src.port)


async def read_ack(reader: asyncio.StreamReader) -> hl7.Message | None:
    """The next ACK, or None when the listener closed the connection."""
    try:
        block = await asyncio.wait_for(reader.readuntil(FS + CR), 30)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    assert block.startswith(VT)
    return hl7.parse(block[1:-2].decode())


def msa(ack: hl7.Message) -> tuple[str, str]:
    seg = ack.segment("MSA")
    return str(seg(1)), str(seg(2))


def err_reason(ack: hl7.Message) -> str:
    return str(ack.segment("ERR")(3)(1)(2))


# -- parsing ---------------------------------------------------------------------------


def test_pcd01_vitals_identity_and_units() -> None:
    _, parsed = parse_message(r01())
    info, *metrics = parsed.readings
    assert info == rd.DeviceInfo("hl7", "MON-1", serial="0012345678ABCDEF", patient_id="PID-7")
    by_code = {m.code: m for m in metrics if isinstance(m, rd.Metric)}
    assert set(by_code) == {c for c, *_ in hl7sim.VITALS}
    spo2 = by_code[150456]
    assert spo2.unit == "MDC_DIM_PERCENT" and spo2.valid and spo2.label == "MDC_PULS_OXIM_SAT_O2"
    assert spo2.time_us is not None and abs(spo2.time_us / 1e6 - time.time()) < 60
    assert not parsed.warnings


def test_obx_status_other_than_final_is_invalid_and_non_mdc_is_an_error() -> None:
    text = r01().replace("|R|||", "|X|||", 1)  # first NM OBX: result cannot be obtained
    text += "\rOBX|20|NM|8867-4^Heart rate^LN||70|/min^^UCUM|||||F"
    text += "\rOBX|21|NM|147842^MDC_ECG_HEART_RATE^MDC||abc|/min^^UCUM|||||F"
    _, parsed = parse_message(text)
    metrics = [m for m in parsed.readings if isinstance(m, rd.Metric)]
    assert [m.valid for m in metrics].count(False) == 1
    assert [r for r, _ in parsed.warnings] == ["obx-not-mdc", "obx-value"]


def test_pcd04_alert_start_and_end() -> None:
    now = time.time()
    _, up = parse_message(
        hl7sim.oru_r40("C2", now, patient="P", device="D", alert_id="A9", active=True)
    )
    _, down = parse_message(
        hl7sim.oru_r40("C3", now, patient="P", device="D", alert_id="A9", active=False)
    )
    (a,) = [r for r in up.readings if isinstance(r, rd.DeviceAlert)]
    (b,) = [r for r in down.readings if isinstance(r, rd.DeviceAlert)]
    assert (a.key, a.code, a.priority, a.active, a.technical) == (
        "A9",
        196674,
        rd.Priority.MEDIUM,
        True,
        False,
    )
    assert a.text == "SpO2 low"
    assert (b.key, b.active) == ("A9", False)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("PID|||1\rOBX|1|NM|150456^X^MDC||97|%|||||F", "no-msh"),
        ("MSH#^~\\&#A#B###20240101##ORU^R01#C1#P#2.6\rOBX#1#NM#150456^X^MDC##97", "encoding-chars"),
        ("MSH|^~\\&|A|B|||20240101||ADT^A01|C1|P|2.6\rPID|||1", "message-type"),
        ("MSH|^~\\&|A|B|||20240101||ORU^R01|C1|P|2.6\rPID|||1", "no-observation"),
    ],
)
def test_rejected_messages(text: str, reason: str) -> None:
    with pytest.raises(Hl7Error) as exc:
        parse_message(text)
    assert exc.value.reason == reason and exc.value.ack == "AR"


_SEGMENT_TEXT = st.text(alphabet="OBXPIDMSHR01|^~&\\ 1.5NM", max_size=30)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_SEGMENT_TEXT, max_size=8), st.sampled_from(["ORU^R01", "ORU^R40", "^R01"]))
def test_any_message_is_read_or_rejected_with_a_reason(segments: list[str], kind: str) -> None:
    """Whatever follows a valid MSH (empty segments, separators where ids go, fields cut
    short), parse_message returns readings or raises Hl7Error (an AE/AR with a reason),
    never anything the listener would not answer."""
    text = f"MSH|^~\\&|A|B|||20240101||{kind}|C1|P|2.6" + "".join("\r" + x for x in segments)
    try:
        parse_message(text)
    except Hl7Error as exc:
        assert exc.ack in ("AE", "AR") and exc.reason


# -- the listener ------------------------------------------------------------------------


async def test_sim_messages_acked_and_read(listener: Hl7Source, taken: list[rd.Reading]) -> None:
    got = taken
    stats = await hl7sim.run(listener.host, listener.port, rate=0, count=5, alarm_every=0)
    reader, writer = await open_hl7_connection(listener.host, listener.port)
    for active in (True, False):
        msg = hl7sim.oru_r40("C9", time.time(), patient="PID-7", device="MON-1", alert_id="A1",
                             active=active)  # fmt: skip
        await hl7sim.send_one(reader, writer, msg, stats)
    writer.close()
    assert sum(isinstance(x, rd.DeviceAlert) for x in got) == 2  # ACKed: taken
    assert stats.acks == {"AA": 7}
    assert sum(isinstance(x, rd.DeviceInfo) for x in got) == 1  # said once, not per message
    assert not listener.errors


async def test_garbage_between_frames_skipped_frame_after_it_used(
    listener: Hl7Source, taken: list[rd.Reading]
) -> None:
    reader, writer = await connect(listener)
    writer.write(b"\x00\xffnoise\r\n" + frame(r01()) + b"more noise" + frame(r01()))
    await writer.drain()
    for _ in range(2):
        ack = await read_ack(reader)
        assert ack is not None and msa(ack) == ("AA", "C1")
    assert listener.errors["garbage"] == 2
    writer.close()


async def test_empty_segment_is_skipped(listener: Hl7Source, taken: list[rd.Reading]) -> None:
    """Two CRs in a row inside a message (an empty segment) are skipped: the message is
    read and ACKed AA. python-hl7's msg.segment() raised IndexError on it, which ended the
    connection with no ACK and nothing counted."""
    reader, writer = await connect(listener)
    for text in (r01().replace("\rOBX|2|", "\r\rOBX|2|", 1), r01().replace("\rPID|", "\r\rPID|")):
        writer.write(frame(text))
        await writer.drain()
        ack = await read_ack(reader)
        assert ack is not None and msa(ack) == ("AA", "C1")  # MSA-2: its control id
    assert sum(isinstance(x, rd.Metric) for x in taken) == 16  # 8 NM OBX in each
    assert [x.patient_id for x in taken if isinstance(x, rd.DeviceInfo)] == ["PID-7"]
    assert not listener.errors
    writer.close()


async def test_bad_messages_get_ar_with_a_reason_and_the_connection_stays(
    listener: Hl7Source, taken: list[rd.Reading]
) -> None:
    reader, writer = await connect(listener)
    bad = {
        "no-msh": frame("PID|||1\rOBX|1|NM|150456^X^MDC||97|%|||||F"),
        "encoding-chars": frame("MSH|^~#&|A|B|||20240101||ORU^R01|C1|P|2.6\rOBX|1|NM|1^X^MDC||1"),
        "not-utf8": frame(b"MSH|^~\\&|A|B|||20240101||ORU^R01|C1|P|2.6\rPID|||\xff\xfe"),
        "message-type": frame("MSH|^~\\&|A|B|||20240101||ADT^A01|C7|P|2.6\rPID|||1"),
    }
    for reason, data in bad.items():
        writer.write(data)
        await writer.drain()
        ack = await read_ack(reader)
        assert ack is not None, reason
        assert msa(ack)[0] == "AR" and err_reason(ack) == reason
        assert str(ack.segment("MSA")(3))  # the reason in words, MSA-3
        assert listener.errors[reason] == 1
    assert msa(ack)[1] == "C7"  # MSA-2 names the rejected message when it could be read
    writer.write(frame(r01()))
    await writer.drain()
    ack = await read_ack(reader)
    assert ack is not None and msa(ack)[0] == "AA"
    writer.close()


async def test_unmappable_obx_gets_ae_and_the_rest_is_used(
    listener: Hl7Source, taken: list[rd.Reading]
) -> None:
    reader, writer = await connect(listener)
    writer.write(frame(r01() + "\rOBX|20|NM|8867-4^Heart rate^LN||70|/min^^UCUM|||||F"))
    await writer.drain()
    ack = await read_ack(reader)
    assert ack is not None and msa(ack)[0] == "AE" and err_reason(ack) == "obx-not-mdc"
    assert listener.errors["obx-not-mdc"] == 1
    assert isinstance(taken[0], rd.DeviceInfo)
    assert len(taken) == 9 and all(isinstance(r, rd.Metric) for r in taken[1:])
    writer.close()


async def test_truncated_frames(listener: Hl7Source, taken: list[rd.Reading]) -> None:
    reader, writer = await connect(listener)
    # a frame cut off by the next start byte, then one cut off by the end of the connection
    writer.write(VT + r01()[:40].encode() + frame(r01()) + VT + r01()[:60].encode())
    await writer.drain()
    ack = await read_ack(reader)
    assert ack is not None and msa(ack)[0] == "AA"
    writer.close()
    await writer.wait_closed()
    while listener.errors["truncated"] < 2:
        await asyncio.sleep(0.01)
    reader, writer = await connect(listener)  # still serving
    writer.write(frame(r01()))
    ack = await read_ack(reader)
    assert ack is not None and msa(ack)[0] == "AA"
    writer.close()


async def test_10_mb_message_closes_the_connection_and_the_listener_keeps_serving(
    listener: Hl7Source, taken: list[rd.Reading]
) -> None:
    reader, writer = await connect(listener)
    big = r01() + "\rNTE|1||" + "x" * (10 * 1024 * 1024)
    writer.write(frame(big))
    with contextlib.suppress(ConnectionError):  # the listener may close before it is all sent
        await writer.drain()
    assert await read_ack(reader) is None
    assert listener.errors["oversized"] == 1
    reader, writer = await connect(listener)
    writer.write(frame(r01()))
    ack = await read_ack(reader)
    assert ack is not None and msa(ack)[0] == "AA"
    writer.close()


async def test_device_lost_after_idle() -> None:
    src = Hl7Source("127.0.0.1", 0, idle_s=0.3)
    await src.start()
    seen: list[rd.Reading] = []

    async def consume() -> None:
        async for r in src.readings():
            seen.append(r)
            if isinstance(r, rd.DeviceLost):
                return

    try:
        task = asyncio.create_task(consume())
        stats = await hl7sim.run(src.host, src.port, rate=0, count=1, alarm_every=0)
        assert stats.acks == {"AA": 1}
        await asyncio.wait_for(task, 30)
        assert isinstance(seen[0], rd.DeviceInfo) and isinstance(seen[-1], rd.DeviceLost)
    finally:
        await src.aclose()


def test_fields_without_components() -> None:
    """A plain OBX-3 code, a plain UCUM unit, a plain equipment id and PID-3 are read as the
    first component (python-hl7's rule); a gateway need not send the full CWE."""
    text = (
        "MSH|^~\\&|GW|FAC|||20240101120000+0000||ORU^R01|C1|P|2.6\rPID|||PID-7\rOBR|1\r"
        "OBX|1|NM|150456||97|%|||||F|||||||MON-9\r"
        "OBX|2|NM|147842^MDC_ECG_HEART_RATE^MDC||72|/min|||||F"
    )
    _, parsed = parse_message(text)
    info, spo2, hr = parsed.readings
    assert info == rd.DeviceInfo("hl7", "MON-9", patient_id="PID-7")
    assert isinstance(spo2, rd.Metric) and (spo2.code, spo2.value, spo2.unit) == (150456, 97, "%")
    assert isinstance(hr, rd.Metric) and hr.unit == "/min"
    assert spo2.time_us == 1_704_110_400_000_000  # OBR-7 absent: MSH-7
    assert not parsed.warnings


async def test_messages_read_before_the_node_takes_them_are_one_batch(
    listener: Hl7Source,
) -> None:
    """batches(): what was read since the consumer last took a batch (here two messages on
    two connections, both read before the consumer came back) comes as one list, in order,
    so the patient node maps, commits (one fsync) and sends it together; both are ACKed once
    it asks for the next batch. (One connection has one message in the listener at a time:
    its next frame is read once its ACK is written.)"""
    t = float(int(time.time()))  # whole seconds: OBX-14 carries ms
    first = hl7sim.oru_r01("G1", t, patient="PID-7", device="MON-1")
    second = hl7sim.oru_r01("G2", t + 1, patient="PID-7", device="MON-1")
    reader, writer = await connect(listener)
    writer.write(frame(first))
    await writer.drain()
    async with asyncio.timeout(30):
        while listener.messages < 1:
            await asyncio.sleep(0.01)
    reader2, writer2 = await connect(listener)
    writer2.write(frame(second))
    await writer2.drain()
    async with asyncio.timeout(30):
        while listener.messages < 2:
            await asyncio.sleep(0.01)
    batches = listener.batches()
    batch = await asyncio.wait_for(anext(batches), 10)
    assert isinstance(batch[0], rd.DeviceInfo)
    assert not any(isinstance(r, rd.DeviceInfo) for r in batch[1:])  # same device: said once
    times = [r.time_us for r in batch if isinstance(r, rd.Metric)]
    assert times == [round(t * 1e6)] * 8 + [round((t + 1) * 1e6)] * 8
    more = asyncio.create_task(anext(batches))  # the batch is durable: both are ACKed
    for r in (reader, reader2):
        ack = await read_ack(r)
        assert ack is not None and msa(ack)[0] == "AA"
    more.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await more
    await batches.aclose()
    writer.close()
    writer2.close()


async def test_ack_only_once_the_consumer_made_the_batch_durable(listener: Hl7Source) -> None:
    """AA is written when the consumer asks for the batch after the message's (it made that
    one durable), never before; a batch the consumer drops (closes the generator instead of
    asking for more: not stored) gets no ACK, its connection is closed, and it is counted."""
    reader, writer = await connect(listener)
    writer.write(frame(r01()))
    await writer.drain()
    batches = listener.batches()
    batch = await asyncio.wait_for(anext(batches), 10)
    assert isinstance(batch[-1], rd.Metric)
    ack_read = asyncio.create_task(read_ack(reader))
    for _ in range(20):  # the listener's task gets its turns: still no ACK
        await asyncio.sleep(0)
    assert not ack_read.done()
    more = asyncio.create_task(anext(batches))
    ack = await ack_read
    assert ack is not None and msa(ack)[0] == "AA"
    writer.write(frame(r01()))
    await writer.drain()
    await asyncio.wait_for(more, 10)  # taken, and then dropped
    await batches.aclose()
    assert await read_ack(reader) is None  # no ACK: closed
    assert listener.errors["not-stored"] == 1
    writer.close()


def _shape(node: object) -> object:
    if isinstance(node, str):
        return node
    assert isinstance(node, list)
    attrs = {k: v for k, v in vars(node).items() if k != "factory"}
    return (type(node), attrs, getattr(node, "factory", None), [_shape(x) for x in node])


@pytest.mark.parametrize("kind", ["r01", "r40", "odd"])
def test_parse_tree_is_python_hl7s_own(kind: str) -> None:
    """parse_hl7 (a faster parse plan) builds exactly the tree hl7.parse builds: the same
    container classes, separators and text, so python-hl7's accessors and create_ack work."""
    t = time.time()
    text = {
        "r01": hl7sim.oru_r01("P1", t, patient="PID-7", device="MON-1"),
        "r40": hl7sim.oru_r40("P2", t, patient="PID-7", device="MON-1", alert_id="A1", active=True),
        "odd": "MSH|^~\\&|A^B&C~D|||||ORU^R01|X1|P|2.6\rOBX|1|NM|1^x^MDC||~^&&||\\F\\|",
    }[kind]
    assert _shape(parse_hl7(text)) == _shape(hl7.parse(text))
    assert str(parse_hl7(text)) == str(hl7.parse(text))


def test_repeated_fields_are_parsed_once() -> None:
    """A field whose text came before is not split again (its container is reused); the
    tree stays hl7.parse's for every message of a stream, whatever came before it."""
    t = time.time()
    stream = [hl7sim.oru_r01(f"M{i}", t + i, patient="PID-7", device="MON-1") for i in range(5)]
    alert = hl7sim.oru_r40("A1", t, patient="PID-7", device="MON-1", alert_id="A1", active=True)
    stream.insert(2, alert)
    trees = [parse_hl7(text) for text in stream]
    for text, tree in zip(stream, trees, strict=True):
        assert _shape(tree) == _shape(hl7.parse(text))
    first, last = (list(tree.segments("OBX"))[1] for tree in (trees[0], trees[-1]))
    assert str(first[3]) == str(last[3]) and first[3] is last[3]  # OBX-3: the same code
    assert str(first[14]) != str(last[14])  # OBX-14: another time, its own container


def test_long_fields_are_not_remembered() -> None:
    """Only short fields are kept: a hostile stream of huge fields cannot grow the memory
    (and the number of fields kept is bounded too)."""
    huge = "X" * (hl7_module.MAX_REMEMBERED_LEN + 1)
    text = f"MSH|^~\\&|DEV|||||ORU^R01|H1|P|2.6\rOBX|1|NM|{huge}^a^MDC|{huge}"
    a, b = parse_hl7(text), parse_hl7(text)
    assert str(a) == str(b) == str(hl7.parse(text))
    assert a.segment("OBX")[3] is not b.segment("OBX")[3]
    assert a.segment("OBX")[4] is not b.segment("OBX")[4]
    for i in range(hl7_module.MAX_REMEMBERED_FIELDS // 100 + 2):
        fields = "|".join(f"{i}-{j}" for j in range(100))
        parse_hl7(f"MSH|^~\\&|DEV|||||ORU^R01|F{i}|P|2.6\rOBX|{fields}")
    kept = hl7_module._FIELDS[("\r|~^&", "\\")]
    assert 0 < len(kept) <= hl7_module.MAX_REMEMBERED_FIELDS
    assert all(len(k) <= hl7_module.MAX_REMEMBERED_LEN for k in kept)


_HL7_TEXT = st.text(alphabet="AB1 |^~&\\", max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_HL7_TEXT, min_size=1, max_size=6), min_size=1, max_size=6))
def test_parse_tree_is_python_hl7s_own_for_any_stream(messages: list[list[str]]) -> None:
    """Any sequence of messages (fields of random text with separators, escapes and
    repeats): each tree is the one hl7.parse builds, whatever was parsed before it."""
    for i, segments in enumerate(messages):
        text = f"MSH|^~\\&|DEV|||||ORU^R01|H{i}|P|2.6" + "".join("\rOBX|" + seg for seg in segments)
        assert _shape(parse_hl7(text)) == _shape(hl7.parse(text))
        assert _shape(parse_hl7(text)) == _shape(hl7.parse(text))  # now from what it kept


@pytest.mark.parametrize("kind", ["r01", "r40", "short"])
def test_ack_is_python_hl7s_create_ack(kind: str) -> None:
    """The listener writes its ACK's MSH and MSA itself (cheaper than building a message
    tree), exactly as python-hl7's create_ack(code, application="P2PMED") would, but for the
    generated control id (MSH-10) and the time (MSH-7)."""
    t = time.time()
    text = {
        "r01": hl7sim.oru_r01("K1", t, patient="PID-7", device="MON-1"),
        "r40": hl7sim.oru_r40(
            "K2", t, patient="PID-7", device="MON-1", alert_id="A1", active=False
        ),
        "short": "MSH|^~\\&|A^B|F1|R|F2|2026||ORU^R01|X1|P|2.6",
    }[kind]
    msg = hl7.parse(text)
    for code in ("AA", "AE"):
        ours = hl7.parse(ack_for(msg, code, []).decode())
        theirs = msg.create_ack(code, application="P2PMED")
        for ack in (ours, theirs):
            ack.segment("MSH")[7] = ack.segment("MSH")[10] = ""
        assert str(ours) == str(theirs)
