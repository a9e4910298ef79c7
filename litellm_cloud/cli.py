"""``litellm-cloud``: a thin command line. Parse, build settings, call the library, map errors to exit codes.

Each part that has commands registers them with an ``add_parser(subparsers)`` of its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ._errors import ConfigError

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _render(args: argparse.Namespace) -> int:
    from .fleet import load_manifest, render_all

    manifest = load_manifest(args.fleet)
    drifts = render_all(manifest, args.fleet.resolve().parent, check=args.check)
    if args.check:
        for drift in drifts:
            print(f"{drift.path}: differs from {args.fleet} ({drift.deployment}); run `litellm-cloud render`")
        if not drifts:
            print("rendered configs match the manifest")
        return EXIT_FAILED if drifts else EXIT_OK
    for name, spec in manifest.deployments.items():
        print(f"wrote {spec.output} ({name})")
    return EXIT_OK


def _proxy(args: argparse.Namespace) -> int:
    from .proxy import exec_proxy

    exec_proxy(args.config, home=args.home, host=args.host, port=args.port, workers=args.workers)
    return EXIT_FAILED  # not reached: exec replaced this process


def _settings(args: argparse.Namespace) -> int:
    from ._config import FIELDS, Settings, settings_table

    if args.markdown:
        print(settings_table())
        return EXIT_OK
    for f in FIELDS:
        print(f"{f.env}={f.default!s:<34} # {f.help}")
    Settings.from_env(os.environ)  # validate the current environment too
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="litellm-cloud", description="HeartCode's LiteLLM gateway.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="write config.yaml and config-local.yaml from fleet.yaml")
    render.add_argument("--fleet", type=Path, default=Path("fleet.yaml"))
    render.add_argument("--check", action="store_true", help="exit 1 if a committed config differs")
    render.set_defaults(func=_render)

    proxy = sub.add_parser("proxy", help="run the LiteLLM proxy with a config (what the container runs)")
    proxy.add_argument("--config", type=Path, default=Path("config.yaml"))
    proxy.add_argument("--home", type=Path, default=Path.cwd(), help="dir with custom_auth.py, tiers.yaml")
    proxy.add_argument("--host", default="0.0.0.0")
    proxy.add_argument("--port", type=int, default=4000)
    proxy.add_argument("--workers", type=int, default=None, help="worker processes (default: HEARTCODE_WORKERS)")
    proxy.set_defaults(func=_proxy)

    settings = sub.add_parser("settings", help="list every setting with its default; validate the env")
    settings.add_argument("--markdown", action="store_true", help="print the README's table instead")
    settings.set_defaults(func=_settings)

    # Each part with commands of its own registers them (imported here: their imports are heavier).
    from . import dev, doctor
    from .tunnel import cli as tunnel_cli

    for add in (dev.add_parser, tunnel_cli.add_parser, doctor.add_parser):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
