"""The `p2pmed` command. Each area registers its own subcommands."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from p2pmed import node_cli, trust_cli
    from p2pmed.devices import hl7sim
    from signaling import cli as signaling_cli

    parser = argparse.ArgumentParser(prog="p2pmed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    signaling_cli.register(sub)
    node_cli.register(sub)
    trust_cli.register(sub)
    hl7sim.register(sub)
    sim = sub.add_parser(
        "device-sim",
        help="simulated IEEE 11073 SDC patient monitor (p2pmed device-sim --help)",
        add_help=False,
    )
    sim.add_argument("args", nargs=argparse.REMAINDER)
    sim.set_defaults(func=_device_sim)
    return parser


def _device_sim(args: argparse.Namespace) -> int:
    from p2pmed.devices import device_sim  # sdc11073 is slow to import: only when asked

    return device_sim.main(args.args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["device-sim"]:  # its own parser takes every argument, --help included
        return _device_sim(argparse.Namespace(args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
