"""Node configuration, validated up front so bad flags fail with a clear message."""

from __future__ import annotations

import errno
import os
import re
import ssl
import stat
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from p2pmed.core.identity import Identity
from p2pmed.core.session import SessionConfig
from p2pmed.media import MediaSpec, parse_media
from p2pmed.signaling_client import JoinUrl, parse_join_url
from p2pmed.transport.datachannel import SCTP_CHUNK
from p2pmed.transport.paths import QualityThresholds


class ConfigError(ValueError):
    """A node option that cannot be used; the message says why."""


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "synthetic" | "wfdb" | "hl7-mllp" | "sdc"
    path: str = ""
    host: str = ""  # hl7-mllp: the address to listen on
    port: int = 0
    idle_s: float = 4.0  # hl7-mllp: no message this long = device lost
    target: str = ""  # sdc: "discover" or an endpoint reference
    bed: str | None = None  # sdc:discover?bed=...: only the provider at this location


_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_FHIR_URL = re.compile(r"https?://[^/]+(/.*)?/Patient/[A-Za-z0-9\-.]{1,64}")
_WIRE_ASCII = re.compile(r"[\x21-\x7e]+")  # what PATIENT_STATUS carries as the subject
LABEL_MAX = 64  # characters (what a clinician's screen has room for)
WIRE_MAX = 255  # bytes: PATIENT_STATUS carries the label and the subject as str8


def parse_fhir_patient(value: str) -> str:
    """`--fhir-patient`: a FHIR id, Patient/<id> or an absolute .../Patient/<id> URL of at
    most 255 bytes of printable ASCII, no spaces."""
    if _FHIR_ID.fullmatch(value):
        return "Patient/" + value
    if value.startswith("Patient/") and _FHIR_ID.fullmatch(value[len("Patient/") :]):
        return value
    if len(value) > WIRE_MAX and _WIRE_ASCII.fullmatch(value):
        raise ConfigError(
            f"--fhir-patient is {len(value)} bytes long: at most {WIRE_MAX} (the patient "
            "announces it to clinicians in a 255-byte field)"
        )
    if _WIRE_ASCII.fullmatch(value) and _FHIR_URL.fullmatch(value):
        return value
    raise ConfigError(
        f"--fhir-patient must be a FHIR id, Patient/<id> or an http(s) URL ending in "
        f"Patient/<id> (id: 1-64 of A-Z a-z 0-9 - .; a URL: printable ASCII, no spaces, at "
        f"most {WIRE_MAX} bytes), got {value[:80]!r}"
    )


def parse_label(value: str) -> str:
    """`--label`: the patient label clinicians see: printable, 1..64 characters and at most
    255 UTF-8 bytes."""
    text = value.strip()
    if not text:
        raise ConfigError("--label is empty")
    if not text.isprintable():
        raise ConfigError("--label has control or other unprintable characters")
    if len(text) > LABEL_MAX:
        raise ConfigError(f"--label is longer than {LABEL_MAX} characters")
    size = len(text.encode("utf-8"))
    if size > WIRE_MAX:
        raise ConfigError(
            f"--label is {size} bytes in UTF-8: at most {WIRE_MAX} (the patient sends it to "
            "clinicians in a 255-byte field)"
        )
    return text


MAX_JOIN_FILE = 8192


