"""HL7 v2 over MLLP: IHE PCD-01 (ORU^R01) vitals and IHE PCD-04 (ORU^R40) alerts -> readings.

`Hl7Source` listens on HOST:PORT (python-hl7's asyncio MLLP server), parses each message with
python-hl7, answers it with an HL7 ACK and yields what it reported as `reading` records:

- AA: accepted; AE: accepted, but some OBX could not be used (ERR says which and why);
  AR: rejected, nothing of it used (no MSH, wrong encoding characters, not UTF-8, a message
  type other than ORU^R01/ORU^R40, no observation).
- AA and AE are written only once the consumer of `batches()` has made the message's
  readings durable (it asks for the next batch); a message it never takes (the node
  stopped) gets no ACK: its connection is closed and the device sends it again.
- Garbage before a frame's start byte is skipped (the frame after it is used); a frame cut
  off by the end of the connection is dropped; a message over `max_bytes` closes the
  connection (no ACK: its control id was never read). Every one is counted in `errors`.
- DeviceInfo on the first message and whenever the equipment id (OBX-18, else MSH-3) or
  the patient (PID-3) changes; DeviceLost when no message came for `idle_s` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import hl7  # type: ignore[import-untyped]
from hl7 import parser as hl7_parser
from hl7.datatypes import parse_datetime  # type: ignore[import-untyped]
from hl7.mllp import start_hl7_server  # type: ignore[import-untyped]
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK  # type: ignore[import-untyped]

from p2pmed.devices import reading as rd

log = logging.getLogger("p2pmed.devices.hl7")

ENCODING_CHARS = "^~\\&"
MAX_BYTES = 1 << 20  # a PCD-01 message is a few KiB; anything this large is not one
MAX_CONNECTIONS = 16
VALID_STATUS = frozenset({"F", "C", "R"})  # OBX-11 final, corrected, not yet verified
_PRIORITY = {"PH": rd.Priority.HIGH, "PM": rd.Priority.MEDIUM, "PL": rd.Priority.LOW}
_PRIORITY["PN"] = rd.Priority.LOW  # "no priority": still shown, at the lowest
EVENT_PHASE = 68481  # MDC_ATTR_EVENT_PHASE: start, continue, update, end, ...
ALARM_STATE = 68482  # MDC_ATTR_ALARM_STATE: active, latched, inactive
_ENDED_PHASES = frozenset({"end", "tpoint"})
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


class Hl7Error(Exception):
    """A message the listener answers with AE/AR; reason is the counted name."""

    def __init__(self, ack: str, reason: str, code: int, text: str) -> None:
        super().__init__(text)
        self.ack, self.reason, self.code, self.text = ack, reason, code, text
        self.msg: Any = None  # the parsed message, when it got that far (for MSA-2)


@dataclass
class Parsed:
    readings: list[rd.Reading]
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (reason, text) for AE


def _text(segment: Any, *path: int) -> str:
    """The text at a field/repetition/component path (1-based; field 0 = the segment id),
    "" when it is not there. As python-hl7's extract_field: a value that has no deeper parts
    answers for the first one ("/min" is OBX-6.1.1)."""
    node = segment
    for depth, i in enumerate(path):
        if isinstance(node, str):
            return node.strip() if all(j == 1 for j in path[depth:]) else ""
        idx = i if depth == 0 else i - 1  # a segment's list holds its id first
        if not 0 <= idx < len(node):
            return ""
        node = _item(node, idx)  # plain list indexing: the containers' own adds a check
    while not isinstance(node, str) and len(node) == 1:  # a leaf wrapped in containers
        node = _item(node, 0)
    return (node if isinstance(node, str) else str(node)).strip()


_item = list.__getitem__
_list_init = list.__init__


class _Plan(hl7_parser._ParsePlan):  # type: ignore[misc]
    """python-hl7's parse plan, with the next level and the separators it looks for made
    once instead of for every field (python-hl7 builds a new plan object per field), and its
    containers made by copying the attributes of one built the ordinary way (its __init__
    costs more than the rest of the split): the same parse tree, of the same classes, in
    about a third of the time (1.0 -> 0.35 ms for a 12-segment ORU^R01).

    At the field level it also remembers what each field's text parsed to: a monitor
    repeats most fields from message to message (codes, units, equipment ids), so most are
    not split again. The remembered containers are shared between messages: a parsed
    message is read, never changed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._next_plan: Any = None
        self._seps = self.separators[self.separators.find(self.separator) :]
        proto = super().container([])
        self._cls: Any = type(proto)
        self._attrs = dict(proto.__dict__)
        self._fields: dict[str, Any] | None = None
        if self._cls is hl7.Field:
            self._fields = _FIELDS.setdefault((self.separators, self.esc), {})
        self._text: str | None = None  # the field whose container comes next
        self._hit: Any = None

    def container(self, data: list[Any]) -> Any:
        if self._hit is not None:
            obj, self._hit = self._hit, None
            return obj
        obj = self._cls.__new__(self._cls)
        _list_init(obj, data)
        obj.__dict__.update(self._attrs)
        if self._text is not None:
            fields = self._fields
            assert fields is not None
            if len(fields) >= MAX_REMEMBERED_FIELDS:
                fields.clear()
            fields[self._text] = obj
            self._text = None
        return obj

    def next(self) -> Any:
        if self._next_plan is None and len(self.containers) > 1:
            self._next_plan = super().next()
        return self._next_plan

    def applies(self, text: str) -> bool:  # called for every field: a loop, not any()
        fields = self._fields
        if fields is not None and len(text) <= MAX_REMEMBERED_LEN:
            # python-hl7 calls container() for this field next, after any deeper levels
            # (other plan objects): so the one text held here is always this field's
            hit = fields.get(text)
            if hit is not None:
                self._hit = hit
                return False
            self._text = text
        for s in self._seps:  # noqa: SIM110
            if s in text:
                return True
        return False


