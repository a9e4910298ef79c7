"""``python -m litellm_cloud.tunnel [run|status] ...``: the tunnel CLI without the top-level one."""

from __future__ import annotations

import argparse
import sys

from .cli import add_parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` as ``litellm-cloud tunnel ...`` would and run it."""
    parser = argparse.ArgumentParser(prog="python -m litellm_cloud.tunnel")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tunnel", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
