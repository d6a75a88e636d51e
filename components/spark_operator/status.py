"""Read a SparkApplication's ``status``: finished, still going, or failed (a pure function, tested on dicts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

#: ``status.applicationState.state`` values of the Spark Operator (v1beta2) that end an application.
SUCCESS_STATES = frozenset({"COMPLETED"})
FAILURE_STATES = frozenset({"FAILED", "SUBMISSION_FAILED"})

Progress = Literal["done", "running"]


class SparkApplicationError(RuntimeError):
    """A SparkApplication failed, was not accepted or did not finish in time; the message is one line."""


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line (whitespace runs collapsed), cut at ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def application_state(obj: Mapping[str, Any] | None) -> tuple[str, str]:
    """The state and error message of a SparkApplication object (empty strings while the operator has not seen it).

    Args:
        obj: The object as the API returns it (or None).

    Returns:
        (state, errorMessage).
    """
    status = (obj or {}).get("status") or {}
    state = status.get("applicationState") or {}
    return str(state.get("state") or ""), str(state.get("errorMessage") or "")


def interpret(name: str, obj: Mapping[str, Any] | None) -> Progress:
    """Whether an application is done, still running, or failed.

    Args:
        name: ``namespace/name`` of the application, for the message.
        obj: The object (its ``status.applicationState``).

    Returns:
        ``done`` on COMPLETED; ``running`` on any other non-failure state (none yet, SUBMITTED, RUNNING,
        PENDING_RERUN, SUCCEEDING, FAILING, UNKNOWN, ...).

    Raises:
        SparkApplicationError: FAILED or SUBMISSION_FAILED, naming the application, the state and its error.
    """
    state, error = application_state(obj)
    if state in SUCCESS_STATES:
        return "done"
    if state in FAILURE_STATES:
        driver = ((obj or {}).get("status") or {}).get("driverInfo", {}).get("podName", "")
        where = f" (driver pod {driver})" if driver else ""
        raise SparkApplicationError(
            one_line(f"SparkApplication {name} {state}{where}: {error or 'no error message from the operator'}")
        )
    return "running"


def timeout_error(name: str, obj: Mapping[str, Any] | None, seconds: float) -> SparkApplicationError:
    """The error of an application that did not finish within ``seconds`` (its last state in the message)."""
    state, error = application_state(obj)
    detail = f": {error}" if error else ""
    return SparkApplicationError(
        one_line(f"SparkApplication {name} not finished after {seconds:.0f} s (last state {state or 'none'}{detail})")
    )
