"""Bounded-memory training: every fraud plus a weighted sample of the legitimate rows, against all the rows.

Run: ``.venv/bin/python -m bench.sampling_bench`` (the simulator's default 5,000 customers, 10,000 terminals, 183 days;
``--scale 2`` doubles customers and terminals). It simulates, builds the features in memory and writes them as one
Parquet file (``fraud features``) and as day partitions (the layout of ``fraud features --engine spark``), then runs
each training in its own process (its peak RSS is its own, ``VmHWM``; the RSS after imports is given beside it):

* quality: the training step of ``fraud train`` (hgb, 28 training days, 7-day delay, 14 test days) on all the rows
  (the whole file read in memory, as before) and on every fraud plus 10 % and 2 % of the legitimate rows
  (``--sample-legit``), each scored on the same **unsampled** test window: AP, ROC AUC, expected calibration error,
  Brier score, training time (reading included), peak RSS;
* memory: ``--max-rows`` fixed, all the history trained on (``train_days`` None, the largest window), on feature
  sets of 1x, 3x and 6x the default history. The 3x and 6x sets are the 1x day partitions repeated back to back
  (dates shifted by the history's span, transaction and card ids offset), so the rows are real features and only
  the amount grows.

Results go to the section "Bounded-memory training" of docs/PERFORMANCE.md unless ``--no-docs``; ``--plot PATH``
writes a reliability diagram (PNG).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import update_section

LOG = logging.getLogger("bench.sampling")
SECTION = "Bounded-memory training"
COMMAND = ".venv/bin/python -m bench.sampling_bench"
#: Equal-count score bins of the calibration error and the reliability diagram.
BINS = 20


def _status_gib(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``, ``VmHWM``: the peak RSS of this process image), in GiB.

    Not ``ru_maxrss``: Linux carries it across ``execve``, so a child forked from a large parent would report the
    parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def calibration(scores: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Expected calibration error over equal-count score bins, the Brier score, and the reliability curve.

    Args:
        scores: Calibrated scores.
        labels: 0/1 labels.
        bins: Number of bins (equal numbers of rows: fraud scores crowd near 0, equal-width bins would hold
            almost every row in the first one).

    Returns:
        ``ece`` (sum over bins of the bin's share of rows times |mean score - fraud rate|), ``brier``, and the
        per-bin ``mean_score`` and ``fraud_rate`` lists.
    """
    order = np.argsort(scores, kind="stable")
    parts = np.array_split(order, bins)
    mean_score = [float(scores[p].mean()) for p in parts]
    fraud_rate = [float(labels[p].mean()) for p in parts]
    ece = sum(len(p) / len(scores) * abs(m - r) for p, m, r in zip(parts, mean_score, fraud_rate, strict=True))
    # The diagram's curve: log-spaced score bins (fine where the frauds are), those holding at least 30 rows.
    edges = np.geomspace(1e-4, 1.0, 21)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, len(edges) - 2)
    curve = [
        (float(scores[which == b].mean()), float(labels[which == b].mean()), int((which == b).sum()))
        for b in range(len(edges) - 1)
        if (which == b).sum() >= 30
    ]
    return {
        "ece": float(ece),
        "brier": float(np.mean((scores - labels) ** 2)),
        "mean_score": mean_score,
        "fraud_rate": fraud_rate,
        "curve": curve,
    }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One training in this process: read, train, score the unsampled test window; print the measures."""
    import pandas as pd

    from fraud_detection.data import schema
    from fraud_detection.data.sampled_split import read_sampled_holdout
    from fraud_detection.data.sampling import SampleSpec
    from fraud_detection.data.window import holdout_split
    from fraud_detection.model.metrics import compute_metrics
    from fraud_detection.model.train import TrainConfig, score, scorer_for, train

    baseline = _status_gib("VmRSS")
    days = {"test_days": 14, "delay_days": 7, "train_days": spec["train_days"]}
    t0 = time.perf_counter()
    if spec["loader"] == "whole":
        split = holdout_split(pd.read_parquet(spec["path"]), **days)
        rate, window = 1.0, len(split.train)
    else:
        held = read_sampled_holdout(
            spec["path"], SampleSpec(legit_rate=spec["rate"], max_rows=spec["max_rows"]), **days
        )
        split, rate, window = held.split, held.sample.rate, held.sample.window_rows
    read_seconds = time.perf_counter() - t0
    config = TrainConfig(max_iter=spec["max_iter"])
    result = train(split.train, config)
    train_seconds = time.perf_counter() - t0
    test_scores = score(scorer_for(result.model, result.threshold), split.test)
    labels = split.test[schema.LABEL].to_numpy()
    metrics = compute_metrics(split.test, test_scores, result.threshold, config.review_cost)
    return {
        **spec,
        "applied_rate": rate,
        "window_rows": int(window),
        "train_rows": len(split.train),
        "train_fraud": int(split.train[schema.LABEL].sum()),
        "test_rows": len(split.test),
        "test_fraud_rate": float(labels.mean()),
        "average_precision": metrics.average_precision,
        "roc_auc": metrics.roc_auc,
        "card_precision_at_100": metrics.card_precision_at_100,
        "threshold": result.threshold,
        "expected_cost": metrics.expected_cost,
        **calibration(test_scores, labels),
        "read_seconds": read_seconds,
        "train_seconds": train_seconds,
        "baseline_rss_gib": baseline,
        "peak_rss_gib": _status_gib("VmHWM"),
    }


def run(spec: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """One training in a fresh process (with ``threads`` OpenMP/BLAS threads, else the library defaults)."""
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(
        [sys.executable, "-m", "bench.sampling_bench", "--child", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    LOG.info(
        "%s: AP %.4f, ECE %.5f, %.0f s, %.2f GiB",
        spec["name"],
        result["average_precision"],
        result["ece"],
        result["train_seconds"],
        result["peak_rss_gib"],
    )
    return result


def prepare(workdir: Path, scale: int, copies: int, n_days: int) -> dict[str, Any]:
    """Simulate, build the features, write them as one file and as day partitions, and the repeated sets.

    A ``workdir`` prepared before with the same arguments is reused as it is.
    """
    done = workdir / "prepared.json"
    key = {"scale": scale, "copies": copies, "days": n_days}
    if done.exists() and json.loads(done.read_text())["key"] == key:
        prepared: dict[str, Any] = json.loads(done.read_text())["data"]
        return prepared
    import pyarrow as pa
    import pyarrow.dataset as ds

    from fraud_detection.data import schema
    from fraud_detection.data.simulate import SimulationConfig, simulate
    from fraud_detection.features.offline import build_features

    cfg = SimulationConfig(n_customers=5_000 * scale, n_terminals=10_000 * scale, n_days=n_days)
    features = build_features(simulate(cfg))
    single = schema.write_frame(features, workdir / "features.parquet")
    days = features.assign(day=features[schema.EVENT_TIME].dt.strftime("%Y-%m-%d"))
    store = workdir / "copies"
    span = pd_days(features)
    for k in range(copies):
        shifted = days.copy()
        if k:
            shifted[schema.EVENT_TIME] = shifted[schema.EVENT_TIME] + np.timedelta64(span * k, "D")
            shifted["day"] = shifted[schema.EVENT_TIME].dt.strftime("%Y-%m-%d")
            # New transactions and new cards: known-compromised cards of one copy must not empty the next's test.
            shifted[schema.TRANSACTION_ID] = shifted[schema.TRANSACTION_ID] + 1_000_000_000 * k
            shifted[schema.CUSTOMER_ID] = shifted[schema.CUSTOMER_ID] + 1_000_000_000 * k
        ds.write_dataset(
            pa.Table.from_pandas(shifted, preserve_index=False),
            store,
            format="parquet",
            partitioning=["day"],
            partitioning_flavor="hive",
            basename_template=f"part-{k}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
    partitions = sorted(store.iterdir())
    sets = {}
    for k in (1, 3, 6):
        if k > copies:
            continue
        target = workdir / f"x{k}"
        target.mkdir()
        for part in partitions[: k * span]:
            (target / part.name).symlink_to(part, target_is_directory=True)
        sets[str(k)] = {"path": str(target), "rows": len(features) * k}
    data = {
        "file": str(single),
        "rows": len(features),
        "fraud_rate": float(features[schema.LABEL].mean()),
        "customers": cfg.n_customers,
        "terminals": cfg.n_terminals,
        "sets": sets,
    }
    done.write_text(json.dumps({"key": key, "data": data}))
    return data


def pd_days(features: Any) -> int:
    """Days spanned by a feature frame (first to last day, inclusive)."""
    from fraud_detection.data import schema

    times = features[schema.EVENT_TIME]
    return int((times.max().floor("D") - times.min().floor("D")).days) + 1


def render(data: dict[str, Any], quality: list[dict[str, Any]], memory: list[dict[str, Any]], max_rows: int) -> str:
    """The section's Markdown."""
    lines = [
        f"Command: `{COMMAND}{' --scale ' + str(data['scale']) if data['scale'] != 1 else ''} --max-rows {max_rows}"
        f"{' --threads ' + str(data['threads']) if data.get('threads') else ''}`. Simulated "
        f"{data['rows']:,} transactions ({data['customers']:,} customers, {data['terminals']:,} terminals, "
        f"{data['days']} days, "
        f"fraud rate {data['fraud_rate']:.2%}), features built in memory. Each training runs in its own process "
        f"(hgb, {data['max_iter']} iterations, else the `fraud train` defaults: Platt calibration and the cost "
        "threshold on the latest "
        "20 % of the training window, refit on all of it). Peak RSS is the process's own (`VmHWM`); about "
        f"{quality[0]['baseline_rss_gib']:.2f} GiB of it is the interpreter and libraries before any data. "
        f"{'Training on ' + str(data['threads']) + ' OpenMP thread(s). ' if data.get('threads') else ''}"
        f"Load average {data['load']:.1f} on the 2 shared cores when the run started: times are indicative.",
        "",
        "### Quality on the unsampled test window",
        "",
        "28 training days, 7-day delay, 14 test days (cards known compromised removed); every run is scored on the "
        f"same {quality[0]['test_rows']:,} test rows (fraud rate {quality[0]['test_fraud_rate']:.2%}), never sampled. "
        f"ECE: expected calibration error over {BINS} equal-count score bins; Brier: mean squared error of the score.",
        "",
        "| training rows | legit rate | rows trained on | AP | ROC AUC | CP@100 | ECE | Brier | mean score | "
        "threshold | seconds (read + train) | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in quality:
        mean_score = float(np.mean(r["mean_score"]))
        lines.append(
            f"| {r['name']} | {r['applied_rate']:g} | {r['train_rows']:,} ({r['train_fraud']:,} fraud) | "
            f"{r['average_precision']:.4f} | {r['roc_auc']:.4f} | {r['card_precision_at_100']:.3f} | "
            f"{r['ece']:.5f} | {r['brier']:.5f} | {mean_score:.4f} | {r['threshold']:.3f} | "
            f"{r['train_seconds']:.0f} | {r['peak_rss_gib']:.2f} GiB |"
        )
    lines += [
        "",
        f"### Training memory with `--max-rows {max_rows:,}`, history growing",
        "",
        "All the history before the delay window trained on (the largest window: `train_days` None), read from day "
        "partitions; the 3x and 6x sets repeat the 1x partitions back to back (dates shifted, transaction and card "
        "ids offset, so each copy's cards are new).",
        "",
        "| feature set | rows | training window | legit rate applied | rows trained on | seconds (read + train) "
        "| peak RSS | AP (test) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in memory:
        lines.append(
            f"| {r['name']} | {r['rows']:,} | {r['window_rows']:,} | {r['applied_rate']:.4f} | "
            f"{r['train_rows']:,} ({r['train_fraud']:,} fraud) | {r['read_seconds']:.0f} + "
            f"{r['train_seconds'] - r['read_seconds']:.0f} | {r['peak_rss_gib']:.2f} GiB | "
            f"{r['average_precision']:.4f} |"
        )
    return "\n".join(lines)


def plot(quality: list[dict[str, Any]], path: Path) -> None:
    """A reliability diagram: fraud rate against mean score per bin, log-log, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    low = 1e-4
    ax.plot([low, 1], [low, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for r in quality:
        score_mean, rate, _ = zip(*r["curve"], strict=True)
        ax.plot(score_mean, np.maximum(rate, low), marker="o", markersize=3, label=r["name"])
    ax.set(xscale="log", yscale="log", xlabel="mean score in bin", ylabel="observed fraud rate in bin")
    ax.set_title("Reliability on the unsampled test window\n(log-spaced score bins of 30 rows or more)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """Measure, print the section and (unless ``--no-docs``) write it to docs/PERFORMANCE.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=1, help="customers and terminals x this (default 5,000 / 10,000)")
    parser.add_argument("--rates", default="0.1,0.02", help="legitimate sampling rates to compare")
    parser.add_argument("--max-rows", type=int, default=100_000, help="--max-rows of the memory runs")
    parser.add_argument("--copies", type=int, default=6, help="largest feature set, in multiples of the history")
    parser.add_argument("--days", type=int, default=183, help="simulated days (a quick try: 60)")
    parser.add_argument("--max-iter", type=int, default=300, help="boosting iterations (the default of fraud train)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data here (default: a temporary dir)")
    parser.add_argument("--plot", type=Path, default=None, help="write the reliability diagram (PNG) here")
    parser.add_argument("--threads", type=int, default=None, help="OpenMP/BLAS threads per training (default: all)")
    parser.add_argument("--no-docs", action="store_true", help="print only, leave docs/PERFORMANCE.md alone")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        sys.stdout.write(json.dumps(child(json.loads(args.child))) + "\n")
        return
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    load = os.getloadavg()[0]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sampling-bench-"))
    try:
        data = prepare(workdir, args.scale, args.copies, args.days)
        data.update(scale=args.scale, load=load, days=args.days, max_iter=args.max_iter, threads=args.threads)
        LOG.info("features ready: %s", {k: v for k, v in data.items() if k != "sets"})
        common = {"max_iter": args.max_iter, "max_rows": None, "train_days": 28, "path": data["file"]}
        quality = [
            run({**common, "name": "all (whole file in memory, before)", "loader": "whole", "rate": 1.0}, args.threads)
        ]
        for rate in (float(r) for r in args.rates.split(",")):
            name = f"every fraud + {rate:.0%} of legit, weighted"
            quality.append(run({**common, "name": name, "loader": "dataset", "rate": rate}, args.threads))
        memory = []
        for k, s in sorted(data["sets"].items(), key=lambda item: int(item[0])):
            spec = {**common, "name": f"{k}x", "path": s["path"], "loader": "dataset", "rate": 1.0}
            memory.append(
                {**run({**spec, "max_rows": args.max_rows, "train_days": None}, args.threads), "rows": s["rows"]}
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    body = render(data, quality, memory, args.max_rows)
    sys.stdout.write(body + "\n")
    (Path(tempfile.gettempdir()) / "sampling_bench.json").write_text(
        json.dumps({"data": data, "quality": quality, "memory": memory}, indent=1)
    )
    if args.plot is not None:
        plot(quality, args.plot)
    if not args.no_docs:
        update_section(SECTION, body)


if __name__ == "__main__":
    main()
