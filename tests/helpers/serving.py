"""Helpers for the model-server integration tests (imported explicitly, not a pytest conftest).

* :func:`serving_process` starts ``python -m serving`` on free loopback ports and waits for readiness.
* :func:`run_client` runs a client check in a fresh interpreter: ``tritonclient.grpc`` and ``kserve`` register the
  same ``inference.*`` protobuf symbols and cannot be imported into one process, and the pytest process already
  imports ``kserve``. Run ``python -m tests.helpers.serving <command> ...`` by hand to see the output.
* :func:`same_structure` compares a live response with a golden file from ``tests/fixtures/serving``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.net import free_port, http_ok, stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "serving"
MODEL = "fraud-detector"
#: Keys whose values a golden file pins exactly (the rest only by type).
EXACT_KEYS = frozenset(
    {"name", "datatype", "shape", "model_name", "imputed_features", "imputed_from", "reason_code_method", "error"}
)


@dataclass(frozen=True)
class ServingProcess:
    """A running model server."""

    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _clean_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_") and k != "KUBERNETES_SERVICE_HOST"}
    env.update(extra or {})
    return env


@contextmanager
def serving_process(
    args: list[str], workdir: Path, *, env: dict[str, str] | None = None, timeout: float = 120.0
) -> Iterator[ServingProcess]:
    """Run ``python -m serving`` bound to 127.0.0.1 on free ports; SIGTERM it on exit.

    Args:
        args: Model flags (``--model_dir ...`` or ``--store_uri ... --model_ref ...``, payload-log flags).
        workdir: Where the log goes.
        env: Extra environment.
        timeout: Seconds to become ready.

    Yields:
        The running server.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = free_port(), free_port()
    log = workdir / f"serving-{http_port}.log"
    cmd = [
        sys.executable, "-m", "serving",
        "--model_name", MODEL,
        "--host", "127.0.0.1",
        "--http_port", str(http_port),
        "--grpc_port", str(grpc_port),
        *args,
    ]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=_clean_env(env))
    server = ServingProcess(proc, http_port, grpc_port, log)
    try:
        try:
            wait_until(
                lambda: proc.poll() is None and http_ok(f"{server.url}/v2/health/ready"),
                timeout=timeout,
                interval=0.2,
                what="model server readiness",
            )
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}; exit code {proc.poll()}; log:\n{server.log_tail()}") from exc
        yield server
    finally:
        stop(server)


def stop(server: ServingProcess, timeout: float = 30.0) -> int:
    """SIGTERM the server and wait for it to exit (kill after ``timeout``).

    Args:
        server: The server.
        timeout: Seconds to wait.

    Returns:
        The exit code.
    """
    return stop_process(server.proc, timeout)


