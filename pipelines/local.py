"""Run the ``fraud-training`` DAG on this machine through ``kfp.local`` (SubprocessRunner, the current venv).

kfp.local writes its own progress and every task's streamed output to stdout (and cache hits and skipped
conditions to the root logger). :func:`run_local` captures both for the duration of the run, writes them to a log
file, turns them into :class:`StepEvent` callbacks (running, succeeded, cached, skipped, failed, with wall times),
and turns a failed run into a :class:`PipelineRunError` naming the step and the error it raised.
"""

import contextlib
import io
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pipelines.training import GATED_TASKS

LOG = logging.getLogger(__name__)

StepStatus = Literal["running", "succeeded", "failed", "cached", "skipped"]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXECUTING = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_CACHE_HIT = re.compile(r"Task (\S+) cache hit")
_OUTPUTS = re.compile(r"Task '([^']+)' outputs:")
_PARAMETER = re.compile(r"^\s{4}(\w+): (?:'(.*)'|([^\s(][^(]*))$")
_SKIPPED = re.compile(r"Skipping (?:conditional )?task ([\w-]+)")
# The last line of a Python traceback: ``package.module.SomeError: message``.
_EXCEPTION = re.compile(r"^\s*(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Exit))(?::\s*(.*))?$")


@dataclass(frozen=True)
class StepEvent:
    """Progress of one pipeline step.

    Attributes:
        step: Task name (``ingest-data``, ..., or a condition such as ``condition-candidate-beats-production-1``).
        status: ``running``, ``succeeded``, ``failed``, ``cached`` (output reused) or ``skipped`` (gate closed).
        seconds: Wall time of the step when it finished.
        detail: The error for a failed step, the reason for a skipped one.
    """

    step: str
    status: StepStatus
    seconds: float | None = None
    detail: str = ""


@dataclass
class LocalRunResult:
    """Outcome of a successful local run.

    Attributes:
        promoted: Whether the candidate passed the promotion gate (and was registered).
        candidate_version: The candidate's version id.
        reasons: The gate's reasons.
        metrics: Candidate metrics on the held-out window, plus ``production_*`` on the same rows.
        report_path: The HTML evaluation report.
        log_path: The full log of the run.
        steps: Every step's final event, in execution order.
        outputs: Parameter outputs by step, as kfp.local logged them (e.g. ``register-model``'s ``version``,
            ``deploy-model``'s ``Output``: created, canary, unchanged or skipped).
        seconds: Wall time of the run.
    """

    promoted: bool
    candidate_version: str
    reasons: list[str]
    metrics: dict[str, float]
    report_path: Path
    log_path: Path
    steps: list[StepEvent] = field(default_factory=list)
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: float = 0.0


class PipelineRunError(RuntimeError):
    """A local run failed; the message names the failed step and the error it raised.

    Attributes:
        step: The failed task.
        error: The error line the step ended with (``SchemaError: column 'amount': ...``).
        log_path: The full log of the run.
    """

    def __init__(self, step: str, error: str, log_path: Path) -> None:
        super().__init__(f"step {step} failed: {error} (full log: {log_path})")
        self.step = step
        self.error = error
        self.log_path = log_path


class _Tap(io.TextIOBase):
    """A text sink for kfp.local's stdout and log records: writes the log file and emits step events."""

    def __init__(self, log_file: io.TextIOBase, on_event: Callable[[StepEvent], None]) -> None:
        self.log_file = log_file
        self.on_event = on_event
        self.events: list[StepEvent] = []
        self.started: dict[str, float] = {}
        self.current: str | None = None
        self.last_error: dict[str, str] = {}
        self.outputs: dict[str, dict[str, str]] = {}
        self._outputs_of: str | None = None
        self.outer: tuple[list[logging.Handler], int] | None = None
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self.line(line)
        return len(text)

    def line(self, raw: str) -> None:
        text = _ANSI.sub("", raw)
        self.log_file.write(text + "\n")
        if self._outputs_of and (match := _PARAMETER.match(text)):
            self.outputs.setdefault(self._outputs_of, {})[match.group(1)] = match.group(2) or match.group(3)
            return
        self._outputs_of = None
        if match := _OUTPUTS.search(text):
            self._outputs_of = match.group(1)
        elif match := _EXECUTING.search(text):
            self.current = match.group(1)
            self.started[self.current] = time.monotonic()
            self.emit(StepEvent(self.current, "running"))
        elif match := _FINISHED.search(text):
            step, ok = match.group(1), match.group(2) == "SUCCESS"
            seconds = time.monotonic() - self.started.get(step, time.monotonic())
            detail = "" if ok else self.last_error.get(step, "see the log")
            self.emit(StepEvent(step, "succeeded" if ok else "failed", seconds, detail))
            self.current = None
        elif match := _CACHE_HIT.search(text):
            self.emit(StepEvent(match.group(1), "cached", 0.0))
        elif match := _SKIPPED.search(text):
            # A closed gate skips the whole condition (``condition-N``); report the steps inside it.
            gate_closed = "evaluated to False" in text
            reason = "the candidate does not pass the promotion gate" if gate_closed else "an upstream step failed"
            steps = GATED_TASKS if match.group(1).startswith("condition-") else (match.group(1),)
            for step in steps:
                self.emit(StepEvent(step, "skipped", 0.0, reason))
        elif self.current and (match := _EXCEPTION.match(text)):
            self.last_error[self.current] = f"{match.group(1)}: {match.group(2) or ''}".rstrip(": ")

    def emit(self, event: StepEvent) -> None:
        """Record an event and hand it to the callback with the caller's logging configuration in place.

        kfp.local swaps the root logger's handlers while a task runs; restoring the caller's for the callback lets
        it log as usual instead of writing into the captured stream.
        """
        if event.status != "running":
            self.events.append(event)
        root = logging.getLogger()
        inner = root.handlers[:], root.level
        if self.outer is not None:
            root.handlers = self.outer[0][:]
            root.setLevel(self.outer[1])
        try:
            self.on_event(event)
        finally:
            root.handlers = inner[0]
            root.setLevel(inner[1])


