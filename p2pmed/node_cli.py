"""Node subcommands: `p2pmed node --join URL ...` and `p2pmed demo`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import stat
import sys
import tempfile
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger("p2pmed.node")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "node",
        help="run a node (patient or clinician; the join URL's token says which)",
        description="Join a session and stream vitals peer to peer (relay as fallback).",
    )
    p.add_argument(
        "--join",
        metavar="URL",
        help="join URL {server}/join#token=... (visible in ps: prefer --join-file or env "
        "P2PMED_JOIN)",
    )
    p.add_argument(
        "--join-file",
        metavar="PATH",
        help="read the join URL from this file (mode 0600 or 0400, owned by you)",
    )
    p.add_argument("--data-dir", metavar="DIR", help="keep identity key and session store here")
    p.add_argument(
        "--source",
        default="synthetic",
        metavar="SRC",
        help="patient vitals: synthetic (default), wfdb:PATH, hl7-mllp:HOST:PORT[?idle=S] (an "
        "HL7 v2 MLLP listener for IHE PCD-01 vitals and PCD-04 alerts), sdc:discover[?bed=X] "
        "or sdc:ENDPOINT-REFERENCE (IEEE 11073 SDC); docs/devices.md",
    )
    p.add_argument(
        "--scenario",
        default="demo",
        choices=["demo", "normal", "alarm"],
        help="synthetic source events (default demo: periodic tachycardia/desaturation)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON event per line on stdout")
    p.add_argument(
        "--fhir-out", metavar="FILE", help="clinician: FHIR Observations (NDJSON), - = stdout"
    )
    p.add_argument("--record", metavar="FILE", help="clinician: record received audio/video")
    p.add_argument(
        "--fhir-patient",
        metavar="REFERENCE",
        help="FHIR subject: an id, Patient/<id> or an http(s) URL ending in Patient/<id> (at "
        "most 255 bytes). Patient: announced to its clinicians (default: Patient/<endpoint "
        "id>). Clinician: written into its --fhir-out, overriding what the patient announces",
    )
    p.add_argument(
        "--label",
        metavar="TEXT",
        help="patient: label shown to clinicians (printable, at most 64 characters and 255 "
        "UTF-8 bytes)",
    )
    p.add_argument(
        "--media",
        default="testpattern",
        metavar="MEDIA",
        help="patient: testpattern (default), camera, file:PATH or none",
    )
    p.add_argument(
        "--no-auto-admit",
        action="store_true",
        help="clinician: admit a waiting patient only on a key press / admit command",
    )
    p.add_argument(
        "--ca-file",
        metavar="PATH",
        help="trust this CA (PEM) for the signaling server's TLS certificate (a private CA); "
        "SSL_CERT_FILE is honoured too",
    )
    p.add_argument(
        "--require-known-peers",
        action="store_true",
        help="accept only peer identities enrolled with `p2pmed trust add` (needs --data-dir). "
        "Without it a node trusts on first use: a patient node accepts and pins every new "
        "clinician or observer key (event identity-pinned), a clinician node pins the "
        "patient's first key and refuses another (identity-changed)",
    )
    p.add_argument(
        "--ice-relay-only",
        action="store_true",
        help="direct path only through the server's TURN relay (hides local addresses)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="patient: play the source FACTOR times faster than real time (tests)",
    )
    p.add_argument(
        "--join-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="give up when the server has not let us join within this time (10)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="stderr log level",
    )
    p.set_defaults(func=_node)

    d = sub.add_parser("demo", help="run the signaling server and a synthetic patient (no setup)")
    d.add_argument("--data-dir", metavar="DIR", help="server and node state (default: temporary)")
    d.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    d.add_argument("--port", type=int, default=0, help="listen port (default: any free port)")
    d.add_argument("--clinician", action="store_true", help="also run a terminal clinician")
    d.add_argument(
        "--media",
        default="testpattern",
        metavar="MEDIA",
        help="patient media: testpattern (default), camera, file:PATH or none",
    )
    d.add_argument("--scenario", default="demo", choices=["demo", "normal", "alarm"])
    d.add_argument(
        "--source",
        default="synthetic",
        choices=["synthetic", "sdc"],
        help="the patient's vitals: synthetic (default) or sdc: a simulated SDC monitor "
        "(p2pmed device-sim) next to the patient node, which discovers it by its bed",
    )
    d.add_argument(
        "--beds",
        type=int,
        metavar="N",
        help="a simulated ward (docs/wards.md): N synthetic patient nodes in this process, each "
        "its own endpoint, identity, session and peer connection; prints the station URL last",
    )
    d.add_argument("--json", action="store_true", help="print JSON events instead of a UI")
    d.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    d.set_defaults(func=_demo)


def _fail(msg: str, code: int = 2) -> int:
    print(f"p2pmed node: error: {msg}", file=sys.stderr)
    return code


def _run(coro: Any) -> int:
    try:
        import uvloop

        return int(uvloop.run(coro))
    except ImportError:
        return int(asyncio.run(coro))


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if level != "debug":
        for noisy in ("aioice", "aiortc"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _node(args: argparse.Namespace) -> int:
    from p2pmed.node.config import ConfigError, NodeConfig, read_join_file

    _setup_logging(args.log_level)
    if args.join is not None and args.join_file is not None:
        return _fail("give --join or --join-file, not both")
    join = args.join
    if args.join_file is not None:
        try:
            join = read_join_file(args.join_file)
        except ConfigError as exc:
            return _fail(str(exc))
    elif join is None:
        join = os.environ.get("P2PMED_JOIN")
    if not join:
        return _fail("no join URL: give --join-file PATH, set P2PMED_JOIN, or --join URL")
    if not 0 < args.rate <= 1000:
        return _fail("--rate must be > 0 and <= 1000")
    if not 0 < args.join_timeout <= 3600:
        return _fail("--join-timeout must be between 0 and 3600 seconds")
    if args.fhir_out == "-" and args.json:
        return _fail("--fhir-out - and --json both write to stdout; give --fhir-out a file")
    if args.fhir_out and args.fhir_out != "-":
        parent = os.path.dirname(os.path.abspath(args.fhir_out))
        if not os.path.isdir(parent):
            return _fail(f"--fhir-out: directory {parent} does not exist")
    if args.record:
        parent = os.path.dirname(os.path.abspath(args.record))
        if not os.path.isdir(parent):
            return _fail(f"--record: directory {parent} does not exist")
    try:
        config = NodeConfig.build(
            join,
            data_dir=args.data_dir,
            source=args.source,
            media=args.media,
            json_out=args.json,
            fhir_out=args.fhir_out,
            record=args.record,
            auto_admit=not args.no_auto_admit,
            ui=not args.json and sys.stdout.isatty() and args.fhir_out != "-",
            scenario=args.scenario,
            join_timeout=args.join_timeout,
            ice_relay_only=args.ice_relay_only,
            rate=args.rate,
            fhir_patient=args.fhir_patient,
            label=args.label,
            require_known_peers=args.require_known_peers,
            ca_file=args.ca_file,
        )
    except ConfigError as exc:
        return _fail(str(exc))
    # identity, endpoint id, session store, FHIR output, recordings: patient data or secrets,
    # private whatever umask the node was started with
    os.umask(0o077)
    from p2pmed.node.station import is_station_token

    if is_station_token(config.join.token):  # a ward's central station (docs/wards.md)
        if args.fhir_out == "-":
            return _fail("a station writes one FHIR file per bed: give --fhir-out a directory")
        if args.fhir_out and os.path.exists(args.fhir_out) and not os.path.isdir(args.fhir_out):
            return _fail(f"--fhir-out {args.fhir_out}: a station needs a directory here")
        return _run(_station_main(config))
    return _run(_node_main(config))


async def _node_main(config: Any) -> int:
    from p2pmed.node import Node, NodeError
    from p2pmed.node.events import NodeErrorEvent

    try:
        node = Node(config)
    except (NodeError, OSError, ValueError) as exc:
        return _fail(str(exc), 1)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, node.stop)
    try:
        joined = await node.start()
    except NodeError as exc:
        node.events.publish(NodeErrorEvent("join", str(exc)))
        return _fail(str(exc), exc.exit_code)
    if not config.json_out and not config.ui:
        print(
            f"p2pmed node: joined session {joined.get('session')} as {node.role} "
            f"({node.endpoint_id}); identity {node.identity.fingerprint()}",
            file=sys.stderr,
        )
    reader = None
    if config.json_out and stdin_is_pollable():
        reader = asyncio.create_task(_stdin_commands(node))
    try:
        code = await node.run()  # non-zero (a device source that failed): systemd restarts it
    finally:
        if reader is not None:
            reader.cancel()
        await node.close()
    return code


async def _station_main(config: Any) -> int:
    from p2pmed.node import NodeError
    from p2pmed.node.station import Station
    from p2pmed.station_ui import StationUI

    station = Station(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, station.stop)
    try:
        await station.start()
    except NodeError as exc:
        await station.close()
        return _fail(str(exc), exc.exit_code)
    if not config.json_out and not config.ui:
        print(
            f"p2pmed node: central station of ward {station.ward} ({station.endpoint_id});"
            f" identity {station.identity.fingerprint()}",
            file=sys.stderr,
        )
    tasks = []
    if stdin_is_pollable():
        tasks.append(asyncio.create_task(_station_commands(station)))
    if config.ui:
        tasks.append(asyncio.create_task(StationUI(station).run()))
    try:
        code = await station.run()
    finally:
        for t in tasks:
            t.cancel()
        await station.close()
    return code


async def _station_commands(station: Any) -> None:
    """`ack BED [ALARM_ID]` lines, or JSON commands with a "bed" field."""
    async for line in _stdin_lines():
        text = None if line is None else line.decode("utf-8", errors="replace").strip()
        if text is not None and not text.startswith("{"):
            station.text_command(text)
            continue
        cmd = _json_command(line)
        if isinstance(cmd, str):
            station.events.emit("error", code="bad-command", message=cmd)
            continue
        station.command(cmd)


def stdin_is_pollable() -> bool:
    """True when stdin is a pipe, socket or terminal. /dev/null (systemd, nohup, cron, docker
    without -i) or a regular file cannot be polled: uvloop aborts the process (SIGABRT inside
    libuv, no Python exception) when connect_read_pipe is given such a descriptor."""
    try:
        mode = os.fstat(0).st_mode
    except (OSError, ValueError):
        return False  # stdin closed
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return True
    return stat.S_ISCHR(mode) and os.isatty(0)


async def _stdin_commands(node: Any) -> None:
    """--json mode: one JSON command per stdin line, e.g. {"cmd":"ack","alarm_id":3}."""
    from p2pmed.node.events import NodeErrorEvent

    async for line in _stdin_lines():
        cmd = _json_command(line)
        if isinstance(cmd, str):
            node.events.publish(NodeErrorEvent("bad-command", cmd))
            continue
        node.command(cmd)


STDIN_LINE_MAX = 64 * 1024


async def _stdin_lines() -> AsyncIterator[bytes | None]:
    """stdin's lines (without the newline); None for a line longer than STDIN_LINE_MAX,
    whose rest is skipped, so that one bad line never ends the reading."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):
        return
    buf, skipping = b"", False
    while chunk := await reader.read(65536):
        *lines, buf = (buf + chunk).split(b"\n")
        for line in lines:
            if skipping:  # the end of a line already reported as too long
                skipping = False
            elif len(line) > STDIN_LINE_MAX:
                yield None
            else:
                yield line
        if len(buf) > STDIN_LINE_MAX:
            if not skipping:
                yield None
            skipping, buf = True, b""
    if buf and not skipping:
        yield buf


