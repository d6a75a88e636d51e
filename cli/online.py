"""``fraud online``: the online feature store (backfill from history, labels into the state)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd

    from fraud_detection.features.state.base import LabelOutcome

from cli.common import ColumnMapOpt, console, guarded, step

LOG = logging.getLogger("fraud")
app = typer.Typer(help="online commands.", no_args_is_help=True)

OnlineOpt = Annotated[
    str | None,
    typer.Option(
        "--online",
        help="Online store: redis://host:port/db, rediss://..., or a directory for the embedded store "
        "(default FRAUD_ONLINE_STORE).",
    ),
]
DelayOpt = Annotated[
    int | None,
    typer.Option("--label-delay-days", min=0, help="Label delay of the served model (default FRAUD_LABEL_DELAY_DAYS)."),
]


def _online_uri(online: str | None, *, required: bool = True) -> tuple[str, int, str | None] | None:
    """The online store of a command: ``--online``, else ``FRAUD_ONLINE_STORE``, with its delay and password.

    Args:
        online: ``--online``.
        required: Raise when none is configured (else return None).

    Returns:
        (URI, label delay, Redis password), or None when none is configured and it is not required.

    Raises:
        ValueError: None is configured and one is required.
    """
    from fraud_detection.settings import OnlineSettings

    settings = OnlineSettings()
    uri = online or settings.online_store
    if not uri:
        if not required:
            return None
        raise ValueError("no online store: give --online redis://host:port/db (or a directory), or FRAUD_ONLINE_STORE")
    password = settings.online_store_password.get_secret_value() if settings.online_store_password else None
    return uri, settings.label_delay_days, password


def apply_labels(labels: pd.DataFrame, online: str | None, *, required: bool = True) -> tuple[LabelOutcome, str] | None:
    """Add a validated label frame to the terminals' fraud counts in the online store.

    Args:
        labels: ``transaction_id``, ``is_fraud``.
        online: ``--online`` (else ``FRAUD_ONLINE_STORE``).
        required: Raise when no store is configured (else do nothing and return None).

    Returns:
        (what was applied, the store's URI), or None when no store is configured and it is not required.
    """
    from fraud_detection.features.state.uri import open_online_store
    from fraud_detection.monitoring.label_feed import record_labels

    target = _online_uri(online, required=required)
    if target is None:
        return None
    uri, delay, password = target
    store = open_online_store(uri, delay, password=password)
    try:
        receipt = record_labels(labels, store=None, online=store)
        assert receipt.online is not None  # an online store was given
        return receipt.online, store.uri
    finally:
        store.close()


@app.command("materialize")
def materialize_cmd(
    data: Annotated[Path, typer.Option("--data", help="Transaction history: CSV or Parquet (file or directory).")],
    online: OnlineOpt = None,
    column_map: ColumnMapOpt = None,
    label_delay_days: DelayOpt = None,
) -> None:
    """Load the online state from history, so the first live transaction's features equal the offline ones."""
    from fraud_detection.data import schema
    from fraud_detection.features.materialize import backfill
    from fraud_detection.features.state.uri import open_online_store

    def body() -> None:
        target = _online_uri(online)
        assert target is not None  # required: a missing store raised
        uri, default_delay, password = target
        delay = default_delay if label_delay_days is None else label_delay_days
        with step(f"reading {data}"):
            raw = schema.read_transactions(data, schema.parse_column_map(column_map))
        store = open_online_store(uri, delay, password=password)
        try:
            with step(f"building and loading the state of {len(raw):,} transactions into {store.uri}"):
                summary = backfill(raw, store)
        finally:
            store.close()
        console.print_json(json.dumps(asdict(summary) | {"online_store": store.uri, "label_delay_days": delay}))

    guarded(body)


@app.command("labels")
def labels_cmd(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with transaction_id, is_fraud (and reported_at).")],
    online: OnlineOpt = None,
) -> None:
    """Apply delayed labels (chargebacks) to the terminals' fraud counts in the online state."""
    from fraud_detection.monitoring.labels import read_label_file

    def body() -> None:
        labels = read_label_file(file)
        applied = apply_labels(labels, online)
        assert applied is not None  # required: a missing store raised
        outcome, uri = applied
        console.print_json(json.dumps(asdict(outcome) | {"online_store": uri}))

    guarded(body)
