"""Reading a SparkApplication's status: the wait loop's decisions, as pure functions on status dicts."""

from __future__ import annotations

import pytest

from components.spark_operator.status import SparkApplicationError, interpret, timeout_error

NAME = "kubeflow/fraud-features-0123456789ab"


def app(state: str | None, error: str | None = None, driver: str | None = None) -> dict:
    status: dict = {}
    if state is not None:
        status["applicationState"] = {"state": state, **({"errorMessage": error} if error else {})}
    if driver:
        status["driverInfo"] = {"podName": driver}
    return {"metadata": {"name": NAME.split("/")[1]}, "status": status}


def test_completed_is_done():
    assert interpret(NAME, app("COMPLETED")) == "done"


@pytest.mark.parametrize(
    "state", [None, "", "SUBMITTED", "RUNNING", "PENDING_RERUN", "INVALIDATING", "SUCCEEDING", "FAILING", "UNKNOWN"]
)
def test_states_before_the_end_keep_waiting(state):
    assert interpret(NAME, app(state)) == "running"


def test_a_new_object_without_status_keeps_waiting():
    assert interpret(NAME, {"metadata": {"name": "x"}}) == "running"
    assert interpret(NAME, None) == "running"


def test_failed_names_the_application_the_state_the_driver_and_the_error_on_one_line():
    error = "driver container failed with ExitCode: 1,\n  Reason: Error"
    with pytest.raises(SparkApplicationError) as failure:
        interpret(NAME, app("FAILED", error, driver="fraud-features-0123456789ab-driver"))
    message = str(failure.value)
    assert "\n" not in message
    assert message == (
        f"SparkApplication {NAME} FAILED (driver pod fraud-features-0123456789ab-driver): "
        "driver container failed with ExitCode: 1, Reason: Error"
    )


def test_submission_failed_without_a_message_still_says_so():
    with pytest.raises(SparkApplicationError, match=f"{NAME} SUBMISSION_FAILED: no error message from the operator"):
        interpret(NAME, app("SUBMISSION_FAILED"))


def test_a_timeout_names_the_last_state_and_a_long_error_is_cut():
    message = str(timeout_error(NAME, app("RUNNING", "x" * 1000), 7200))
    assert message.startswith(f"SparkApplication {NAME} not finished after 7200 s (last state RUNNING: xxx")
    assert len(message) <= 400 and message.endswith("...")
    assert "last state none" in str(timeout_error(NAME, None, 60))
