"""Signaling subcommands: `signaling` (run the server), `token` (mint, revoke), `audit verify`.

Every option of `signaling` and `token` can also come from an environment variable named
P2PMED_<OPTION> (e.g. --data-dir -> P2PMED_DATA_DIR); a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

ENV_PREFIX = "P2PMED_"


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def _opt(p: argparse.ArgumentParser, flag: str, help: str, **kw: Any) -> None:
    env = _env_name(flag)
    if env in os.environ:
        kw["default"] = os.environ[env]
        kw.pop("required", None)
    p.add_argument(flag, help=f"{help} [env {env}]", **kw)


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {s!r}")
    return v


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {s!r}")
    return v


def _port(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {s!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0..65535: {s!r}")
    return v


def _file(s: str) -> Path:
    p = Path(s)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {s}")
    return p


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _server_url(s: str) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(s)
    if u.scheme not in ("http", "https") or not u.netloc or u.query or u.fragment:
        raise argparse.ArgumentTypeError(f"server must be an http(s) base URL: {s!r}")
    return s.rstrip("/")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _register_server(sub)
    _register_token(sub)
    _register_audit(sub)


def _register_server(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("signaling", help="run the signaling server")
    _opt(p, "--host", "address to listen on", default="127.0.0.1")
    _opt(p, "--port", "TCP port", type=_port, default=8443)
    _opt(p, "--data-dir", "keys, revocations and audit log", type=Path, required=True)
    _opt(
        p,
        "--metrics-port",
        "serve /metrics (and /healthz) on this port, plain HTTP (default: no /metrics at all)",
        type=_port,
    )
    _opt(p, "--metrics-host", "address of the metrics listener", default="127.0.0.1")
    _opt(p, "--tls-cert", "TLS certificate chain (PEM)", type=_file)
    _opt(p, "--tls-key", "TLS private key (PEM)", type=_file)
    _opt(p, "--web-dir", "directory of the browser page", type=Path)
    p.add_argument(
        "--public-origin",
        action="append",
        metavar="ORIGIN",
        help="origin the page is served from, e.g. https://telemed.example.org (repeatable;"
        " default: the bind address and port, loopback names for a loopback or wildcard bind)"
        f" [env {ENV_PREFIX}PUBLIC_ORIGIN, comma-separated]",
    )
    _opt(p, "--allowed-origins", "extra WebSocket Origins, comma-separated", type=_csv)
    _opt(p, "--idle-timeout", "seconds without a message before logoff", type=_positive_float)
    _opt(p, "--reconnect-grace", "seconds a dropped endpoint keeps its place", type=_positive_float)
    _opt(
        p,
        "--revoke-timeout",
        "seconds for peers to confirm a revoked endpoint's paths closed (else revoke-timeout)",
        type=_positive_float,
    )
    _opt(
        p,
        "--resume-ttl",
        "lifetime (s) of the resume tokens given to endpoints",
        type=_positive_float,
    )
    _opt(
        p,
        "--token-key-previous",
        "during a token key rotation: the old token-key file; tokens signed with it still"
        " verify, new ones are signed with DATA_DIR/token-key",
        type=_file,
    )
    p.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get(ENV_PREFIX + "REDIS_URL"),
        help="share sessions with the other servers of a cluster through this Redis"
        " (redis://[:password@]host:port/db or rediss://); needs --token-key"
        f" [env {ENV_PREFIX}REDIS_URL]",
    )
    _opt(p, "--server-id", "this server's name in the cluster (default: hostname:port)")
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="CIDR",
        help="a load balancer's network (e.g. 10.0.0.0/24, repeatable): from a peer in it the"
        " client address is the right-most X-Forwarded-For entry not in a trusted network, for"
        " the per-IP limits and the audit log (default: none, the TCP peer is the client)"
        f" [env {ENV_PREFIX}TRUSTED_PROXY, comma-separated]",
    )
    _opt(
        p,
        "--token-key",
        "token signing key file (default: DATA_DIR/token-key, created); a cluster shares one",
        type=_file,
    )
    _opt(p, "--turn-urls", "TURN URLs, comma-separated", type=_csv)
    _opt(p, "--turn-ttl", "TURN credential lifetime (s)", type=_positive_int)
    _opt(p, "--max-msg-size", "max WebSocket message bytes", type=_positive_int)
    _opt(p, "--msg-rate", "JSON messages/s per endpoint", type=_positive_float)
    _opt(p, "--relay-rate", "relay frames/s per endpoint", type=_positive_float)
    _opt(p, "--max-endpoints-per-session", "endpoints per session", type=_positive_int)
    _opt(p, "--max-sessions", "sessions per server", type=_positive_int)
    _opt(p, "--max-beds-per-ward", "beds per ward (docs/wards.md)", type=_positive_int)
    _opt(p, "--max-stations-per-ward", "central stations per ward", type=_positive_int)
    _opt(p, "--join-rate", "join attempts/s per client IP", type=_positive_float)
    _opt(p, "--pending-per-ip", "unjoined connections per client IP", type=_positive_int)
    _opt(
        p,
        "--handshake-timeout",
        "seconds a connection may take to send a request (slowloris)",
        type=_positive_float,
    )
    _opt(p, "--join-timeout", "seconds to send join after the upgrade", type=_positive_float)
    _opt(
        p,
        "--max-unjoined",
        "unjoined connections from all addresses (default: half of ulimit -n)",
        type=_positive_int,
    )
    _opt(
        p,
        "--log-level",
        "debug, info, warning, error",
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    p.set_defaults(func=_run_server)


def _build_config(args: argparse.Namespace) -> Any:
    from signaling.config import Config, Limits

    limits = Limits()
    for name in (
        "max_msg_size",
        "msg_rate",
        "relay_rate",
        "max_endpoints_per_session",
        "max_sessions",
        "max_beds_per_ward",
        "max_stations_per_ward",
        "join_rate",
        "pending_per_ip",
        "handshake_timeout",
        "join_timeout",
        "max_unjoined",
    ):
        if getattr(args, name) is not None:
            setattr(limits, name, getattr(args, name))
    for rate, burst in (
        ("msg_rate", "msg_burst"),
        ("relay_rate", "relay_burst"),
        ("join_rate", "join_burst"),
    ):
        if getattr(args, rate) is not None:
            setattr(limits, burst, max(getattr(limits, burst), getattr(args, rate)))
    kw: dict[str, Any] = {}
    for name in (
        "tls_cert",
        "tls_key",
        "web_dir",
        "allowed_origins",
        "idle_timeout",
        "reconnect_grace",
        "revoke_timeout",
        "resume_ttl",
        "token_key_previous",
        "server_id",
        "token_key",
        "turn_urls",
        "turn_ttl",
    ):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.web_dir is not None and not (args.web_dir / "index.html").is_file():
        raise ValueError(f"--web-dir {args.web_dir} has no index.html")
    public = args.public_origin or _csv(os.environ.get(ENV_PREFIX + "PUBLIC_ORIGIN", ""))
    if public:
        kw["public_origins"] = public
    secret = os.environ.get("P2PMED_TURN_SECRET")
    if args.redis is not None:
        kw["redis_url"] = args.redis
    proxies = args.trusted_proxy or _csv(os.environ.get(ENV_PREFIX + "TRUSTED_PROXY", ""))
    if proxies:
        kw["trusted_proxies"] = proxies
    return Config(
        data_dir=args.data_dir,
        host=args.host,
        port=args.port,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        limits=limits,
        turn_secret=secret or None,
        **kw,
    )


def _run_server(args: argparse.Namespace) -> int:
    import asyncio

    from signaling import logs
    from signaling.listen import PortInUse, bind
    from signaling.server import StartupError, preflight, serve, ssl_context

    try:
        config = _build_config(args)
    except ValueError as e:
        print(f"p2pmed signaling: error: {e}", file=sys.stderr)
        return 2
    logs.setup(args.log_level)
    os.umask(0o077)  # whatever else the process creates in the data dir is private too
    try:
        lock = preflight(config)
    except StartupError as e:
        print(f"p2pmed signaling: error: {e}", file=sys.stderr)
        return 2
    try:
        ctx = ssl_context(config)
    except (OSError, ValueError) as e:
        lock.release()
        print(f"p2pmed signaling: error: cannot load TLS cert/key: {e}", file=sys.stderr)
        return 2
    try:
        sock = bind(config.host, config.port)
    except PortInUse as e:
        lock.release()
        print(f"p2pmed signaling: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        lock.release()
        print(
            f"p2pmed signaling: error: cannot listen on {config.host}:{config.port}: {e}",
            file=sys.stderr,
        )
        return 2
    msock = None
    if config.metrics_port is not None:
        try:
            msock = bind(config.metrics_host, config.metrics_port)
        except (PortInUse, OSError) as e:
            sock.close()
            lock.release()
            print(f"p2pmed signaling: error: metrics listener: {e}", file=sys.stderr)
            return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(config, sock, ctx, lock, msock))
    return 0


def _register_token(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("token", help="mint a join token (or `token revoke ID`)")
    _opt(p, "--server", "public base URL of the signaling server", type=_server_url)
    _opt(p, "--data-dir", "server data dir holding token-key", type=Path)
    _opt(p, "--session", "session id (opaque, 1..64 of [A-Za-z0-9_-]; no patient data)")
    _opt(
        p, "--role", "patient, clinician or observer", choices=["patient", "clinician", "observer"]
    )
    _opt(p, "--ttl", "lifetime in seconds", type=_positive_float, default=3600.0)
    _opt(
        p,
        "--ward",
        "ward id (docs/wards.md): with --role patient --session BED a bed's patient URL;"
        " with --role clinician and no --session the ward's central-station URL",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the URL")
    p.set_defaults(func=_mint)
    tsub = p.add_subparsers(dest="token_command", metavar="{revoke,list}")
    r = tsub.add_parser("revoke", help="revoke a token by its id (jti), or a session's tokens")
    r.add_argument("jti", nargs="?", help="token id (jti) printed by `p2pmed token --json`")
    # no environment variable here: P2PMED_SESSION left set must never revoke a session
    r.add_argument("--session", help="revoke every token issued for this session")
    r.add_argument(
        "--force", action="store_true", help="revoke a JTI even if it was never issued here"
    )
    _opt(r, "--data-dir", "server data dir", type=Path, required=True)
    r.set_defaults(func=_revoke)
    ls = tsub.add_parser("list", help="tokens issued for a session, with their status")
    ls.add_argument("--session", required=True, help="session id")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    _opt(ls, "--data-dir", "server data dir", type=Path, required=True)
    ls.set_defaults(func=_list)


def _mint(args: argparse.Namespace) -> int:
    from signaling.config import Config
    from signaling.keys import KeyFileError
    from signaling.tokens import ID_RE, REVOCATIONS, RevocationStore, mint, token_key

    ward = getattr(args, "ward", None)
    station = ward is not None and args.role == "clinician" and args.session is None
    missing = [
        f"--{n.replace('_', '-')}"
        for n in ("server", "data_dir", "session", "role")
        if getattr(args, n) is None and not (station and n == "session")
    ]
    if missing:
        print(f"p2pmed token: error: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    if ward is not None:
        from signaling.tokens import station_session

        err = None
        if not ID_RE.fullmatch(ward):
            err = "--ward must be 1..64 chars of [A-Za-z0-9_-]"
        elif args.role == "observer":
            err = (
                "--ward takes --role patient --session BED (a bed) or --role clinician (a station)"
            )
        elif args.role == "clinician" and args.session is not None:
            err = (
                "--ward with --role clinician mints a station URL for the whole ward: no --session"
            )
        if err:
            print(f"p2pmed token: error: {err}", file=sys.stderr)
            return 2
        if station:
            args.session, args.role = station_session(ward), "station"
    if not station and not ID_RE.fullmatch(args.session):
        print("p2pmed token: error: session must be 1..64 chars of [A-Za-z0-9_-]", file=sys.stderr)
        return 2
    defaults = Config(data_dir=args.data_dir)
    if args.ttl > defaults.max_token_ttl:
        print(f"p2pmed token: error: --ttl exceeds {defaults.max_token_ttl:.0f} s", file=sys.stderr)
        return 2
    try:
        key = token_key(args.data_dir, create=False)
        token, grant = mint(
            key,
            session=args.session,
            role=args.role,
            ttl=args.ttl,
            issuer=defaults.issuer,
            audience=defaults.audience,
            ward=ward,
        )
    except (KeyFileError, ValueError) as e:
        print(f"p2pmed token: error: {e}", file=sys.stderr)
        return 2
    store = RevocationStore(args.data_dir / REVOCATIONS)
    try:  # so `token list` and `token revoke` know the id
        store.record_issued(grant)
    finally:
        store.close()
    url = f"{args.server}/join#token={token}"
    if args.json:
        print(
            json.dumps(
                {
                    "url": url,
                    "token": token,
                    "jti": grant.jti,
                    "session": grant.session,
                    "role": grant.role,
                    "exp": int(grant.exp),
                    **({"ward": grant.ward} if grant.ward else {}),
                }
            )
        )
    else:
        print(url)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from signaling.tokenadmin import revoke_command

    return revoke_command(args.data_dir, args.jti, args.session, args.force)


def _list(args: argparse.Namespace) -> int:
    from signaling.tokenadmin import list_command

    return list_command(args.data_dir, args.session, args.json)


def _register_audit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("audit", help="audit log tools")
    asub = p.add_subparsers(dest="audit_command", required=True, metavar="{verify}")
    v = asub.add_parser("verify", help="check hash chain and checkpoint signatures")
    v.add_argument("path", type=Path, help="audit.jsonl")
    v.add_argument(
        "--public-key", type=Path, help="audit public key (default: audit-key.pub next to the log)"
    )
    v.add_argument(
        "--head",
        type=Path,
        help="signed head to check the log's end against (default: audit.head next to the log)",
    )
    v.add_argument(
        "--min-seq",
        type=int,
        default=0,
        help="fail if the log ends before this seq (a p2pmed_audit_head_seq value kept elsewhere)",
    )
    v.add_argument(
        "--allow-unsigned-tail",
        action="store_true",
        help="accept entries after the last checkpoint (log of a running server)",
    )
    v.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    from signaling.audit import verify_log
    from signaling.audithead import HeadError, head_path, read_head
    from signaling.keys import AUDIT_PUB, KeyFileError, load_public

    path: Path = args.path
    if not path.is_file():
        print(f"p2pmed audit verify: error: no such file: {path}", file=sys.stderr)
        return 2
    keyfile = args.public_key or path.parent / AUDIT_PUB
    try:
        public = load_public(keyfile)
    except (OSError, ValueError, KeyFileError) as e:
        print(f"p2pmed audit verify: error: cannot load public key {keyfile}: {e}", file=sys.stderr)
        return 2
    headfile = args.head or head_path(path)
    try:
        head = read_head(headfile, public)
    except HeadError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    if head is None and args.head is not None:
        print(f"p2pmed audit verify: error: no such file: {headfile}", file=sys.stderr)
        return 2
    res = verify_log(
        path,
        public,
        allow_unsigned_tail=args.allow_unsigned_tail,
        head=head,
        min_seq=args.min_seq,
    )
    if res.ok:
        anchor = f", ends at or after the signed head (seq {head.seq})" if head else ""
        print(f"OK: {res.lines} entries, {res.checkpoints} signed checkpoints{anchor}")
        if head is None:
            print(f"warning: no {headfile}: truncation not checked", file=sys.stderr)
        return 0
    where = f"line {res.bad_line}: " if res.bad_line else ""
    print(f"FAIL: {path}: {where}{res.problem}", file=sys.stderr)
    return 1
