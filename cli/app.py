"""The ``fraud`` command: a thin adapter from flags and files to :mod:`fraud_detection`."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.logging import RichHandler
from rich.table import Table

from cli import data as cli_data
from cli import keys as cli_keys
from cli import model as cli_model
from cli import monitoring as cli_monitoring
from cli import online as cli_online
from cli import pipeline as cli_pipeline
from cli import rollout as cli_rollout
from cli.common import StoreOpt, console, err_console, guarded, settings_for, step

app = typer.Typer(
    name="fraud",
    help="Real-time payment fraud detection: simulate, train, evaluate, serve, monitor.",
    no_args_is_help=True,
)
cli_data.register(app)
cli_model.register(app)
app.add_typer(
    cli_pipeline.app, name="pipeline", help="Kubeflow training pipeline: compile, run locally, submit, schedule."
)
app.add_typer(cli_rollout.app, name="rollout", help="Canary rollout with Prometheus-gated promotion or rollback.")
app.add_typer(cli_online.app, name="online", help="Online feature store of raw-transaction scoring: backfill, labels.")
app.add_typer(cli_keys.app, name="keys", help="Ed25519 keys that sign and verify model bundles.")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Configure logging for every command."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("urllib3", "matplotlib", "PIL", "fraud_detection.store.azure.http"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def demo(
    store: StoreOpt = None,
    work_dir: Annotated[Path, typer.Option(help="Where pipeline runs, logs and reports go.")] = Path(".fraud"),
    rows: Annotated[int, typer.Option(min=100, help="Transactions replayed through the model server.")] = 5_000,
) -> None:
    """End to end on the embedded defaults: the training pipeline (kfp.local), then serve, score and monitor."""
    from cli.demo import serve_and_monitor
    from cli.pipeline import run_cmd

    settings = settings_for(store)
    store_uri = settings.store_uri if "://" in settings.store_uri else str(Path(settings.store_uri).resolve())
    run_cmd(store=store_uri, work_dir=work_dir / "pipeline", simulate=True)

    def body() -> None:
        with step("serving the production model, replaying drifted traffic, running the drift job"):
            outcome = serve_and_monitor(store_uri, work_dir / "demo", rows)
        traffic, drift = outcome["traffic"], outcome["drift"]
        table = Table(title="laptop end to end: serve and monitor")
        table.add_column("what")
        table.add_column("result")
        table.add_row(
            "scored",
            f"{traffic.rows:,} raw transactions (id, time, card, terminal, amount) in {traffic.requests} v2 REST "
            "requests, features computed on the server from the online store",
        )
        table.add_row(
            "served = offline features",
            f"{traffic.features_equal:,} of {traffic.rows:,} rows "
            f"(largest difference {traffic.max_feature_difference:.1e})",
        )
        table.add_row("flagged", f"{traffic.flagged:,} ({traffic.caught} of {traffic.true_fraud} frauds caught)")
        seed = traffic.seed_response["predictions"][0]
        table.add_row("original project's v1 body", json.dumps({k: seed[k] for k in ("fraud_score", "is_fraud")}))
        codes = next(o for o in traffic.explained["outputs"] if o["name"] == "reason_codes")["data"][0]
        table.add_row(
            "reason codes (largest amount)",
            ", ".join(f"{c['feature']} {c['contribution']:+.3f}" for c in json.loads(codes)),
        )
        for version in drift.versions:
            d = version.drift
            drifted = [f.column for f in d.features if f.drifted]
            table.add_row(
                f"drift of {version.model_version}",
                "window too small"
                if d.too_small
                else f"{d.drifted_share:.0%} of features drifted (dataset drift {d.dataset_drifted}): "
                + ", ".join(drifted),
            )
            if version.report_key:
                table.add_row("Evidently report", f"{store_uri}/{version.report_key}")
        for reason in drift.retrain_reasons:
            table.add_row("retrain trigger", reason)
        console.print(table)

    guarded(body)


cli_monitoring.register(app)


def run(argv: list[str] | None = None) -> int:
    """Console-script entry point: a bad flag or value is one ``error:`` line and exit 2, not a usage box.

    Args:
        argv: Arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    # OpenMP threads (HistGradientBoosting) that wait for work sleep instead of spinning: on a shared or small
    # machine, spinning threads made a 10 s training fold take minutes (docs/PERFORMANCE.md, "Training threads").
    # Read once, when scikit-learn first loads OpenMP, which happens after this point; a user's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # click's UsageError, whichever click typer runs on (its own vendored copy in recent versions).
    usage_error: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        result = app(args=argv, prog_name="fraud", standalone_mode=False)
    except usage_error as exc:
        message = " ".join(exc.format_message().split())
        if message:  # empty: a group called without a command, whose help was just shown
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            err_console.print(f"error: {message}{where}", markup=False, highlight=False, soft_wrap=True)
        return int(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted", markup=False)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(run())
