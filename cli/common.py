"""What every ``fraud`` command shares: consoles, clear errors for expected failures, progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pandas as pd
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from fraud_detection.data import schema
from fraud_detection.model.bundle import BundleIntegrityError
from fraud_detection.model.registry import RegistryError
from fraud_detection.settings import PipelineSettings
from fraud_detection.store.base import StoreError

# `fraud drift` and `fraud labels` are registered from cli_monitoring.
T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)

EXPECTED_ERRORS = (
    schema.SchemaError,
    StoreError,
    RegistryError,
    BundleIntegrityError,
    ValueError,
    # a user's path: unwritable (/proc, read-only), not a directory, permission denied; also an unreachable store
    OSError,
)

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="Store: a directory or s3://bucket/prefix (default FRAUD_STORE_URI)."),
]
ColumnMapOpt = Annotated[
    list[str] | None, typer.Option("--column-map", help="Rename a source column: SRC=DST (repeatable).")
]


def guarded(fn: Callable[[], T], also: tuple[type[Exception], ...] = ()) -> T:
    """Run a command body; turn an expected error into a clear message and exit code 2.

    Args:
        fn: The command body.
        also: Further exception types a command group expects (e.g. a failed pipeline step).

    Returns:
        Its result.
    """
    expected: tuple[type[Exception], ...] = (*EXPECTED_ERRORS, *also)
    try:
        return fn()
    except expected as exc:
        err_console.print(f"[bold red]error:[/] {_one_line(exc)}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from exc


def check_writable_dir(directory: Path, what: str) -> None:
    """Refuse, before any work, an output whose directory cannot be created or written (``/proc``, read-only).

    The nearest existing ancestor must be a directory in which a file can be created (tried for real, with a
    temporary file that is removed at once: permission bits say nothing for root or read-only mounts). Nothing is
    left behind and no directory is created.

    Args:
        directory: Where the output goes (it may not exist yet).
        what: The option and value, as the message names them.

    Raises:
        ValueError: The directory, or its nearest existing ancestor, cannot take a new file.
    """
    import tempfile

    ancestor = directory.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{what}: {ancestor} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=ancestor, prefix=".fraud-write-check-"):
            pass
    except OSError as exc:
        raise ValueError(f"{what}: cannot write in {ancestor}: {exc.strerror or exc}") from exc


def check_outputs(*outputs: tuple[str, Path | None], directory: bool = False) -> None:
    """Check ``--option path`` outputs before any work: files (or folders) that can be written.

    Args:
        *outputs: (option name, path or None when not given) pairs.
        directory: The outputs are folders (an existing file there is refused) rather than files.

    Raises:
        ValueError: An output is of the wrong kind or cannot be written.
    """
    for option, path in outputs:
        if path is None:
            continue
        what = f"{option} {path}"
        if directory and path.exists() and not path.is_dir():
            raise ValueError(f"{what}: is a file, give a directory")
        if not directory and path.is_dir():
            raise ValueError(f"{what}: is a directory, give a file name")
        check_writable_dir(path if directory and path.is_dir() else path.parent, what)


def _one_line(exc: BaseException) -> str:
    """The message of an expected error on one line (rich markup in it escaped)."""
    from rich.markup import escape

    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}"
    else:
        text = str(exc) or type(exc).__name__
    return escape(" ".join(text.split()))


@contextmanager
def step(description: str) -> Iterator[None]:
    """Show a spinner with elapsed time while a long step runs.

    Args:
        description: What is running.
    """
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=1)
        yield
        progress.update(task, completed=1, description=f"[green]✓[/] {description}")


def settings_for(store: str | None = None) -> PipelineSettings:
    """The settings of a training, model or pipeline command, with ``--store`` (when given) for ``FRAUD_STORE_URI``."""
    settings = PipelineSettings()
    return settings.model_copy(update={"store_uri": store}) if store else settings


def load_features(data: Path, column_map: list[str] | None, label_delay_days: int) -> pd.DataFrame:
    """Read a features file as is, or raw transactions and build their features."""
    from fraud_detection.features.offline import FeatureConfig, build_features

    if data.suffix == ".parquet" and data.is_file():
        import pyarrow.parquet as pq

        try:
            columns = set(pq.read_schema(data).names)  # the footer only
        except Exception as exc:
            raise schema.SchemaError(
                f"input {data}: not a readable Parquet file: {' '.join(str(exc).split())}"
            ) from exc
        if set(schema.FEATURES) <= columns:
            frame = schema.read_parquet_file(data)  # checked and validated in full
            if frame.empty:
                raise schema.SchemaError(f"input {data}: no rows")
            schema.validate_feature_frame(frame)
            return frame
    with step(f"reading {data}"):
        raw = schema.read_transactions(data, schema.parse_column_map(column_map), require_label=True)
    with step(f"building features for {len(raw):,} transactions"):
        return build_features(raw, FeatureConfig(label_delay_days=label_delay_days))


def advance(progress: Progress, task: Any) -> Callable[[int], None]:
    """A callback that advances a progress bar's task by one step per call."""

    def advance(_fold: int) -> None:
        progress.advance(task)

    return advance
