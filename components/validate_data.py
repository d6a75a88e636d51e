"""Component ``validate_data``: the data contract and data-quality checks; bad data fails the run here."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def validate_data(
    raw: Input[Dataset],
    validated: Output[Dataset],
    column_map: str = "",
    window_end: str = "",
    window_days: int = 0,
    # fraud_detection.data.splits.TRAINING_SPLIT, as literals: KFP ships this source alone (tests check they match).
    train_days: int = 28,
    test_days: int = 14,
    delay_days: int = 7,
    min_rows: int = 1_000,
) -> None:
    """Check raw transactions against the contract, cut the data window, and check it can train and test a model.

    Args:
        raw: Output of ``ingest_data`` (one CSV/Parquet file, or Parquet files).
        validated: Normalised transactions of the window (Parquet), sorted by event time.
        column_map: Source-to-contract renames, ``SRC=DST`` pairs separated by commas.
        window_end: Exclusive end of the data window (ISO date/time, UTC); empty for the day after the last event.
        window_days: Days in the window before ``window_end``; 0 for all the data.
        train_days: Most recent days the training step will train on (0 for all before the delay window).
        test_days: Held-out test days the training step will use.
        delay_days: Label delay between training and test.
        min_rows: Fewest transactions accepted in the window.

    Raises:
        SchemaError: The data breaks the contract or is unfit for training; the message names the problem.
    """
    from pathlib import Path

    from fraud_detection.data import schema
    from fraud_detection.data.window import training_window

    files = sorted(p for p in Path(raw.path).rglob("*") if p.is_file())
    mapping = schema.parse_column_map([p.strip() for p in column_map.split(",") if p.strip()])
    frame = schema.read_transactions(files[0] if len(files) == 1 else raw.path, mapping, require_label=True)
    frame = training_window(
        frame,
        window_end=window_end,
        window_days=window_days,
        train_days=train_days,
        test_days=test_days,
        delay_days=delay_days,
        min_rows=min_rows,
    )
    schema.write_frame(frame, validated.path)
    times = frame[schema.EVENT_TIME]
    stats = {"rows": len(frame), "fraud_rate": float(frame[schema.LABEL].mean())}
    validated.metadata.update({**stats, "start": str(times.min()), "end": str(times.max())})