# distinct field texts kept per set of separators (the listener takes only | and ^~\&)
MAX_REMEMBERED_FIELDS = 4096
MAX_REMEMBERED_LEN = 256  # longer fields (free text, a hostile 1 MiB one) are not kept
_FIELDS: dict[tuple[str, str], dict[str, Any]] = {}


def parse_hl7(text: str) -> Any:
    """hl7.parse(text), through _Plan."""
    strmsg = text.strip()
    p = hl7_parser.create_parse_plan(strmsg)
    return hl7_parser._split(
        strmsg, _Plan(p.separator, p.separators, p.containers, p.esc, p.factory)
    )


@functools.lru_cache(maxsize=256)  # the OBX of one message share their time
def _time_us(value: str) -> int | None:
    if not value:
        return None
    try:
        dt = parse_datetime(value)
    except (ValueError, TypeError):
        return None
    if dt is None:
        return None
    if dt.tzinfo is None:  # PCD-01 asks for an offset; without one we take UTC
        dt = dt.replace(tzinfo=UTC)
    seconds: float = (dt - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()
    return round(seconds * 1_000_000)


def _code(seg: Any, field_no: int) -> int | None:
    raw = _text(seg, field_no, 1, 1)
    return int(raw) if raw.isdigit() and len(raw) <= 10 else None


def _unit(seg: Any) -> str:
    """OBX-6 as the mapping knows units: the MDC reference id (MDC_DIM_...) when coded in MDC,
    else the code (UCUM)."""
    code, name = _text(seg, 6, 1, 1), _text(seg, 6, 1, 2)
    return name if name.startswith("MDC_DIM") else code or name


def parse_message(text: str) -> tuple[Any, Parsed]:
    """One HL7 message -> (the python-hl7 message, its readings); Hl7Error for AE/AR."""
    if not text.startswith("MSH"):
        raise Hl7Error("AR", "no-msh", 100, "message does not start with an MSH segment")
    if text[3:4] != "|" or text[4:8] != ENCODING_CHARS:
        raise Hl7Error(
            "AR", "encoding-chars", 102, "MSH-1/MSH-2 must be | and ^~\\& (PCD-01 requires them)"
        )
    try:
        msg = parse_hl7(text)
    except Exception as exc:  # python-hl7 raises several kinds on malformed text
        raise Hl7Error("AR", "malformed", 102, f"not parseable as HL7 v2: {exc}") from exc
    segments = _by_id(msg)
    msh = segments["MSH"][0]  # the text starts with it
    kind = (_text(msh, 9, 1, 1), _text(msh, 9, 1, 2))
    obx = segments.get("OBX", [])
    try:
        if kind == ("ORU", "R01"):
            parsed = _vitals(msh, segments.get("OBR"), obx)
        elif kind == ("ORU", "R40"):
            parsed = _alerts(msg, obx)
        else:
            raise Hl7Error(
                "AR", "message-type", 200, f"{'^'.join(kind)} is not ORU^R01 (PCD-01) or ORU^R40"
            )
    except Hl7Error as exc:
        exc.msg = msg
        raise
    info = _identity(msh, segments.get("PID"), obx)
    parsed.readings.insert(0, info)
    return msg, parsed


def _by_id(msg: Any) -> dict[str, list[Any]]:
    """The segments by id, in order: what python-hl7's msg.segments(id) answers, for every
    id in one pass (each of its calls walks the whole message through its containers)."""
    out: dict[str, list[Any]] = {}
    for seg in msg:
        first: Any = _item(seg, 0) if seg else ""
        if type(first) is str or not first:
            continue  # an empty segment (two CRs in a row): python-hl7's own lookup raises
        sid = _item(first, 0)
        if type(sid) is str:
            out.setdefault(sid, []).append(seg)
    return out


def _identity(msh: Any, pid: list[Any] | None, obx: list[Any]) -> rd.DeviceInfo:
    tagged = next((seg for seg in obx if _text(seg, 18)), None)  # the first with OBX-18
    equipment = _text(tagged, 18, 1, 1) if tagged is not None else ""
    eui = (_text(tagged, 18, 1, 3) if tagged is not None else "") or _text(msh, 3, 1, 2)
    patient = (_text(pid[0], 3, 1, 1) or None) if pid else None
    return rd.DeviceInfo(
        protocol="hl7",
        device_id=equipment or _text(msh, 3, 1, 1) or "unknown",
        serial=eui,
        patient_id=patient,
    )


def _vitals(msh: Any, obr: list[Any] | None, obx: list[Any]) -> Parsed:
    out = Parsed([])
    default_time = _time_us(_text(msh, 7))
    if obr:
        default_time = _time_us(_text(obr[0], 7)) or default_time
    for seg in obx:
        vtype = _text(seg, 2)
        if vtype == "":  # an MDS/VMD/channel row of the containment tree, no observation
            continue
        set_id = _text(seg, 1) or "?"
        code = _code(seg, 3)
        system = _text(seg, 3, 1, 3)
        if code is None or system not in ("MDC", ""):
            out.warnings.append(("obx-not-mdc", f"OBX {set_id}: OBX-3 is not an MDC code"))
            continue
        if vtype != "NM":
            out.warnings.append(("obx-value-type", f"OBX {set_id}: value type {vtype} not NM"))
            continue
        try:
            value = float(_text(seg, 5))
        except ValueError:
            out.warnings.append(("obx-value", f"OBX {set_id}: OBX-5 is not a number"))
            continue
        out.readings.append(
            rd.Metric(
                code=code,
                value=value,
                unit=_unit(seg),
                valid=_text(seg, 11) in VALID_STATUS,
                time_us=_time_us(_text(seg, 14)) or default_time,
                label=_text(seg, 3, 1, 2),
            )
        )
    if not out.readings:
        raise Hl7Error("AR", "no-observation", 101, "ORU^R01 without a usable NM OBX")
    return out


def _alerts(msg: Any, obx: list[Any]) -> Parsed:
    """PCD-04: one alert per OBR group; facet 1 (the group's first OBX) names the event
    (OBX-3), its text (OBX-5) and priority and source in OBX-8 (PH/PM/PL, SP/ST);
    MDC_ATTR_EVENT_PHASE "end" or MDC_ATTR_ALARM_STATE "inactive" ends it."""
    groups: list[tuple[Any, list[Any]]] = []
    for seg in msg:
        sid = _text(seg, 0)
        if sid == "OBR":
            groups.append((seg, []))
        elif sid == "OBX" and groups:
            groups[-1][1].append(seg)
    out = Parsed([])
    for obr, segs in groups:
        if not segs:
            out.warnings.append(("alert-empty", "OBR without OBX"))
            continue
        first = segs[0]
        event = _code(first, 3)
        flags = {_text(first, 8, r) for r in range(1, 6)} - {""}
        prio = next((_PRIORITY[f] for f in flags if f in _PRIORITY), None)
        if prio is None:
            out.warnings.append(("alert-priority", "alert without PH/PM/PL in OBX-8"))
            prio = rd.Priority.HIGH  # an alert of unknown priority is not played down
        active = True
        for seg in segs[1:]:
            facet, value = _code(seg, 3), _text(seg, 5).lower()
            if (facet == EVENT_PHASE and value in _ENDED_PHASES) or (
                facet == ALARM_STATE and value == "inactive"
            ):
                active = False
        key = _text(obr, 3, 1, 1) or f"{event}-{_text(first, 4)}"
        out.readings.append(
            rd.DeviceAlert(
                key=key,
                code=event,
                priority=prio,
                active=active,
                text=_text(first, 5) or _text(first, 3, 1, 2),
                time_us=_time_us(_text(first, 14)) or _time_us(_text(obr, 7)),
                technical="ST" in flags,
            )
        )
    if not out.readings:
        raise Hl7Error("AR", "no-observation", 101, "ORU^R40 without an alert (OBR + OBX)")
    return out


def _settle(done: asyncio.Future[bool], durable: bool) -> None:
    if not done.done():
        done.set_result(durable)


def _ack(msg: Any, code: str) -> str:
    """The text of python-hl7's `msg.create_ack(code, application="P2PMED")` (sending and
    receiving application and facility swapped, the trigger event, processing id and version
    copied, MSA-2 the message's control id), without building a message tree for it: that
    cost a third of the listener's time per message. IndexError for an MSH too short."""
    msh = _item(msg, 0)  # a message parses only from text that starts with MSH
    if _text(msh, 0) != "MSH":
        raise KeyError("no MSH first")
    if len(msh) < 13:
        raise IndexError("MSH too short to answer")
    f = [str(x) for x in msh[:13]]  # f[n] is MSH-n (f[1] the field separator)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    msh_ack = [f[2], "P2PMED", f[6], f[3], f[4], stamp, "", f"ACK^{_text(msh, 9, 1, 2)}^ACK"]
    msh_ack += [hl7.generate_message_control_id(), f[11], f[12]]
    return "MSH|" + "|".join(msh_ack) + f"\rMSA|{code}|{f[10]}"


def ack_for(msg: Any | None, code: str, errors: list[tuple[str, int, str]]) -> bytes:
    """An HL7 ACK (MSA-1 = code) for `msg`, or a bare one when it had no usable MSH; one ERR
    segment per (reason, HL7 table 0357 code, text)."""

    def clean(detail: str) -> str:
        return re.sub(r"[|^~\\&\r\n]", " ", detail)[:200]

    text = ""
    if msg is not None:
        with contextlib.suppress(IndexError, KeyError):  # an MSH too short to answer
            text = _ack(msg, code)
    if not text:
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        text = f"MSH|^~\\&|P2PMED||||{stamp}||ACK|{hl7.generate_message_control_id()}|P|2.6"
        text += f"\rMSA|{code}|"
    if errors:  # MSA-3, the text message: the first reason
        text += f"|{clean(errors[0][2])}"
    for reason, err, detail in errors:
        text += f"\rERR|||{err}^{reason}^HL70357|E||||{clean(detail)}"
    return (text + "\r").encode("ascii", "replace")


class Hl7Source:
    """An MLLP listener as a DeviceSource (see reading.py)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        idle_s: float = 4.0,
        max_bytes: int = MAX_BYTES,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.host, self.port = host, port
        self.idle_s = idle_s
        self.max_bytes = max_bytes
        self.max_connections = max_connections
        self.errors: Counter[str] = Counter()  # by reason
        self.acks: Counter[str] = Counter()  # AA / AE / AR sent
        self.messages = 0
        # each message's readings, and the future its ACK waits on (True: durable)
        self._queue: asyncio.Queue[tuple[list[rd.Reading], asyncio.Future[bool]]] = asyncio.Queue(
            1024
        )
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._identity: rd.DeviceInfo | None = None

    async def start(self) -> tuple[str, int]:
        """Listen; returns the bound address (port 0 picks a free one)."""
        if self._server is None:
            self._server = await start_hl7_server(
                self._client, self.host, self.port, limit=self.max_bytes
            )
            self.port = self._server.sockets[0].getsockname()[1]
        return self.host, self.port

    async def batches(self) -> AsyncGenerator[list[rd.Reading], None]:
        """What the device reported, one list per wake-up: every message read since the
        last one (usually one message; several when they came in the same loop turn)."""
        await self.start()
        queue = self._queue
        seen = lost = False
        waiting: list[asyncio.Future[bool]] = []  # the ACKs of the batch out there
        try:
            while True:
                if queue.empty():
                    try:
                        async with asyncio.timeout(self.idle_s if seen and not lost else None):
                            item = await queue.get()
                    except TimeoutError:
                        lost = True
                        yield [rd.DeviceLost(f"no HL7 message for {self.idle_s:g} s")]
                        continue
                else:
                    item = queue.get_nowait()
                seen, lost = True, False
                batch, waiting = list(item[0]), [item[1]]
                while not queue.empty():
                    readings, done = queue.get_nowait()
                    batch += readings
                    waiting.append(done)
                yield batch
                # asked for the next batch: this one is durable, its messages are ACKed
                for done in waiting:
                    _settle(done, True)
                waiting = []
        finally:  # not taken, or taken and not made durable: no ACK
            for done in waiting:
                _settle(done, False)
            while not queue.empty():
                _settle(queue.get_nowait()[1], False)

    def readings(self) -> AsyncIterator[rd.Reading]:
        return rd.flatten(self.batches())

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.max_connections:
            self.errors["too-many-connections"] += 1
            writer.close()
            return
        self._conns.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, OSError):
            self.errors["connection-reset"] += 1
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: Any) -> None:
        sep = END_BLOCK + CARRIAGE_RETURN
        while True:
            try:
                block = await reader.readuntil(sep)
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    self.errors["truncated"] += 1  # the peer closed in the middle of a frame
                return
            except asyncio.LimitOverrunError:
                self.errors["oversized"] += 1  # over max_bytes: its MSH-10 was never read
                return
            start = block.rfind(START_BLOCK)
            if start < 0:
                self.errors["garbage"] += 1  # an end marker without a start: no frame
                continue
            if block[:start].strip():
                # bytes outside a frame (garbage, or a frame cut off by a new start byte)
                self.errors["garbage" if START_BLOCK not in block[:start] else "truncated"] += 1
            ack = await self._handle(block[start + 1 : -len(sep)])
            if ack is None:
                return  # not made durable: no ACK, the device sends it again
            writer.writeblock(ack)
            await writer.drain()

    async def _handle(self, raw: bytes) -> bytes | None:
        self.messages += 1
        try:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Hl7Error("AR", "not-utf8", 102, "message is not UTF-8") from exc
            msg, parsed = parse_message(text.strip())
        except Hl7Error as exc:
            self.errors[exc.reason] += 1
            self.acks[exc.ack] += 1
            log.info("HL7 message rejected: %s", exc.text)
            return ack_for(exc.msg, exc.ack, [(exc.reason, exc.code, exc.text)])
        readings = parsed.readings
        info = readings[0]
        if info == self._identity:
            readings = readings[1:]  # the same device and patient: said once
        else:
            assert isinstance(info, rd.DeviceInfo)
            self._identity = info
        for reason, _ in parsed.warnings:
            self.errors[reason] += 1
        done = asyncio.get_running_loop().create_future()
        await self._queue.put((readings, done))
        if not await done:
            self.errors["not-stored"] += 1
            return None
        code = "AE" if parsed.warnings else "AA"
        self.acks[code] += 1
        return ack_for(msg, code, [(r, 207, t) for r, t in parsed.warnings])
