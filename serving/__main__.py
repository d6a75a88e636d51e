"""``python -m serving``: the KServe predictor of the fraud detector.

    python -m serving --model_name fraud-detector --model_dir /mnt/models --http_port 8080 --grpc_port 8081
    python -m serving --store_uri s3://fraud/platform --model_ref production --http_port 8080 --grpc_port 8081

KServe's standard flags are accepted (``--http_port``, ``--grpc_port``, ``--enable_grpc``, ``--max_threads``, ...);
ours are listed by ``--help``. Flags default to ``FRAUD_*`` environment variables (the Helm chart sets them), read
through :class:`~fraud_detection.settings.ServeSettings`, see docs/SERVING.md. This is the only place that reads the
environment and configures logging.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import logging
import logging.config
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from fraud_detection.features.service import OnlineFeatures
from fraud_detection.features.state.uri import open_online_store
from fraud_detection.model.bundle import MANIFEST_FILE, Bundle, BundleIntegrityError, BundleTrust, load_bundle
from fraud_detection.model.registry import open_registry
from fraud_detection.monitoring.payload_log import PayloadLogConfig, PayloadLogger
from fraud_detection.monitoring.spool import spool_dir_for
from fraud_detection.settings import ServeSettings, settings_from
from fraud_detection.store.base import ArtifactStore
from fraud_detection.store.uri import open_configured_store

if TYPE_CHECKING:
    from serving.labels import LabelEndpoint
    from serving.model import FraudModel

LOG = logging.getLogger("serving")


def read_settings(env: Mapping[str, str]) -> ServeSettings:
    """The server's settings from an environment.

    Args:
        env: The environment (``os.environ`` in :func:`main`).

    Returns:
        The settings.

    Raises:
        pydantic.ValidationError: A ``FRAUD_*`` value is invalid.
    """
    return settings_from(ServeSettings, env)


def default_host(env: Mapping[str, str], settings: ServeSettings | None = None) -> str:
    """Bind address when ``--host`` is not given.

    ``FRAUD_SERVING_HOST`` wins; inside a Kubernetes pod (``KUBERNETES_SERVICE_HOST`` set) it is ``0.0.0.0`` so the
    kubelet and the Service can reach the container; everywhere else loopback only.

    Args:
        env: The environment.
        settings: The server's settings from that environment (read from it when None).

    Returns:
        The address.
    """
    settings = settings or read_settings(env)
    if settings.serving_host:
        return settings.serving_host
    return "0.0.0.0" if env.get("KUBERNETES_SERVICE_HOST") else "127.0.0.1"


def build_parser(env: Mapping[str, str], settings: ServeSettings | None = None) -> argparse.ArgumentParser:
    """The command line: KServe's ModelServer flags plus ours.

    Args:
        env: Environment supplying the defaults.
        settings: The server's settings from that environment (read from it when None).

    Returns:
        The parser.
    """
    import kserve.model_server

    settings = settings or read_settings(env)
    payload_log = {None: "auto", True: "on", False: "off"}[settings.payload_log_enabled]

    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve the fraud detector over KServe v1/v2 REST and v2 gRPC.",
        parents=[kserve.model_server.parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.set_defaults(model_name=settings.model_name)
    parser.add_argument("--model_dir", default=settings.model_dir, help="bundle directory (/mnt/models)")
    parser.add_argument("--host", default=default_host(env, settings), help="bind address of REST and gRPC")
    parser.add_argument(
        "--store_uri",
        # None unless configured: the payload log is on by default only when a store is given.
        default=settings.store_uri if "store_uri" in settings.model_fields_set else None,
        help="artifact store (directory or s3://bucket/prefix) for --model_ref and the payload log",
    )
    parser.add_argument("--s3_endpoint", default=None, help="S3 API endpoint (default FRAUD_S3_ENDPOINT)")
    parser.add_argument(
        "--model_ref",
        default=settings.model_ref,
        help="load this version or alias (production, canary, latest) from the store instead of --model_dir",
    )
    parser.add_argument("--cache_dir", default=None, help="where store downloads go (default FRAUD_CACHE_DIR)")
    parser.add_argument(
        "--trust_unsigned",
        action="store_const",
        const=True,
        default=settings.trust_unsigned,
        help="load bundles without a signature (development only; default FRAUD_TRUST_UNSIGNED, unset: only from "
        "a local directory when FRAUD_VERIFY_KEY is not set)",
    )
    parser.add_argument("--max_batch_size", type=int, default=settings.max_batch_size, help="rows per request")
    parser.add_argument(
        "--scorer",
        choices=("compiled", "sklearn"),
        default=settings.scorer,
        help="compiled numpy evaluator or scikit-learn",
    )
    parser.add_argument(
        "--payload_log",
        choices=("auto", "on", "off"),
        default=payload_log,
        help="log scored rows to the store (auto: when a store is configured)",
    )
    parser.add_argument(
        "--payload_log_uri",
        default=settings.payload_log_uri,
        help="store for the payload log (default --store_uri)",
    )
    parser.add_argument("--payload_log_flush_rows", type=int, default=settings.payload_log_flush_rows)
    parser.add_argument("--payload_log_flush_seconds", type=float, default=settings.payload_log_flush_seconds)
    parser.add_argument(
        "--payload_log_max_rows",
        type=int,
        default=settings.payload_log_max_rows,
        help="rows buffered at most; more are dropped and counted",
    )
    parser.add_argument(
        "--payload_log_identifiers",
        action=argparse.BooleanOptionalAction,
        default=settings.payload_log_identifiers,
        help="also log raw transaction/customer/terminal ids",
    )
    parser.add_argument(
        "--payload_log_spool_dir",
        default=settings.payload_log_spool_dir,
        help="local spool the payload log syncs every 0.1 s so a SIGKILL loses almost nothing (an emptyDir or PVC "
        "in a pod; default .fraud/spool/<model>/<store hash>; off: none)",
    )
    parser.add_argument(
        "--expected_version",
        default=settings.model_version,
        help="warn when the loaded bundle has another version",
    )
    parser.add_argument(
        "--online_store",
        default=settings.online_store,
        help="online feature store for raw transactions: redis://host:port/db or a directory (embedded store); "
        "without it raw transactions get a 400",
    )
    parser.add_argument(
        "--online_store_unavailable",
        choices=("reject", "degraded"),
        default=settings.online_store_unavailable,
        help="when the online store is down: 503, or score without history (marked degraded)",
    )
    parser.add_argument(
        "--max_body_bytes", type=int, default=settings.max_body_bytes, help="largest request body; above: 413"
    )
    parser.add_argument(
        "--max_amount",
        type=float,
        default=settings.max_amount,
        help="largest amount, in raw transactions and feature vectors",
    )
    parser.add_argument(
        "--enable_model_repository",
        action=argparse.BooleanOptionalAction,
        default=settings.enable_model_repository,
        help="serve KServe's model repository extension (unauthenticated model load/unload over REST and gRPC)",
    )
    parser.add_argument(
        "--expose_threshold",
        action=argparse.BooleanOptionalAction,
        default=settings.expose_threshold,
        help="report the decision threshold in responses and in fraud_serving_model_info",
    )
    parser.add_argument("--log_level", default=settings.log_level)
    parser.add_argument(
        "--access_log", action=argparse.BooleanOptionalAction, default=False, help="log every HTTP request"
    )
    return parser


def configure_logging(level: str, access_log: bool) -> None:
    """One stream handler for our, KServe's and uvicorn's loggers (KServe then skips its own setup).

    Args:
        level: Root level name.
        access_log: Keep uvicorn's per-request access log.
    """
    quiet = "WARNING" if level.upper() != "DEBUG" else "DEBUG"
    handler = {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"stderr": handler},
            "root": {"level": level.upper(), "handlers": ["stderr"]},
            "loggers": {
                # KServe configures logging itself unless its logger has a handler.
                "kserve": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
                "kserve.trace": {"level": quiet, "handlers": ["stderr"], "propagate": False},
                "uvicorn.access": {"level": "INFO" if access_log else "WARNING"},
                # The Azure SDK's per-request lines (the store's HTTP logger), unless debugging.
                "fraud_detection.store.azure.http": {"level": quiet},
            },
        }
    )


def find_bundle_dir(model_dir: Path) -> Path:
    """The bundle inside a model directory: the directory itself or its single bundle subdirectory.

    Args:
        model_dir: E.g. ``/mnt/models`` after KServe's storage initializer.

    Returns:
        The bundle directory.

    Raises:
        BundleIntegrityError: No bundle, or several.
    """
    if (model_dir / MANIFEST_FILE).is_file():
        return model_dir
    found = sorted(p.parent for p in model_dir.glob(f"*/{MANIFEST_FILE}"))
    if len(found) == 1:
        return found[0]
    what = "no bundle" if not found else f"{len(found)} bundles"
    raise BundleIntegrityError(f"model directory {model_dir}: {what} ({MANIFEST_FILE} not found at its top level)")


class LazyStore(ArtifactStore):
    """A store opened on first use, and again after a failure.

    A store that is down at startup then delays nothing and costs only payload-log rows (counted as dropped).

    Args:
        opener: Opens the store.
        uri: Its URI (for messages).
    """

    def __init__(self, opener: Callable[[], ArtifactStore], uri: str) -> None:
        self._opener = opener
        self._uri = uri
        self._store: ArtifactStore | None = None

    def _get(self) -> ArtifactStore:
        if self._store is None:
            self._store = self._opener()
        return self._store

    def write_bytes(self, key: str, data: bytes) -> None:  # noqa: D102
        try:
            self._get().write_bytes(key, data)
        except Exception:
            self._store = None
            raise

    def read_bytes(self, key: str) -> bytes:  # noqa: D102
        return self._get().read_bytes(key)

    def list(self, prefix: str) -> list[str]:  # noqa: D102
        return self._get().list(prefix)

    def delete(self, key: str) -> None:  # noqa: D102
        self._get().delete(key)

    def uri(self, key: str = "") -> str:  # noqa: D102
        return f"{self._uri.rstrip('/')}/{key}" if key else self._uri


def make_loader(args: argparse.Namespace, settings: ServeSettings) -> Callable[[], Bundle]:
    """How the model server gets its verified bundle.

    Args:
        args: Parsed flags.
        settings: The server's settings (store credentials).

    Returns:
        A loader.

    Raises:
        SystemExit: Neither ``--model_ref`` nor ``--model_dir`` is given.
    """
    trust_unsigned = getattr(args, "trust_unsigned", settings.trust_unsigned)
    if trust_unsigned is not None:
        settings = settings.model_copy(update={"trust_unsigned": trust_unsigned})
    if args.model_ref:
        uri = args.store_uri or settings.store_uri
        cache = Path(args.cache_dir or settings.cache_dir)

        def from_store() -> Bundle:
            registry = open_registry(settings, uri, args.model_name)  # checks signatures: FRAUD_VERIFY_KEY
            LOG.info("loading %s %s from %s", args.model_name, args.model_ref, uri)
            return registry.load(args.model_ref, cache)

        return from_store
    if args.model_dir:
        model_dir = Path(args.model_dir)
        trust = BundleTrust.from_config(settings.verify_key, settings.trust_unsigned, remote=False)
        return lambda: load_bundle(find_bundle_dir(model_dir), trust=trust)
    raise SystemExit("give --model_dir (a bundle directory) or --model_ref with --store_uri")


def make_payload_logger_factory(
    args: argparse.Namespace, settings: ServeSettings
) -> Callable[[str, Callable[[int], None]], PayloadLogger | None] | None:
    """The payload logger of the loaded version, or None when the payload log is off.

    Args:
        args: Parsed flags.
        settings: The server's settings (store credentials).

    Returns:
        A factory taking (model version, drop callback), or None.
    """
    uri = args.payload_log_uri or args.store_uri
    if args.payload_log == "off" or (args.payload_log == "auto" and not uri):
        LOG.info("payload log off%s", "" if args.payload_log == "off" else " (no store configured)")
        return None
    uri = uri or settings.store_uri
    config = PayloadLogConfig(
        flush_rows=args.payload_log_flush_rows,
        flush_seconds=args.payload_log_flush_seconds,
        max_buffer_rows=max(args.payload_log_max_rows, args.payload_log_flush_rows),
        log_identifiers=args.payload_log_identifiers,
        identifier_key=settings.identifier_key.get_secret_value().encode() if settings.identifier_key else None,
        spool_dir=spool_dir_for(getattr(args, "payload_log_spool_dir", None), args.model_name, uri),
        spool_max_bytes=settings.payload_log_spool_max_bytes,
    )
    store = LazyStore(lambda: open_configured_store(settings, uri), uri)

    def factory(version: str, on_drop: Callable[[int], None]) -> PayloadLogger:
        LOG.info(
            "payload log to %s/payload-logs/%s (identifiers %s, spool %s)",
            uri,
            args.model_name,
            config.log_identifiers,
            config.spool_dir or "off",
        )
        return PayloadLogger(store, args.model_name, version, config, on_drop=on_drop)

    return factory


def make_label_endpoint(model: FraudModel, args: argparse.Namespace, settings: ServeSettings) -> LabelEndpoint:
    """The label feed: labels go beside the payload log and into the online store.

    Stored only when a store is given (``--payload_log_uri``, else ``--store_uri``), as the payload log's ``auto``.

    Args:
        model: The served model.
        args: Parsed flags.
        settings: The server's settings (store credentials).

    Returns:
        The endpoint (it answers 400 when the server has neither store).
    """
    from serving.labels import LabelEndpoint

    uri = args.payload_log_uri or args.store_uri
    store = LazyStore(lambda: open_configured_store(settings, uri), uri) if uri else None
    return LabelEndpoint(model, store)


def make_online_factory(args: argparse.Namespace, settings: ServeSettings) -> Callable[[int], OnlineFeatures] | None:
    """The online features raw transactions are scored with, or None without ``--online_store``.

    Args:
        args: Parsed flags.
        settings: Serving settings (the Redis password).

    Returns:
        A factory taking the bundle's label delay.
    """
    if not args.online_store:
        return None
    password = settings.online_store_password.get_secret_value() if settings.online_store_password else None

    def factory(label_delay_days: int) -> OnlineFeatures:
        store = open_online_store(args.online_store, label_delay_days, password=password)
        LOG.info(
            "online feature store %s (label delay %d days; when unavailable: %s)",
            store.uri,
            label_delay_days,
            args.online_store_unavailable,
        )
        return OnlineFeatures(
            store, label_delay_days, degraded_when_unavailable=args.online_store_unavailable == "degraded"
        )

    return factory


def main(argv: list[str] | None = None) -> int:
    """Parse flags, load and warm up the model, then serve until SIGTERM/SIGINT.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        Exit status.
    """
    env = dict(os.environ)
    try:
        settings = read_settings(env)
    except ValidationError as exc:
        configure_logging("INFO", access_log=False)
        LOG.error("invalid FRAUD_* setting: %s", exc)
        return 2
    args = build_parser(env, settings).parse_args(argv)
    configure_logging(args.log_level, args.access_log)
    logging.captureWarnings(True)
    if args.access_log_format and importlib.util.find_spec("asgi_logger") is None:
        # KServe's flag needs the optional asgi-logger package, which the image does not ship
        LOG.error("--access_log_format needs the asgi-logger package (not installed); use --access_log for access logs")
        return 2

    import prometheus_client

    from fraud_detection.monitoring.telemetry import ServingMetrics
    from serving.model import FraudModel
    from serving.server import FraudModelServer

    if args.s3_endpoint:
        settings = settings.model_copy(update={"s3_endpoint": args.s3_endpoint})
    try:  # Application Insights (off unless APPLICATIONINSIGHTS_CONNECTION_STRING is set): before the servers exist
        import kserve.model_server

        from serving.telemetry import setup_app_insights

        setup_app_insights(env, kserve.model_server.app)
    except ValueError as exc:
        LOG.error("%s", exc)
        return 2
    try:
        loader = make_loader(args, settings)
    except SystemExit as exc:
        LOG.error("%s", exc)
        return 2
    model = FraudModel(
        args.model_name,
        loader,
        metrics=ServingMetrics.create(prometheus_client.REGISTRY),
        max_batch_size=args.max_batch_size,
        payload_logger_factory=make_payload_logger_factory(args, settings),
        compiled=args.scorer == "compiled",
        online_factory=make_online_factory(args, settings),
        max_amount=args.max_amount,
        expose_threshold=args.expose_threshold,
    )
    try:
        model.load()
    except Exception:
        LOG.exception("cannot load the model; not serving")
        return 1
    version = model.loaded.version if model.loaded else ""
    if args.expected_version and args.expected_version != version:
        LOG.warning("expected model version %s but the bundle is %s", args.expected_version, version)
    try:
        server = FraudModelServer(
            model,
            labels=make_label_endpoint(model, args, settings),
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            workers=args.workers,
            max_threads=args.max_threads,
            max_asyncio_workers=args.max_asyncio_workers,
            enable_grpc=args.enable_grpc,
            enable_docs_url=args.enable_docs_url,
            max_body_bytes=args.max_body_bytes,
            enable_model_repository=args.enable_model_repository,
            enable_latency_logging=False,
            access_log_format=args.access_log_format,
            event_loop=args.event_loop,
            timeout_keep_alive=args.timeout_keep_alive,
        )
    except ValueError as exc:
        LOG.error("%s", exc)
        return 2
    # Everything alive now (modules, the model, the app) lives as long as the process: keep it out of the
    # collector's scans, so a full collection while serving walks only request garbage (default bundle, raw
    # requests at c=1: the slowest took 120-130 ms, a full collection; frozen, 20-25 ms).
    gc.collect()
    gc.freeze()
    server.start([model])
    return 0


if __name__ == "__main__":
    sys.exit(main())