def _json_command(line: bytes | None) -> dict[str, Any] | str:
    """The command on a stdin line, or why it is not one."""
    if line is None:
        return f"stdin line is longer than {STDIN_LINE_MAX // 1024} KiB"
    try:
        cmd = json.loads(line)
    except (ValueError, RecursionError):  # nesting too deep for the decoder: RecursionError
        return "stdin line is not JSON"
    if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
        return 'expected {"cmd": ...}'
    return cmd


# ---------------------------------------------------------------------------------------
# demo


def _demo(args: argparse.Namespace) -> int:
    from p2pmed.media import MediaSpecError, parse_media

    _setup_logging(args.log_level)
    try:
        parse_media(args.media)
    except MediaSpecError as exc:
        return _fail(str(exc))
    if not 0 <= args.port <= 65535:
        return _fail("--port must be 0..65535")
    if args.beds is not None:
        if not 1 <= args.beds <= 64:
            return _fail("--beds must be 1..64")
        if args.clinician:
            return _fail("--beds: run the station with `p2pmed node --join <station URL>`")
        if args.source != "synthetic":
            return _fail("--beds: the simulated ward's beds are synthetic (no --source)")
        return _run(_ward_demo_main(args))
    return _run(_demo_main(args))


def _print_patient_sas(event: dict[str, Any]) -> None:
    """The demo's patient has no screen: print its SAS so the clinician can compare codes."""
    if event.get("event") == "handshake":
        print(
            f"  patient SAS with {event.get('peer')}: {event.get('sas')}"
            " (the clinician's screen must show the same code)",
            file=sys.stderr,
            flush=True,
        )


