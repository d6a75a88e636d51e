"""Build the images without Docker or a registry, then run the serve image and score one v2 request.

``make images-local``. Where no container registry is reachable, the Dockerfile's public base image
(``python:3.11-slim-bookworm``) cannot be pulled, so this builds the equivalent from Debian's own packages:

1. mmdebstrap makes a minimal bookworm root filesystem with Debian's python3 (3.11) and pip, and ``python``/``pip``
   on the PATH; ``podman import`` turns it into ``localhost/fraud-python-base:bookworm``.
2. ``podman build --build-arg PYTHON_IMAGE=<that base> --target <target>`` builds each target of the unchanged
   Dockerfile (builder wheelhouse, then the image's own extra).
3. The serve image runs with a bundle mounted at ``/mnt/models``, listening on 127.0.0.1 only (host network,
   ``FRAUD_SERVING_HOST=127.0.0.1``) on free high ports; tools/smoke_test.py (the check deploy.yml runs after an
   install) waits for readiness and sends one v2 infer; the container is removed.

Two quirks of hosts like CI sandboxes are handled rather than assumed away: where cgroup v1 and v2 are mounted
together (hybrid), crun refuses to start containers, so runc is used; where the process may not raise resource
limits, the container gets the current ones (podman's defaults are higher). Behind a TLS-intercepting proxy the
build's pip needs the host's CA bundle, mounted read-only into the build's RUN steps (never into a layer).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOG = logging.getLogger("images-local")
ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("pipeline", "serve", "drift")
BASE_IMAGE = "localhost/fraud-python-base:bookworm"
DEBIAN_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
DEBIAN_TOOLS = ("podman", "buildah", "mmdebstrap", "runc", "uidmap")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
MODEL = "fraud-detector"
#: podman lowers its own process limit to this before it starts a container.
PODMAN_NPROC = 32768


def run(cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, logging it; fail on a non-zero exit.

    Args:
        cmd: The command.
        **kwargs: Passed to :func:`subprocess.run`.

    Returns:
        The completed process.
    """
    LOG.info("$ %s", " ".join(cmd))
    return subprocess.run(list(cmd), check=True, text=True, **kwargs)


def ensure_tools(install: bool) -> None:
    """Make sure podman, mmdebstrap and runc are there; install Debian's packages when asked.

    Args:
        install: ``apt-get install`` what is missing (root only).

    Raises:
        SystemExit: A tool is missing and cannot be installed.
    """
    missing = [tool for tool in ("podman", "mmdebstrap", "runc") if shutil.which(tool) is None]
    if not missing:
        return
    if not install:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install {' '.join(DEBIAN_TOOLS)} (or --install-tools)")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *DEBIAN_TOOLS], env=env)


def runtime_flags() -> list[str]:
    """Global podman flags: runc where cgroup v1 and v2 are mounted together (crun refuses that).

    Returns:
        The flags.
    """
    hybrid = Path("/sys/fs/cgroup/unified").is_dir()
    return ["--runtime", "runc"] if hybrid and shutil.which("runc") else []


