"""``fraud online``: the online feature store (backfill from history, labels into the state)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

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


def _online_uri(online: str | None) -> tuple[str, int, str | None]:
    from fraud_detection.settings import OnlineSettings

    settings = OnlineSettings()
    uri = online or settings.online_store
    if not uri:
        raise ValueError("no online store: give --online redis://host:port/db (or a directory), or FRAUD_ONLINE_STORE")
    password = settings.online_store_password.get_secret_value() if settings.online_store_password else None
    return uri, settings.label_delay_days, password


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
        uri, default_delay, password = _online_uri(online)
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
    from fraud_detection.features.state.uri import open_online_store
    from fraud_detection.monitoring.labels import read_label_file

    def body() -> None:
        uri, delay, password = _online_uri(online)
        labels = read_label_file(file)
        store = open_online_store(uri, delay, password=password)
        try:
            outcome = store.apply_labels(
                list(zip(labels["transaction_id"].astype(str), labels["is_fraud"].astype(int), strict=True))
            )
        finally:
            store.close()
        console.print_json(json.dumps(asdict(outcome) | {"online_store": store.uri}))

    guarded(body)
