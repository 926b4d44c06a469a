"""`p2pmed trust add|list|remove`: enrol the peer identities a node accepts (its trust store)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from p2pmed.node.truststore import TrustStore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser(
        "trust",
        help="enrol, list or remove peer identities a node accepts",
        description="Manage the trust store in a node's --data-dir (trust.json). Enrolled "
        "keys are accepted in every consultation, with no first-use window. Without "
        "--require-known-peers a node pins what it sees: a patient node adds every new "
        "clinician or observer key to the consultation (event identity-pinned); a clinician "
        "node pins the patient's first key and refuses another one (identity-changed).",
    )
    tsub = t.add_subparsers(dest="trust_command", required=True, metavar="ACTION")
    add = tsub.add_parser("add", help="enrol a peer identity fingerprint for a role")
    add.add_argument("fingerprint", help="'p2pmed:xxxx xxxx ...' as the peer's node prints it")
    add.add_argument("--role", required=True, help="the peer's role: patient, clinician, observer")
    add.add_argument("--label", default="", help="who this is (e.g. 'Dr. Rossi, cardiology')")
    add.add_argument("--data-dir", required=True, metavar="DIR", help="the node's --data-dir")
    add.set_defaults(func=_add)
    ls = tsub.add_parser(
        "list", help="list accepted identities: first and last seen, whether the SAS was verified"
    )
    ls.add_argument("--data-dir", required=True, metavar="DIR", help="the node's --data-dir")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(func=_list)
    rm = tsub.add_parser("remove", help="forget an identity (enrolled or pinned)")
    rm.add_argument("fingerprint")
    rm.add_argument("--role", help="only for this role")
    rm.add_argument("--data-dir", required=True, metavar="DIR", help="the node's --data-dir")
    rm.set_defaults(func=_remove)


def _fail(msg: str, code: int = 2) -> int:
    print(f"p2pmed trust: error: {msg}", file=sys.stderr)
    return code


def _store(data_dir: str) -> TrustStore:
    import os

    from p2pmed.node.truststore import TrustStore

    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise _Usage(f"--data-dir {data_dir} is not a directory")
    return TrustStore(data_dir)


class _Usage(Exception):
    pass


def _run(fn: Callable[[], int]) -> int:
    from p2pmed.node.truststore import TrustError

    try:
        return fn()
    except (TrustError, _Usage) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.filename or ''}: {exc.strerror}", 1)


def _add(args: argparse.Namespace) -> int:
    def go() -> int:
        from p2pmed.node.truststore import check_label, check_role, normalize_fingerprint

        fp = normalize_fingerprint(args.fingerprint)
        check_role(args.role)
        check_label(args.label)
        changed = _store(args.data_dir).add(fp, args.role, args.label)
        print(f"{'enrolled' if changed else 'already enrolled'}: {fp} as {args.role}")
        return 0

    return _run(go)


def _list(args: argparse.Namespace) -> int:
    def go() -> int:
        from dataclasses import asdict

        entries = _store(args.data_dir).entries()
        for e in entries:
            if args.json:
                print(json.dumps(asdict(e), separators=(",", ":")))
            else:
                where = "any consultation" if e.session is None else f"consultation {e.session}"
                label = f"  {e.label}" if e.label else ""
                sas = "not verified" if e.verified is None else f"verified {_when(e.verified)}"
                print(
                    f"{e.fingerprint}  {e.role:<9} {e.how} ({where})  "
                    f"first seen {_when(e.first_seen)}  last seen {_when(e.last_seen)}  "
                    f"SAS {sas}{label}"
                )
        if not entries and not args.json:
            print("no identities (peers are pinned on first use unless --require-known-peers)")
        return 0

    return _run(go)


def _when(t: float | None) -> str:
    import time

    return "never" if t is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _remove(args: argparse.Namespace) -> int:
    def go() -> int:
        from p2pmed.node.truststore import normalize_fingerprint

        fp = normalize_fingerprint(args.fingerprint)
        gone = _store(args.data_dir).remove(fp, args.role)
        if not gone:
            return _fail(f"{fp} is not in the trust store", 1)
        print(f"removed {gone} entr{'y' if gone == 1 else 'ies'} for {fp}")
        return 0

    return _run(go)