class _TapHandler(logging.Handler):
    """Root-logger handler routing kfp.local's own records (cache hits, skipped conditions) into the tap."""

    def __init__(self, tap: _Tap) -> None:
        super().__init__(logging.INFO)
        self.tap = tap

    def emit(self, record: logging.LogRecord) -> None:
        self.tap.line(f"{record.levelname} - {record.getMessage()}")


@contextlib.contextmanager
def _captured(tap: _Tap) -> Iterator[None]:
    """Route stdout and root-logger records into ``tap``; restore both afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    tap.outer = (handlers, level)
    root.handlers = [_TapHandler(tap)]
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(tap), warnings.catch_warnings():
            # Every task runs in this venv, which has the package the image would have: the image name and the
            # cluster-only task settings (display names) are irrelevant here.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            yield
    finally:
        tap.write("\n")
        root.handlers = handlers
        root.setLevel(level)


_CASTS: dict[str, Callable[[Any], Any]] = {"Integer": int, "Float": float, "Boolean": bool, "String": str}


def complete_arguments(pipeline: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """Every pipeline parameter, given or default, as its declared type.

    kfp.local keys its cache on the arguments as passed, so ``max_iter=300`` given, ``300`` left at its default
    (which reaches the task as 300.0) and ``min_ap_gain=0`` vs ``0.0`` would each be a cache miss. Completing and
    typing them makes equal runs hit the cache.

    Args:
        pipeline: The pipeline (``build_pipeline()``).
        arguments: The arguments given.

    Returns:
        All arguments.

    Raises:
        ValueError: An argument names no parameter.
    """
    inputs = pipeline.component_spec.inputs
    unknown = sorted(set(arguments) - set(inputs))
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, spec in inputs.items():
        value = arguments.get(name, spec.default)
        if value is not None:
            cast = _CASTS.get(str(spec.type))
            out[name] = cast(value) if cast else value
    return out


def run_local(
    arguments: dict[str, Any],
    work_dir: Path,
    *,
    enable_caching: bool = True,
    on_event: Callable[[StepEvent], None] | None = None,
) -> LocalRunResult:
    """Run the whole DAG through ``kfp.local`` with ``SubprocessRunner(use_venv=False)``.

    Tasks inherit this process's environment (``FRAUD_*`` settings, S3 keys). The Kubernetes wiring of the
    compiled pipeline (Secret, ConfigMap) does not apply locally; deploy_model skips without a cluster.

    Args:
        arguments: Pipeline parameters (see ``pipelines.training.build_pipeline``).
        work_dir: Where runs (``runs/``), the task cache (``cache/``) and logs (``logs/``) go.
        enable_caching: Reuse cached outputs of the data steps when their inputs are unchanged.
        on_event: Called with each step's progress.

    Returns:
        The gate's verdict, the candidate's metrics and version, the report, per-step times.

    Raises:
        PipelineRunError: A step failed; the error names it and what it raised.
    """
    from kfp import local

    from pipelines.training import build_pipeline

    work_dir = Path(work_dir).resolve()
    log_path = work_dir / "logs" / f"fraud-training-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(work_dir / "runs"),
        raise_on_error=True,
        enable_caching=enable_caching,
        cache_root=str(work_dir / "cache"),
    )
    pipeline = build_pipeline(secret_name=None, config_map_name=None)
    arguments = complete_arguments(pipeline, arguments)
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log_file:
        tap = _Tap(log_file, on_event or (lambda _event: None))
        try:
            with _captured(tap):
                task = pipeline(**arguments)
        except RuntimeError as exc:
            failed = next((e for e in reversed(tap.events) if e.status == "failed"), None)
            if failed is None:
                raise
            raise PipelineRunError(failed.step, failed.detail, log_path) from exc
    outputs = task.outputs
    report = outputs["report"]
    return LocalRunResult(
        promoted=bool(outputs["promoted"]),
        candidate_version=str(report.metadata.get("version", "")),
        reasons=[str(r) for r in report.metadata.get("reasons", [])],
        metrics={k: float(v) for k, v in outputs["metrics"].metadata.items()},
        report_path=Path(report.path),
        log_path=log_path,
        steps=tap.events,
        outputs=tap.outputs,
        seconds=time.monotonic() - started,
    )
