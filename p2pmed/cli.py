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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
