"""`walnut-provider`: set up, run and inspect a provider node."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import sys
import tomllib
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from ..common.keys import KeyError_, KeyPair
from ..common.money import format_sui
from ..common.numbers import cli_int
from ..common.protocol import API
from ..common.sqlite_store import StorageError
from ..common.tls import fingerprint, generate_self_signed, is_loopback, server_context
from .analytics import print_history
from .cli_benchmark import add_benchmark_command
from .cli_ledger import add_ledger_commands
from .config import ConfigError, default_config_text, load_config, parse_config, slurm_config_text
from .config_schema import DeprecatedKeyWarning
from .hardware import detect
from .ledger_setup import ledger_identity
from .node import ProviderNode
from .runtimes.base import RuntimeError_
from .runtimes.process import ProcessRuntime
from .runtimes.slurm import cluster_nodes


def default_home() -> Path:
    return Path(os.environ.get("WALNUT_PROVIDER_HOME", Path.home() / ".walnut" / "provider"))


class JSONLogFormatter(logging.Formatter):
    """One JSON object per line: machine-readable provider logs."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def fail(message: str, code: int = 2) -> int:
    print(f"walnut-provider: {message}", file=sys.stderr)
    return code


def cmd_init(args: argparse.Namespace) -> int:
    home: Path = args.home
    key_path, config_path = home / "identity.key", home / "provider.toml"
    if key_path.exists() or config_path.exists():
        return fail(f"{home} already holds a provider identity; refusing to overwrite it")
    hw = detect()
    name = args.name or socket.gethostname().lower().split(".")[0][:40] or "walnut-node"
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.lower()).strip("-._")
    if args.runtime == "slurm":  # shapes sized to the cluster's nodes, not this host
        try:
            text = slurm_config_text(name or "walnut-node", cluster_nodes(), port=args.port)
        except (RuntimeError_, ConfigError) as exc:
            return fail(f"--runtime slurm: {exc}")
    else:
        text = default_config_text(name or "walnut-node", len(hw.gpus), hw.cpu_count,
                                   hw.memory_mb, port=args.port)
    load_config_text_check(text)
    key = KeyPair.generate()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    key.save(key_path)
    fp = generate_self_signed(name or "walnut-node", home / "tls" / "cert.pem",
                              home / "tls" / "key.pem")
    config_path.write_text(text)
    print(f"Provider identity: {key.address}")
    print(f"TLS:    self-signed certificate, sha256={fp} (publish it with `register`)")
    print(f"Key:    {key_path} (owner-only)")
    print(f"Config: {config_path} — edit prices and availability, then run "
          f"`walnut-provider serve`")
    gpus = ", ".join(f"{g.model} ({g.memory_mb} MiB)" for g in hw.gpus) or \
        f"none ({hw.nvml_error})"
    print(f"Detected: {hw.cpu_count} CPUs, {hw.memory_mb} MiB RAM, GPUs: {gpus}")
    return 0


