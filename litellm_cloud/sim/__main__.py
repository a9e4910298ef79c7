"""``python -m litellm_cloud.sim``: run simulated vLLM servers until Ctrl-C.

    python -m litellm_cloud.sim --server gpu-1=8080 --server gpu-2=8081:heartcode-chat \\
        --model heartcode-chat-sfw --admin-port 9000 --ttft-ms 5 --tokens-per-s 500
    python -m litellm_cloud.sim --spec sim.yaml

``--server NAME=PORT[:MODEL]`` adds a server; ``--model NAME`` names the model of servers without one,
``--model SERVER=NAME`` one server's. Timing and fault flags apply to every server and beat the spec file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .gpu import MODES, ConfigError, SimConfig, SimServer, load_spec, run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m litellm_cloud.sim", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=None, help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--server", action="append", default=[], metavar="NAME=PORT[:MODEL]")
    p.add_argument("--model", action="append", default=[], metavar="NAME|SERVER=NAME")
    p.add_argument("--spec", type=Path, help="YAML or JSON spec file (see litellm_cloud/sim/_gpu_config.py)")
    p.add_argument("--admin-port", type=int, help="control port for the whole process (0 = any free)")
    p.add_argument("--seed", type=int, help="seed for error_rate draws")
    p.add_argument("--strict-model", action="store_true", help="404 a request naming another model (as vLLM)")
    p.add_argument("--no-uvloop", action="store_true", help="use the plain asyncio loop")
    p.add_argument("--log-level", default="WARNING")
    timing = p.add_argument_group("behaviour of every server (overrides the spec)")
    timing.add_argument("--ttft-ms", type=float)
    timing.add_argument("--tokens-per-s", type=float, help="0 = instant")
    timing.add_argument("--embedding-dim", type=int)
    timing.add_argument("--default-max-tokens", type=int)
    timing.add_argument("--max-model-len", type=int)
    timing.add_argument("--mode", choices=MODES)
    timing.add_argument("--error-rate", type=float)
    timing.add_argument("--retry-after-s", type=float)
    timing.add_argument("--fault-after-tokens", type=int)
    return p


_SERVER_FLAGS = ("ttft_ms", "tokens_per_s", "embedding_dim", "default_max_tokens", "max_model_len", "mode",
                 "error_rate", "retry_after_s", "fault_after_tokens")


def build_config(argv: Sequence[str]) -> SimConfig:
    """The SimConfig the command line asks for; ConfigError says what is wrong."""
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {k: getattr(args, k) for k in _SERVER_FLAGS if getattr(args, k) is not None}
    default_model, per_server = None, {}
    for item in args.model:
        server, sep, name = item.partition("=")
        if sep:
            per_server[server] = name
        else:
            default_model = item
    base = load_spec(args.spec, overrides) if args.spec else None
    servers = list(base.servers) if base else []
    for item in args.server:
        name, sep, rest = item.partition("=")
        port_text, _, model = rest.partition(":")
        if not sep or not port_text.isdigit():
            raise ConfigError(f"--server {item!r}: expected NAME=PORT or NAME=PORT:MODEL, e.g. gpu-1=8080")
        fields: dict[str, Any] = {**overrides, "name": name, "port": int(port_text)}
        if model:
            fields["model"] = model
        elif default_model:
            fields["model"] = default_model
        servers.append(SimServer(**fields))
    unknown = set(per_server) - {s.name for s in servers}
    if unknown:
        raise ConfigError(f"--model for unknown servers {sorted(unknown)}")
    servers = [replace(s, model=per_server[s.name]) if s.name in per_server else s for s in servers]
    settings: dict[str, Any] = {}
    if base:
        settings.update(host=base.host, admin_port=base.admin_port, seed=base.seed, strict_model=base.strict_model)
    for key in ("host", "admin_port", "seed"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.strict_model:
        settings["strict_model"] = True
    return SimConfig(servers=tuple(servers), use_uvloop=not args.no_uvloop, **settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run until a signal; 2 for a bad configuration, 1 when a port cannot be bound."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=_parser().parse_args(argv).log_level.upper(), format="%(levelname)s %(message)s")
    try:
        config = build_config(argv)
    except ConfigError as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 2
    try:
        run(config, announce=lambda line: print(line, flush=True))
    except OSError as exc:
        print(f"sim: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
