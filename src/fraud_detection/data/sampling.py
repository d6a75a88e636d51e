"""A bounded, weighted training sample: every fraud, a deterministic sample of legitimate rows, inverse-rate weights.

A legitimate row is kept when ``u(transaction_id) < rate``, where ``u`` is a hash of the id's text mapped to [0, 1):
the same row is always in or out, whatever the partitioning, the batch order or the engine that wrote the features
(the Spark engine writes ids as text, the in-memory one as integers: both hash the same text). A kept legitimate row
weighs ``1 / rate``, a fraud 1, so weighted sums estimate the unsampled population's.

With ``max_rows`` the rate is derived from the window's row count before any feature is read (Parquet footers, or
the event-time column alone where they cannot tell), and the sample never holds more than ``max_rows`` legitimate
rows: when it would (the count includes the frauds, and sampling is random), it keeps the ``max_rows`` lowest ``u``
and the rate becomes the next one (a k-minimum-values estimate).

With ``max_frauds`` the frauds are capped the same way (their own rate, from the lowest ``u`` of the frauds; a kept
fraud weighs ``1 / fraud_rate``): every fraud is kept until a history holds more than that, and then the sample's
memory stays flat however many frauds the history has. Off by default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fraud_detection.data import schema
from fraud_detection.data.feature_dataset import BATCH_ROWS, TRAINING_COLUMNS, scan, time_filter, to_frame, window_rows

LOG = logging.getLogger(__name__)

#: :data:`fraud_detection.data.schema.SAMPLE_WEIGHT`, the weight column this module writes.
WEIGHT = schema.SAMPLE_WEIGHT
_U = "_u"
#: The hash's 16-byte key: fixed, so a row's draw is the same in every run and on every machine.
_HASH_KEY = "fraudlegitsample"


@dataclass(frozen=True)
class SampleSpec:
    """How to sample legitimate rows.

    Attributes:
        legit_rate: Share of legitimate rows kept, in (0, 1]; 1 keeps all.
        max_rows: Most legitimate rows kept (the rate is lowered to fit); None for no cap.
        max_frauds: Most frauds kept (a deterministic sample, weighted); None keeps every fraud.
    """

    legit_rate: float = 1.0
    max_rows: int | None = None
    max_frauds: int | None = None

    def __post_init__(self) -> None:
        """Reject invalid values with a message naming them."""
        if not 0.0 < self.legit_rate <= 1.0:
            raise ValueError(f"legit sampling rate must be in (0, 1], got {self.legit_rate}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {self.max_rows}")
        if self.max_frauds is not None and self.max_frauds < 1:
            raise ValueError(f"max_frauds must be at least 1, got {self.max_frauds}")

    @property
    def samples(self) -> bool:
        """Whether this spec may drop rows (else the reader keeps everything and adds no weights)."""
        return self.legit_rate < 1.0 or self.max_rows is not None or self.max_frauds is not None


@dataclass(frozen=True)
class WeightedSample:
    """A window's training rows.

    Attributes:
        frame: Every fraud and the sampled legitimate rows, with :data:`WEIGHT` when sampled.
        rate: The legitimate sampling rate finally applied (1 for none).
        window_rows: Rows of the window, counted before reading.
        scanned_rows: Rows of the window actually scanned.
        fraud_rate: The fraud sampling rate finally applied (1: every fraud kept).
    """

    frame: pd.DataFrame
    rate: float
    window_rows: int
    scanned_rows: int
    fraud_rate: float = 1.0

    def description(self) -> dict[str, float]:
        """The rates and the window's size, as a bundle's parameters record how its training rows were sampled."""
        return {"legit_rate": self.rate, "fraud_rate": self.fraud_rate, "window_rows": float(self.window_rows)}


def uniform_of_ids(ids: pa.Array | pa.ChunkedArray | pd.Series) -> np.ndarray:
    """A deterministic value in [0, 1) per transaction id, from a hash of the id's text.

    Args:
        ids: Transaction ids (integers or text; an integer and its decimal text get the same value).

    Returns:
        float64 values, uniform over ids.
    """
    arrow = pa.array(ids) if isinstance(ids, pd.Series) else ids
    text = pc.cast(arrow, pa.string()).to_numpy(zero_copy_only=False)
    hashed = pd.util.hash_array(text.astype(object), hash_key=_HASH_KEY, categorize=False)
    return (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def initial_rate(spec: SampleSpec, window_rows: int) -> float:
    """The legitimate sampling rate before reading: ``legit_rate``, lowered to ``max_rows / window_rows``.

    Args:
        spec: The sampling spec.
        window_rows: Rows of the window (see :func:`~fraud_detection.data.feature_dataset.window_rows`).

    Returns:
        A rate in (0, 1].
    """
    rate = spec.legit_rate
    if spec.max_rows is not None and window_rows > spec.max_rows:
        rate = min(rate, spec.max_rows / window_rows)
    return rate


def _trim(kept: pa.Table, max_rows: int, rate: float, *, frauds: bool = False) -> tuple[pa.Table, float]:
    """Keep the ``max_rows`` rows of lowest ``u`` of one class and the other whole; return them and the class's rate.

    The class is the legitimate rows, or the frauds with ``frauds``. When it holds more than ``max_rows`` rows, the
    new rate is the next lowest ``u``: then exactly the kept rows of the class have ``u < rate``, and
    ``max_rows / rate`` estimates the class's rows the sample was drawn from (k-minimum values); else ``rate`` stays.
    """
    fraud = np.asarray(kept.column(schema.LABEL).to_numpy(), dtype=np.int64) == 1
    mine = fraud if frauds else ~fraud
    u = np.asarray(kept.column(_U).to_numpy())
    if int(mine.sum()) <= max_rows:
        return kept, rate
    rate = float(np.partition(u[mine], max_rows)[max_rows])
    return kept.filter(pa.array(~mine | (u < rate))), rate


def read_sample(
    dataset: ds.Dataset,
    start: pd.Timestamp,
    end: pd.Timestamp,
    spec: SampleSpec,
    batch_rows: int = BATCH_ROWS,
) -> WeightedSample:
    """Read a time window in bounded memory: every fraud, a deterministic sample of the legitimate rows.

    Memory holds the scan's batches (about two of ``batch_rows`` rows, and one Parquet row group) plus at most
    ``2 * max_rows`` legitimate rows and the window's frauds (at most ``2 * max_frauds`` of them), whatever the
    window's size.

    Args:
        dataset: From :func:`fraud_detection.data.feature_dataset.open_features`.
        start: Inclusive start of the window (UTC).
        end: Exclusive end (UTC).
        spec: The sampling spec.
        batch_rows: Rows per scanned batch.

    Returns:
        The sample; its frame carries :data:`WEIGHT` (``1 / fraud_rate`` for frauds, 1 unless they are capped;
        ``1 / rate`` for legitimate rows) when ``spec`` samples.
    """
    where = time_filter(dataset, start, end)
    counted = window_rows(dataset, start, end)
    rate = initial_rate(spec, counted)
    LOG.info("window %s..%s: %d rows, legitimate rate %.4g", start, end, counted, rate)
    parts: list[pa.Table] = []
    legit_held, fraud_held, scanned, fraud_rate = 0, 0, 0, 1.0
    for batch in scan(dataset, where, batch_rows=batch_rows):
        scanned += batch.num_rows
        table = pa.Table.from_batches([batch])
        if spec.samples:
            u = uniform_of_ids(batch.column(schema.TRANSACTION_ID))
            fraud = np.asarray(batch.column(schema.LABEL).to_numpy(zero_copy_only=False)) == 1
            keep = np.where(fraud, u < fraud_rate, u < rate)
            table = table.append_column(_U, pa.array(u)).filter(pa.array(keep))
            legit_held += int((keep & ~fraud).sum())
            fraud_held += int((keep & fraud).sum())
        parts.append(table)
        if spec.max_rows is not None and legit_held > 2 * spec.max_rows:
            merged, rate = _trim(pa.concat_tables(parts), spec.max_rows, rate)
            parts, legit_held = [merged], spec.max_rows
        if spec.max_frauds is not None and fraud_held > 2 * spec.max_frauds:
            merged, fraud_rate = _trim(pa.concat_tables(parts), spec.max_frauds, fraud_rate, frauds=True)
            parts, fraud_held = [merged], spec.max_frauds
    table = pa.concat_tables(parts) if parts else dataset.schema.empty_table().select(list(TRAINING_COLUMNS))
    if spec.max_rows is not None and table.num_rows:
        table, rate = _trim(table, spec.max_rows, rate)
    if spec.max_frauds is not None and table.num_rows:
        table, fraud_rate = _trim(table, spec.max_frauds, fraud_rate, frauds=True)
    frame = to_frame(table.drop_columns([_U]) if _U in table.column_names else table)
    if spec.samples:
        frame[WEIGHT] = np.where(frame[schema.LABEL].to_numpy() == 1, 1.0 / fraud_rate, 1.0 / rate)
    LOG.info(
        "sampled %d of %d rows (%d fraud), legitimate rate %.4g, fraud rate %.4g",
        len(frame),
        scanned,
        int(frame[schema.LABEL].sum()),
        rate,
        fraud_rate,
    )
    return WeightedSample(frame=frame, rate=rate, window_rows=counted, scanned_rows=scanned, fraud_rate=fraud_rate)


def read_window(
    dataset: ds.Dataset, start: pd.Timestamp, end: pd.Timestamp, *, frauds_only: bool = False
) -> pd.DataFrame:
    """Read every row of a time window (or only its frauds), unsampled.

    Args:
        dataset: From :func:`fraud_detection.data.feature_dataset.open_features`.
        start: Inclusive start (UTC).
        end: Exclusive end (UTC).
        frauds_only: Keep only rows labelled fraud (filter pushed down to the scan).

    Returns:
        The rows.
    """
    where = time_filter(dataset, start, end)
    if frauds_only:
        where &= ds.field(schema.LABEL) == 1
    parts = [pa.Table.from_batches([batch]) for batch in scan(dataset, where)]
    table = pa.concat_tables(parts) if parts else dataset.schema.empty_table().select(list(TRAINING_COLUMNS))
    return to_frame(table)
