"""`fraud monitoring` commands (bodies import their adapters lazily, so the core CLI stays light)."""

from __future__ import annotations

import typer

labels_app = typer.Typer(help="Delayed labels (chargebacks).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the monitoring commands (``drift``, ``labels``) to the main app.

    Args:
        app: The ``fraud`` Typer app.
    """
    app.add_typer(labels_app, name="labels")