# episodes per bed, in turn: a ward where a few beds alarm and most are quiet
WARD_SCENARIOS = ("demo", "normal", "normal", "alarm")


def _demo_setup(
    data_dir: str | None, prefix: str
) -> tuple[tempfile.TemporaryDirectory[str] | None, str, asyncio.Event]:
    """The demo's data dir (a temporary one unless given) and the event SIGINT/SIGTERM set."""
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix=prefix)
        data_dir = tmp.name
    os.makedirs(data_dir, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return tmp, data_dir, stop


async def _close_nodes(nodes: list[Any], *, together: bool = False) -> None:
    """Close each node once, the last started first (the list is emptied): called before the
    demo's server stops, so the sessions end through it instead of after it went away (under
    load that took longer than a service manager waits), and in `finally` for what is left."""
    todo = nodes[::-1]
    nodes.clear()
    if together:
        await asyncio.gather(*(n.close() for n in todo), return_exceptions=True)
        return
    for node in todo:
        with contextlib.suppress(Exception):
            await node.close()


async def _ward_demo_main(args: argparse.Namespace) -> int:
    from p2pmed.node import Node, NodeConfig, NodeError
    from p2pmed.node.output import Events
    from signaling.config import Limits
    from signaling.testing import running_server

    tmp, data_dir, stop = _demo_setup(args.data_dir, "p2pmed-ward-")
    nodes: list[Any] = []
    ward = "demo-ward"
    # every bed, and every bed connection of a station on this machine, joins from one
    # address: the demo's own server lets them all in at once (a bed and a station join
    # each bed, plus room for a reconnect or two)
    limits = Limits()
    limits.join_burst = max(limits.join_burst, 2 * args.beds + 8)
    try:
        async with running_server(
            os.path.join(data_dir, "server"), host=args.host, port=args.port, limits=limits
        ) as srv:
            print("p2pmed demo: a simulated ward", file=sys.stderr)
            print(f"  signaling server : {srv.url}", file=sys.stderr)
            for i in range(1, args.beds + 1):
                bed = f"bed{i:02d}"
                scenario = WARD_SCENARIOS[(i - 1) % len(WARD_SCENARIOS)]
                url = srv.join_url(srv.mint(bed, "patient", ttl=12 * 3600, ward=ward))
                conf = NodeConfig.build(
                    url,
                    data_dir=os.path.join(data_dir, "beds", bed),
                    media="none",
                    scenario=scenario,
                    label=f"Bed {i}",
                )
                node = Node(conf, Events(json_out=False))
                nodes.append(node)
                await node.start()
                print(f"  {bed}: {scenario} ({node.endpoint_id})", file=sys.stderr)
            station = srv.join_url(srv.mint(f"ward.{ward}", "station", ttl=12 * 3600, ward=ward))
            print(
                f"  central station of ward {ward}: open this URL in a browser, or run"
                " `p2pmed node --join URL`:",
                file=sys.stderr,
            )
            print(station, flush=True)
            print("  Ctrl-C to stop.", file=sys.stderr)
            await stop.wait()
            await _close_nodes(nodes, together=True)
    except NodeError as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"cannot start the signaling server: {exc}", 1)
    finally:
        await _close_nodes(nodes, together=True)
        if tmp is not None:
            tmp.cleanup()
    return 0