def load_config_text_check(text: str) -> None:
    parse_config(tomllib.loads(text))


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.home / "provider.toml")
        identity = ledger_identity(config, KeyPair.load(args.home / "identity.key"))
    except (ConfigError, KeyError_) as exc:
        return fail(str(exc))
    handler = logging.StreamHandler()
    handler.setFormatter(JSONLogFormatter() if args.log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    state_dir = args.home / "state"
    runtime = ProcessRuntime(state_dir / "sessions") if args.runtime == "process" else None
    if args.runtime in ("docker", "slurm"):
        config = config.__class__(**{**config.__dict__, "runtime": args.runtime})

    try:
        ssl_context = tls_context(config, args.home)
    except (OSError, ValueError) as exc:
        return fail(f"TLS certificate: {exc}")
    if ssl_context is None and not is_loopback(args.host or config.listen_host):
        return fail("plain HTTP is allowed only on a loopback address (tls.mode = \"off\")")

    async def main() -> None:
        node = ProviderNode(config, identity, state_dir, runtime=runtime)
        host = args.host or config.listen_host
        port = await node.start(host=host, port=args.port, ssl_context=ssl_context)
        scheme = "https" if ssl_context is not None else "http"
        logging.getLogger("walnut.provider").info(
            "serving %s on %s://%s:%d (runtime %s, address %s%s)", config.name, scheme, host,
            port, node.runtime.name, identity.address,
            f", TLS sha256={node.tls_fingerprint}" if node.tls_fingerprint else "")
        if args.port_file:
            Path(args.port_file).write_text(str(port))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await node.stop(stop_sessions=args.stop_sessions_on_exit)

    try:
        asyncio.run(main())
    except StorageError as exc:  # e.g. the state directory's disk is full
        return fail(exc.message)
    return 0


def tls_context(config, home: Path):
    """The server TLS context from the config, tagged with its fingerprint; None if off."""
    if config.tls == "off":
        return None
    cert, key = home / config.tls_cert, home / config.tls_key
    context = server_context(cert, key)
    context.walnut_fingerprint = fingerprint(cert.read_bytes())
    return context


def cmd_status(args: argparse.Namespace) -> int:
    if args.history:  # earnings and utilisation from the node's own records, config or not
        return print_history(args.home, as_json=args.json)
    try:
        config = load_config(args.home / "provider.toml")
    except ConfigError as exc:
        return fail(str(exc))
    scheme = "http" if config.tls == "off" else "https"
    url = args.url or f"{scheme}://127.0.0.1:{config.listen_port}"
    context = None
    if url.startswith("https"):  # our own node: trust exactly our own certificate
        context = ssl.create_default_context(cafile=str(args.home / config.tls_cert))
        context.check_hostname = False
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        with urllib.request.urlopen(f"{url}{API}/status", timeout=5, context=context) as resp:
            offer = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return fail(f"provider at {url} is not answering ({getattr(exc, 'reason', exc)})", 1)
    if args.json:
        print(json.dumps(offer, indent=2))
        return 0
    print(format_status(offer))
    return 0


def format_status(offer: dict) -> str:
    hw, cap = offer["hardware"], offer["capacity"]
    lines = [
        f"Node      {offer['node']}  (v{offer['version']}, runtime {offer['runtime']}, "
        f"up {offer['uptime_seconds']}s)",
        f"Address   {offer['provider_address']}",
        f"Endpoint  {offer['endpoint']}  region {offer['region']}",
        "TLS       " + (f"sha256={offer['tls_fingerprint']}" if offer.get("tls_fingerprint")
                         else "off (plain HTTP on loopback)"),
        f"CPU       {hw['cpu_count']} cores, {hw['cpu_utilization_pct']:.0f}% busy",
        f"Memory    {hw['memory_used_mb']} / {hw['memory_mb']} MiB",
    ]
    if hw["gpus"]:
        for g in hw["gpus"]:
            lines.append(f"GPU {g['index']}     {g['model']}, {g['memory_used_mb']}/"
                         f"{g['memory_mb']} MiB, {g['utilization_pct']}% busy, "
                         f"{g['temperature_c']} C")
    else:
        lines.append(f"GPUs      none ({hw['nvml_error']})")
    lines.append(f"Sessions  {cap['active_sessions']} / {cap['max_sessions']} active; "
                 f"{'accepting' if cap['accepting'] else 'NOT accepting'} new sessions")
    lines.append("Shapes:")
    for s in offer["shapes"]:
        sui_per_hour = format_sui(s["price_mist_per_hour"])
        lines.append(f"  {s['name']:<12} {s['gpus']} GPU  {s['cpus']:g} CPU  "
                     f"{s['memory_mb']} MiB  {s['price_mist_per_second']} MIST/s "
                     f"({sui_per_hour}/h){'' if s['available'] else '  [full]'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="walnut-provider",
                                     description="Share this machine's GPUs/CPUs on Walnut.")
    parser.add_argument("--home", type=Path, default=default_home(),
                        help="provider directory (default: $WALNUT_PROVIDER_HOME or "
                             "~/.walnut/provider)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create the provider identity and config")
    p.add_argument("--name", help="node name (default: host name)")
    p.add_argument("--port", type=cli_int("--port", maximum=65535), default=8765)
    p.add_argument("--runtime", choices=("auto", "slurm"), default="auto",
                   help="slurm: sessions are jobs on the cluster sinfo shows")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("serve", help="run the provider service")
    p.add_argument("--host")
    p.add_argument("--port", type=cli_int("--port", maximum=65535),
                   help="listen port (0: any free port)")
    p.add_argument("--runtime", choices=("auto", "docker", "process", "slurm"),
                   help="override the config's runtime")
    p.add_argument("--port-file", help="write the bound port to this file")
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    p.add_argument("--stop-sessions-on-exit", action="store_true",
                   help="stop every session on exit (default: keep them for re-adoption)")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("status", help="summarise a running node")
    p.add_argument("--url", help="provider URL (default: from the config's listen port)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--history", action="store_true",
                   help="earnings, utilisation and sessions by day (works with the node down)")
    p.set_defaults(func=cmd_status)
    add_ledger_commands(sub)
    add_benchmark_command(sub)
    return parser


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """An old provider.toml key: one line, like the errors; other warnings as Python shows
    them."""
    if issubclass(category, DeprecatedKeyWarning):
        print(f"walnut-provider: warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