def read_join_file(path: str) -> str:
    """`--join-file`: the join URL from a file only its owner can read (the token is a secret;
    argv shows in `ps`). Refused unless a regular file of ours with mode 0600 or 0400."""
    try:
        # O_NOFOLLOW: not through a symlink; O_NONBLOCK: a FIFO must not hang us
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"--join-file {path}: no such file") from None
    except OSError as exc:
        why = "is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        raise ConfigError(f"--join-file {path}: {why}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"--join-file {path}: not a regular file")
        if st.st_uid != os.geteuid():
            raise ConfigError(
                f"--join-file {path}: owned by uid {st.st_uid}, not by this user "
                f"(uid {os.geteuid()})"
            )
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077 or mode & 0o700 not in (0o600, 0o400):
            raise ConfigError(
                f"--join-file {path}: mode {mode:04o}, the join token must be private to its "
                f"owner; run `chmod 600 {path}`"
            )
        data = os.read(fd, MAX_JOIN_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_JOIN_FILE:
        raise ConfigError(f"--join-file {path}: larger than {MAX_JOIN_FILE} bytes")
    try:
        lines = [x.strip() for x in data.decode("utf-8").splitlines() if x.strip()]
    except UnicodeDecodeError:
        raise ConfigError(f"--join-file {path}: not UTF-8 text") from None
    if len(lines) != 1:
        raise ConfigError(f"--join-file {path}: expected one line, the join URL")
    return lines[0]


def check_ca_file(path: str) -> None:
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except FileNotFoundError:
        raise ConfigError(f"--ca-file {path}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"--ca-file {path}: not a PEM CA certificate ({exc})") from None


SOURCES_HELP = (
    "synthetic, wfdb:PATH, hl7-mllp:HOST:PORT[?idle=SECONDS] (listen for HL7 v2 PCD-01/PCD-04 "
    "over MLLP), sdc:discover[?bed=LOCATION] or sdc:ENDPOINT-REFERENCE (IEEE 11073 SDC)"
)


def _hl7_source(rest: str) -> SourceSpec:
    addr, _, query = rest.partition("?")
    host, sep, port = addr.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"--source hl7-mllp: needs HOST:PORT to listen on, e.g. hl7-mllp:127.0.0.1:2575 "
            f"(port 0: any free port), got {rest!r}"
        )
    idle = 4.0
    for item in filter(None, query.split("&")):
        key, _, val = item.partition("=")
        if key != "idle":
            raise ConfigError(f"--source hl7-mllp: unknown option {key!r} (known: idle)")
        try:
            idle = float(val)
        except ValueError:
            idle = -1.0
        if not 0.1 <= idle <= 3600:
            raise ConfigError(f"--source hl7-mllp: idle must be 0.1..3600 seconds, got {val!r}")
    return SourceSpec("hl7-mllp", host=host, port=int(port), idle_s=idle)


def _sdc_source(rest: str) -> SourceSpec:
    target, _, query = rest.partition("?")
    if not target or any(c.isspace() for c in rest):
        raise ConfigError(
            "--source sdc: needs discover, discover?bed=LOCATION or a provider's endpoint "
            f"reference (e.g. sdc:urn:uuid:...), got {rest!r}"
        )
    bed = None
    if query:
        key, _, val = query.partition("=")
        if target != "discover" or key != "bed" or not val or "&" in val:
            raise ConfigError(
                f"--source sdc: only discover takes an option, ?bed=LOCATION; got {rest!r}"
            )
        bed = val
    return SourceSpec("sdc", target=target, bed=bed)


def parse_source(value: str) -> SourceSpec:
    if value.startswith("hl7-mllp:"):
        return _hl7_source(value[len("hl7-mllp:") :])
    if value.startswith("sdc:"):
        return _sdc_source(value[len("sdc:") :])
    if value == "synthetic":
        return SourceSpec("synthetic")
    if value.startswith("wfdb:"):
        path = value[len("wfdb:") :]
        if not path:
            raise ConfigError("--source wfdb: needs a record path, e.g. wfdb:/data/mitdb/208")
        if not (os.path.exists(path + ".hea") or os.path.exists(path)):
            raise ConfigError(f"--source wfdb: no WFDB record at {path} (expected {path}.hea)")
        return SourceSpec("wfdb", path)
    raise ConfigError(f"--source must be one of {SOURCES_HELP}; got {value!r}")


@dataclass(frozen=True)
class SessionTuning:
    """The session core settings a node chooses (the others are SessionConfig's defaults)."""

    heartbeat_interval: float = 0.25
    path_dead_after: float = 1.0
    window_frames: int = 128  # most frames / bytes unacked in flight
    # bench/node_bench.py: with 16 KiB chunks and a 64 KiB window bulk ran at 0.66x bare aiortc;
    # larger chunks (SCTP_CHUNK) cut aiortc's per-message and per-packet cost and need a wider
    # window. A CRITICAL frame has its own eighth of the window and is not held by the rest.
    window_bytes: int = 256 * 1024
    chunk_bytes: int = SCTP_CHUNK

    def session_config(self, session_id: str, initiator: bool, identity: Identity) -> SessionConfig:
        return SessionConfig(
            session_id=session_id, initiator=initiator, identity=identity, **asdict(self)
        )


_TUNING = frozenset(SessionTuning.__dataclass_fields__)


@dataclass
class NodeConfig:
    join: JoinUrl
    data_dir: str | None = None
    source: SourceSpec = field(default_factory=lambda: SourceSpec("synthetic"))
    json_out: bool = False
    fhir_out: str | None = None
    record: str | None = None
    media: MediaSpec = field(default_factory=lambda: MediaSpec("testpattern"))
    auto_admit: bool = True
    ui: bool = False
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    reconnect_initial: float = 0.5
    session: SessionTuning = field(default_factory=SessionTuning)
    direct_grace: float = 5.0  # a stalled direct connection is kept this long before renegotiating
    endpoint_id: str | None = None
    rate: float = 1.0  # source speed factor (tests and the benchmark may run faster)
    join_timeout: float = 10.0
    ice_relay_only: bool = False  # direct path only through the TURN relay (no host/srflx)
    sctp_high_water: int = 16 * 1024  # bytes handed to aiortc ahead of its SCTP queue
    scenario: str = "demo"  # synthetic source events: demo | normal | alarm
    # FHIR subject reference as written into Observation.subject.reference: "Patient/<id>" or an
    # absolute URL ending in Patient/<id> (a bare id is normalised to "Patient/<id>").
    # None: use the patient's endpoint id.
    fhir_patient: str | None = None
    label: str | None = None  # patient label shown to clinicians (parse_label says what fits)
    ca_file: str | None = None  # PEM CA bundle trusted for the signaling server's TLS
    require_known_peers: bool = False  # accept only identities enrolled with `p2pmed trust add`

    # the session settings, read (and, for tuning experiments, set) by their old names
    @property
    def heartbeat_interval(self) -> float:
        return self.session.heartbeat_interval

    @property
    def path_dead_after(self) -> float:
        return self.session.path_dead_after

    @property
    def window_frames(self) -> int:
        return self.session.window_frames

    @property
    def window_bytes(self) -> int:
        return self.session.window_bytes

    @window_bytes.setter
    def window_bytes(self, value: int) -> None:  # bench/node_bench.py BENCH_WINDOW_KIB
        self.session = replace(self.session, window_bytes=value)

    @property
    def chunk_bytes(self) -> int:
        return self.session.chunk_bytes

    def ssl_context(self) -> ssl.SSLContext | None:
        """--ca-file: trust that CA (on top of the system's). None: the default, which also
        honours SSL_CERT_FILE / SSL_CERT_DIR."""
        if self.ca_file is None:
            return None
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=self.ca_file)
        return ctx

    @classmethod
    def build(
        cls,
        join_url: str,
        *,
        data_dir: str | None = None,
        source: str = "synthetic",
        media: str = "testpattern",
        **kw: Any,
    ) -> NodeConfig:
        try:
            join = parse_join_url(join_url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
            raise ConfigError(f"--data-dir {data_dir} exists and is not a directory")
        try:
            media_spec = parse_media(media)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if kw.get("ca_file") is not None:
            check_ca_file(kw["ca_file"])
        if kw.get("require_known_peers") and data_dir is None:
            raise ConfigError("--require-known-peers needs --data-dir (the trust store is there)")
        if kw.get("fhir_patient") is not None:
            kw["fhir_patient"] = parse_fhir_patient(kw["fhir_patient"])
        if kw.get("label") is not None:
            kw["label"] = parse_label(kw["label"])
        tuning = {name: kw.pop(name) for name in _TUNING & kw.keys()}
        if tuning:
            kw["session"] = replace(kw.get("session", SessionTuning()), **tuning)
        return cls(
            join=join, data_dir=data_dir, source=parse_source(source), media=media_spec, **kw
        )