async def _demo_main(args: argparse.Namespace) -> int:
    from p2pmed.demo_device import DemoDeviceError, demo_source
    from p2pmed.node import Node, NodeConfig, NodeError
    from p2pmed.node.output import Events
    from signaling.testing import running_server

    tmp, data_dir, stop = _demo_setup(args.data_dir, "p2pmed-demo-")
    nodes: list[Any] = []
    try:
        async with (
            running_server(os.path.join(data_dir, "server"), host=args.host, port=args.port) as srv,
            demo_source(args.source, data_dir) as device,
        ):
            session = "demo-" + secrets.token_hex(4)
            patient_url = srv.join_url(srv.mint(session, "patient", ttl=12 * 3600))
            clinician_url = srv.join_url(srv.mint(session, "clinician", ttl=12 * 3600))
            pconf = NodeConfig.build(
                patient_url,
                data_dir=os.path.join(data_dir, "patient"),
                media=args.media,
                scenario=args.scenario,
                **device.node_kw,
            )
            patient = Node(pconf, Events(json_out=args.json))
            if not args.json:  # with --json the `handshake` event carries the SAS
                patient.events.listeners.append(_print_patient_sas)
            nodes.append(patient)
            await patient.start()
            print("p2pmed demo", file=sys.stderr)
            print(f"  signaling server : {srv.url}", file=sys.stderr)
            print(
                f"  session          : {session} ({device.describe}, patient node "
                f"{patient.endpoint_id})",
                file=sys.stderr,
            )
            print(
                "  clinician: open this URL in a browser (or run `p2pmed node --join URL`):",
                file=sys.stderr,
            )
            print(clinician_url, flush=True)
            if args.clinician:
                cconf = NodeConfig.build(
                    clinician_url,
                    data_dir=os.path.join(data_dir, "clinician"),
                    media="none",
                    ui=not args.json and sys.stdout.isatty(),
                    json_out=args.json,
                )
                clinician = Node(cconf, Events(json_out=args.json))
                nodes.append(clinician)
                await clinician.start()
                clinician_done = asyncio.ensure_future(clinician.run())
                clinician_done.add_done_callback(lambda _: stop.set())
            print("  Ctrl-C to stop.", file=sys.stderr)
            await stop.wait()
            await _close_nodes(nodes)
    except (NodeError, DemoDeviceError) as exc:
        return _fail(str(exc), 1)
    except OSError as exc:
        return _fail(f"cannot start the signaling server: {exc}", 1)
    finally:
        await _close_nodes(nodes)
        if tmp is not None:
            tmp.cleanup()
    return 0