def http(
    method: str, url: str, body: bytes | dict[str, Any] | list[Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """One HTTP request with urllib (no Content-Type unless given).

    Args:
        method: Method.
        url: URL.
        body: Bytes, or a JSON value to encode.
        headers: Extra headers.

    Returns:
        (status, body, headers).
    """
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return int(resp.status), resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return int(err.code), err.read(), dict(err.headers)


def golden(name: str) -> Any:
    """A golden JSON file.

    Args:
        name: File name in tests/fixtures/serving.

    Returns:
        Its content.
    """
    return json.loads((FIXTURES / name).read_text())


def same_structure(actual: Any, expected: Any, path: str = "$") -> list[str]:
    """Differences between a response and its golden file: keys, types, list lengths, and the exact values of
    :data:`EXACT_KEYS` (scores, ids and versions differ between models and runs).

    Args:
        actual: Live response.
        expected: Golden response.
        path: Location (for messages).

    Returns:
        Human-readable differences (empty when they match).
    """
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {type(actual).__name__}"]
        problems = []
        if set(actual) != set(expected):
            problems.append(f"{path}: keys {sorted(actual)} != {sorted(expected)}")
        for key in set(actual) & set(expected):
            if key in EXACT_KEYS and actual[key] != expected[key]:
                problems.append(f"{path}.{key}: {actual[key]!r} != {expected[key]!r}")
            else:
                problems.extend(same_structure(actual[key], expected[key], f"{path}.{key}"))
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{path}: expected a list of {len(expected)}, got {actual!r:.80}"]
        return [
            p
            for i, (a, e) in enumerate(zip(actual, expected, strict=True))
            for p in same_structure(a, e, f"{path}[{i}]")
        ]
    if isinstance(expected, bool) or expected is None:
        return [] if type(actual) is type(expected) else [f"{path}: {actual!r} is not {type(expected).__name__}"]
    if isinstance(expected, int | float):
        ok = isinstance(actual, int | float) and not isinstance(actual, bool)
        return [] if ok else [f"{path}: {actual!r} is not a number"]
    if isinstance(expected, str):
        if isinstance(actual, str) and expected.startswith("[{") and actual.startswith("[{"):
            return same_structure(json.loads(actual), json.loads(expected), f"{path}<json>")
        return [] if isinstance(actual, str) else [f"{path}: {actual!r} is not a string"]
    return [] if actual == expected else [f"{path}: {actual!r} != {expected!r}"]


def run_client(command: str, *args: str, timeout: float = 120.0) -> dict[str, Any]:
    """Run one of this module's client commands in a fresh interpreter and return its JSON output.

    Args:
        command: ``triton-grpc`` or ``kserve``.
        *args: Its arguments.
        timeout: Seconds.

    Returns:
        The command's JSON result.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "tests.helpers.serving", command, *args],
        cwd=REPO,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return dict(json.loads(proc.stdout.decode().strip().splitlines()[-1]))


def _rows() -> list[list[float]]:
    return golden("v2_infer.request.json")["inputs"][0]["data"]


def _triton_grpc(target: str) -> dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(target)
    X = np.array(_rows(), dtype=np.float32)
    inp = grpcclient.InferInput("features", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    outputs = [grpcclient.InferRequestedOutput(n) for n in ("fraud_score", "is_fraud", "reason_codes")]
    result = client.infer(MODEL, [inp], outputs=outputs, request_id="grpc-1")
    response = result.get_response()
    meta = client.get_model_metadata(MODEL)
    errors = {}
    for label, tensor in (("shape", X[:, :5]), ("negative", -X)):
        bad = grpcclient.InferInput("features", list(tensor.shape), "FP32")
        bad.set_data_from_numpy(np.ascontiguousarray(tensor))
        try:
            client.infer(MODEL, [bad])
            errors[label] = "no error"
        except InferenceServerException as exc:
            errors[label] = f"{exc.status()} {exc.message()}"
    try:
        client.infer("no-such-model", [inp])
        errors["unknown_model"] = "no error"
    except InferenceServerException as exc:
        errors["unknown_model"] = f"{exc.status()} {exc.message()}"
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(MODEL),
        "server_name": client.get_server_metadata().name,
        "inputs": [(i.name, i.datatype, list(i.shape)) for i in meta.inputs],
        "id": response.id,
        "model_version": response.model_version,
        "parameters": {k: v.string_param for k, v in response.parameters.items()},
        "fraud_score": result.as_numpy("fraud_score").tolist(),
        "is_fraud": result.as_numpy("is_fraud").tolist(),
        "reason_codes": [r.decode() for r in result.as_numpy("reason_codes").tolist()],
        "errors": errors,
    }


def _kserve(url: str, target: str) -> dict[str, Any]:
    import asyncio

    import numpy as np
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

    X = np.array(_rows(), dtype=np.float32)

    def request(binary: bool) -> InferRequest:
        inp = InferInput("features", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        return InferRequest(model_name=MODEL, infer_inputs=[inp], request_id="kserve-1")

    async def calls() -> dict[str, Any]:
        out: dict[str, Any] = {}
        rest = InferenceRESTClient(RESTConfig(protocol="v2"))
        for binary in (False, True):
            res = await rest.infer(url, request(binary), model_name=MODEL)
            out[f"rest_binary_{binary}"] = {
                "fraud_score": res.get_output_by_name("fraud_score").as_numpy().tolist(),
                "is_fraud": res.get_output_by_name("is_fraud").as_numpy().tolist(),
                "model_version": res.model_version,
            }
        out["rest_ready"] = await rest.is_model_ready(url, MODEL)
        await rest.close()
        grpc = InferenceGRPCClient(target)
        res = await grpc.infer(request(True))
        out["grpc"] = {
            "fraud_score": res.get_output_by_name("fraud_score").as_numpy().tolist(),
            "is_fraud": res.get_output_by_name("is_fraud").as_numpy().tolist(),
            "model_version": res.model_version,
        }
        out["grpc_ready"] = await grpc.is_model_ready(MODEL)
        await grpc.close()
        return out

    return asyncio.run(calls())


def _write_goldens(url: str) -> dict[str, Any]:
    """Regenerate the golden responses from a running server (run after changing the wire format)."""
    written = []
    for request_file in sorted(FIXTURES.glob("*.request.json")):
        spec = json.loads(request_file.read_text())
        route = spec.pop("_route")
        status, body, _ = http("POST", url + route, spec)
        response = {"_status": status, **json.loads(body)}
        target = request_file.with_name(request_file.name.replace(".request.", ".response."))
        target.write_text(json.dumps(response, indent=2) + "\n")
        written.append(target.name)
    status, body, _ = http("GET", f"{url}/v2/models/{MODEL}")
    (FIXTURES / "v2_model_metadata.response.json").write_text(json.dumps(json.loads(body), indent=2) + "\n")
    return {"written": [*written, "v2_model_metadata.response.json"]}


def main(argv: list[str] | None = None) -> int:
    """Client commands run in a fresh interpreter (see :func:`run_client`)."""
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.serving")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("triton-grpc").add_argument("target")
    kserve_cmd = sub.add_parser("kserve")
    kserve_cmd.add_argument("url")
    kserve_cmd.add_argument("target")
    sub.add_parser("write-goldens").add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "triton-grpc":
        result = _triton_grpc(args.target)
    elif args.command == "kserve":
        result = _kserve(args.url, args.target)
    else:
        result = _write_goldens(args.url)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
