"""``nncert serve``: run the verification service with uvicorn.

Registered by ``verifier/cli`` through :func:`add_serve_command`; fastapi and uvicorn are
imported only when the command runs. With no API keys configured the server refuses to bind
anything but a loopback address.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_serve_command(subparsers, common: argparse.ArgumentParser | None = None) -> None:
    """Add ``serve`` to an argparse subparsers object (``common``: shared parent options)."""
    p = subparsers.add_parser(
        "serve", parents=[common] if common is not None else [],
        help="run the HTTP verification service",
        description="Run the verification service (REST API under /v1, docs at /docs).")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (non-loopback needs API keys; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="job store and artifacts (default $NNCERT_DATA_DIR or ./nncert-data)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default 1)")
    p.add_argument("--executor", choices=["local", "ray"], default=None,
                   help="where jobs run: a local process pool (default) or Ray tasks")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster for --executor ray: HOST:PORT of the head, "
                        "ray://HOST:10001, auto, or local (default: a private local instance)")
    p.add_argument("--job-memory-mb", type=int, default=None, metavar="MIB",
                   help="memory limit of each job (resident set size; default 4096)")
    p.add_argument("--max-job-memory-mb", type=int, default=None, metavar="MIB",
                   help="the most a job may ask for with the memory_mb option (default 16384)")
    p.add_argument("--api-keys-file", type=Path, default=None,
                   help="file with one API key a line (also $NNCERT_API_KEYS[_FILE])")
    p.add_argument("--admin-keys-file", type=Path, default=None,
                   help="file with one admin API key a line: these keys see every caller's "
                        "jobs and models (also $NNCERT_ADMIN_KEYS)")
    p.add_argument("--max-request-mb", type=int, default=None,
                   help="largest accepted request body, in MiB")
    p.add_argument("--rate-limit", type=float, default=None, metavar="PER_S",
                   help="requests a second per API key (or client address); 0 = off (default)")
    p.add_argument("--rate-burst", type=int, default=None,
                   help="requests a caller may make at once before the rate applies")
    p.set_defaults(run=serve_main)


def settings_from_args(args: argparse.Namespace):
    """Settings from the environment, then the command line."""
    from server.settings import MIB, Settings
    from verifier.cli.common import UsageError

    overrides: dict = {"host": args.host, "port": args.port}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    if args.workers is not None:
        overrides["workers"] = args.workers
    for name in ("executor", "ray_address", "job_memory_mb", "max_job_memory_mb"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if args.max_request_mb is not None:
        overrides["max_request_bytes"] = args.max_request_mb * MIB
    if getattr(args, "rate_limit", None) is not None:
        overrides["rate_limit_per_s"] = args.rate_limit
    if getattr(args, "rate_burst", None) is not None:
        overrides["rate_limit_burst"] = args.rate_burst
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        raise UsageError(f"invalid settings: {exc}") from None
    if settings.ray_address and settings.executor != "ray":
        raise UsageError("--ray-address needs --executor ray")
    for option, field in (("api_keys_file", "api_key_hashes"),
                          ("admin_keys_file", "admin_key_hashes")):
        path = getattr(args, option, None)
        if path is not None:
            keys = _read_keys(path, "--" + option.replace("_", "-"))
            settings = settings.model_copy(
                update={field: getattr(settings, field) + Settings.hashed(keys)})
    if not settings.auth_required and not is_loopback(settings.host):
        raise UsageError(f"refusing to bind {settings.host} without API keys: configure keys "
                         "(--api-keys-file or NNCERT_API_KEYS) or bind 127.0.0.1")
    return settings


def _read_keys(path: Path, option: str) -> list[str]:
    """The keys of a key file, one a line (a usage error when it cannot be read)."""
    from verifier.cli.common import UsageError

    try:
        return path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {option}: {exc.strerror or exc}") from None


def serve_main(args: argparse.Namespace) -> int:
    """Run the service until interrupted; the exit status."""
    from verifier.cli.common import UsageError

    try:
        import uvicorn

        from server.app import create_app
    except ImportError as exc:
        raise UsageError(f"nncert serve needs the server extra (pip install 'nncert[server]'): "
                         f"{exc}") from None
    settings = settings_from_args(args)
    log.info("serving on http://%s:%d (data in %s)", settings.host, settings.port,
             settings.data_dir)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="info" if getattr(args, "verbose", 0) else "warning")
    return 0