def ulimit_flags() -> list[str]:
    """The current resource limits for the container (podman's defaults may exceed what may be set here).

    Returns:
        ``--ulimit`` flags.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], PODMAN_NPROC)
    return ["--ulimit", f"nofile={soft}:{hard}", "--ulimit", f"nproc={nproc}:{nproc}"]


def image_exists(tag: str) -> bool:
    """Whether podman has an image.

    Args:
        tag: Image reference.

    Returns:
        True when it exists locally.
    """
    return subprocess.run(["podman", "image", "exists", tag], check=False).returncode == 0


def build_base(workdir: Path, rebuild: bool) -> str:
    """Make the Debian base image (python3 3.11 and pip from Debian) unless it exists.

    Args:
        workdir: Scratch directory for the root filesystem tarball.
        rebuild: Rebuild even when it exists.

    Returns:
        The base image's reference.
    """
    if image_exists(BASE_IMAGE) and not rebuild:
        LOG.info("base image %s exists", BASE_IMAGE)
        return BASE_IMAGE
    tarball = workdir / "debian-python-rootfs.tar"
    run(
        [
            "mmdebstrap",
            "--variant=minbase",
            "--include=python3,python3-pip,python3-venv,ca-certificates",
            # The official python image has `python` and `pip` on the PATH; the Dockerfile calls them so.
            '--customize-hook=ln -sf /usr/bin/python3 "$1/usr/local/bin/python"',
            '--customize-hook=ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"',
            # An image's interpreter is its own: pip installs into /usr/local like the official image's.
            '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
            '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
            "bookworm",
            str(tarball),
            *DEBIAN_SOURCES,
        ]
    )
    run(["podman", "import", "--change", 'CMD ["python3"]', str(tarball), BASE_IMAGE])
    tarball.unlink()
    return BASE_IMAGE


def build_target(target: str, base: str, tag: str, ca_bundle: Path | None) -> None:
    """Build one Dockerfile target on the local base.

    Args:
        target: ``pipeline``, ``serve`` or ``drift``.
        base: Base image (the Dockerfile's ``PYTHON_IMAGE`` build argument).
        tag: Tag of the result.
        ca_bundle: Host CA bundle to mount into RUN steps (None: the image's own).
    """
    # --no-cache: buildah's layer cache ignores what a RUN --mount=from=builder reads, so a cached install step
    # would keep the previous wheel after a source change. --format docker keeps the HEALTHCHECK.
    cmd = ["podman", *runtime_flags(), "build", "--no-cache", "--format", "docker", "--network", "host"]
    cmd += ulimit_flags()
    if ca_bundle is not None:
        cmd += ["--volume", f"{ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    cmd += ["--build-arg", f"PYTHON_IMAGE={base}", "--target", target, "--tag", tag, str(ROOT)]
    run(cmd)


def train_bundle(workdir: Path) -> Path:
    """Train a small real bundle with the `fraud` command (simulated data, a few seconds).

    Args:
        workdir: Where the data and the bundle go.

    Returns:
        The bundle directory.
    """
    fraud = [sys.executable, "-m", "cli"]
    data, bundle = workdir / "tx.parquet", workdir / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    run([*fraud, "simulate", "--customers", "300", "--terminals", "600", "--days", "60", "--seed", "7",
         "--output", str(data)], cwd=ROOT)  # fmt: skip
    run([*fraud, "train", "--data", str(data), "--output", str(bundle), "--test-days", "10", "--max-iter", "40"],
        cwd=ROOT)  # fmt: skip
    return bundle


def free_port() -> int:
    """A free TCP port on 127.0.0.1.

    Returns:
        The port.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextmanager
def serve_container(image: str, bundle: Path, timeout: float = 180.0) -> Iterator[str]:
    """Run the serve image on 127.0.0.1 with a bundle; remove the container afterwards.

    Args:
        image: The serve image.
        bundle: Bundle directory, mounted read-only at /mnt/models.
        timeout: Seconds to become ready.

    Yields:
        The server's base URL.

    Raises:
        RuntimeError: The server did not become ready (its log is in the message).
    """
    http_port, grpc_port = free_port(), free_port()
    name = f"fraud-serve-smoke-{http_port}"
    podman = ["podman", *runtime_flags()]
    run(
        [*podman, "run", "--detach", "--name", name, "--network", "host", "--no-healthcheck", *ulimit_flags(),
         "--env", "FRAUD_SERVING_HOST=127.0.0.1", "--volume", f"{bundle.resolve()}:/mnt/models:ro",
         image, "--model_name", MODEL, "--model_dir", "/mnt/models",
         "--http_port", str(http_port), "--grpc_port", str(grpc_port)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + timeout
        while not _answers(f"{url}/v2/health/ready"):
            state = subprocess.run(
                ["podman", "inspect", "--format", "{{.State.Status}}", name],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if state != "running" or time.monotonic() > deadline:
                logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, check=False)
                raise RuntimeError(f"serve container {state} and not ready:\n{(logs.stdout + logs.stderr)[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        subprocess.run([*podman, "stop", "--time", "10", name], capture_output=True, check=False)
        subprocess.run([*podman, "rm", "--force", name], capture_output=True, check=False)


def smoke(url: str) -> dict[str, Any]:
    """Run tools/smoke_test.py (the check deploy.yml runs after an install) against the server.

    Args:
        url: Server base URL.

    Returns:
        The v2 infer response.
    """
    script = str(ROOT / "tools" / "smoke_test.py")
    proc = run([sys.executable, script, "--url", url, "--model", MODEL, "--timeout", "60"], capture_output=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """Build the images on a local Debian base, then smoke-test the serve image."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=["serve"], help="targets to build")
    parser.add_argument("--bundle", type=Path, help="bundle for the smoke test (default: train a small one)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "images-local")
    parser.add_argument("--install-tools", action="store_true", help="apt-get install podman, mmdebstrap, runc")
    parser.add_argument("--rebuild-base", action="store_true", help="rebuild the Debian base image")
    parser.add_argument("--no-host-ca", action="store_true", help="do not mount the host's CA bundle into builds")
    parser.add_argument("--no-smoke", action="store_true", help="build only")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    ensure_tools(args.install_tools)
    base = build_base(args.workdir, args.rebuild_base)
    ca_bundle = None if args.no_host_ca or not HOST_CA_BUNDLE.is_file() else HOST_CA_BUNDLE
    tags = {t: f"localhost/fraud-detection-{t}:{version}-debian" for t in args.targets}
    for target, tag in tags.items():
        build_target(target, base, tag, ca_bundle)
    result: dict[str, Any] = {"base": base, "images": tags}
    if "serve" in tags and not args.no_smoke:
        bundle = args.bundle or train_bundle(args.workdir)
        with serve_container(tags["serve"], bundle) as url:
            response = smoke(url)
        result["infer"] = {"model_version": response["model_version"], "outputs": response["outputs"]}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
