"""Smoke test of a running model server: ready, then one v2 infer whose outputs are checked.

    python tools/smoke_test.py --url http://127.0.0.1:18080 --model fraud-detector

deploy.yml runs it through a port-forward to a predictor pod after `helm upgrade --install`; tools/images_local.py
runs it against the serve image built here. Standard library only (it runs before any install). Exit 0 on success,
1 with one line naming what failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from typing import Any

LOG = logging.getLogger("smoke-test")


class SmokeTestError(RuntimeError):
    """The server is not ready, or an answer is not what the serving contract says."""


def http_json(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    """One JSON request.

    Args:
        method: HTTP method.
        url: URL.
        body: JSON body.
        timeout: Seconds.

    Returns:
        (status, decoded body; the text on an error status; None when nothing answered).
    """
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None


def wait_ready(url: str, model: str, timeout: float) -> None:
    """Wait until the server and the model report ready.

    Args:
        url: Server base URL.
        model: Model name.
        timeout: Seconds.

    Raises:
        SmokeTestError: Not ready in time.
    """
    deadline = time.monotonic() + timeout
    for route in ("/v2/health/ready", f"/v2/models/{model}/ready"):
        while (status := http_json("GET", url + route)[0]) != 200:
            if time.monotonic() > deadline:
                raise SmokeTestError(f"{route}: {status or 'no answer'} after {timeout:.0f} s")
            time.sleep(1.0)


def infer_once(url: str, model: str) -> dict[str, Any]:
    """One v2 infer with one row (a tensor per input of the model's metadata); check the outputs.

    Args:
        url: Server base URL.
        model: Model name.

    Returns:
        The response.

    Raises:
        SmokeTestError: A call failed or the outputs break the contract.
    """
    status, meta = http_json("GET", f"{url}/v2/models/{model}")
    if status != 200 or not isinstance(meta, dict) or not meta.get("inputs"):
        raise SmokeTestError(f"model metadata: {status} {meta!r:.300}")
    inputs = [{"name": i["name"], "shape": [1], "datatype": "FP32", "data": [1.0]} for i in meta["inputs"]]
    status, body = http_json("POST", f"{url}/v2/models/{model}/infer", {"id": "smoke-test", "inputs": inputs})
    if status != 200 or not isinstance(body, dict):
        raise SmokeTestError(f"v2 infer: {status} {body!r:.300}")
    outputs = {o["name"]: o for o in body.get("outputs", [])}
    score = outputs.get("fraud_score", {}).get("data", [None])[0]
    if not isinstance(score, float) or not 0.0 <= score <= 1.0:
        raise SmokeTestError(f"v2 infer: fraud_score is not a probability: {body!r:.300}")
    if outputs.get("is_fraud", {}).get("datatype") != "BOOL":
        raise SmokeTestError(f"v2 infer: no BOOL is_fraud output: {body!r:.300}")
    return dict(body)


def main(argv: list[str] | None = None) -> int:
    """Wait for readiness, score one row, print the response as one JSON line."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:18080")
    parser.add_argument("--model", default="fraud-detector")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to become ready")
    args = parser.parse_args(argv)
    try:
        wait_ready(args.url.rstrip("/"), args.model, args.timeout)
        response = infer_once(args.url.rstrip("/"), args.model)
    except SmokeTestError as exc:
        LOG.error("smoke test failed: %s", exc)
        return 1
    LOG.info("ready; v2 infer answered (model version %s)", response.get("model_version"))
    sys.stdout.write(json.dumps(response) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
