"""Start a real Azurite Blob server (the Azure Storage emulator, from npm) on loopback for integration tests.

Azurite is installed by ``tools/bootstrap.py`` into ``.venv/azurite`` (``npm install --prefix .venv/azurite
azurite@3``). It runs with telemetry off, bound to 127.0.0.1 on a free port, with its data in a temporary folder.
With ``https=True`` it serves TLS with a throw-away self-signed certificate and accepts OAuth bearer tokens
(``--oauth basic``: format, issuer, audience and lifetime are checked, not the signature), so the token
credential path of the store is exercised the way workload identity uses it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.net import free_port, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]
AZURITE_DIR = ROOT / ".venv" / "azurite"
# Azurite's well-known development account and key (published in the Azure Storage emulator documentation).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzuriteServer:
    """A running Azurite Blob endpoint."""

    account_url: str
    account_name: str = DEV_ACCOUNT
    account_key: str = field(default=DEV_KEY, repr=False)
    ca_file: Path | None = None

    @property
    def connection_string(self) -> str:
        """Connection string with the development account key."""
        protocol = urlscheme(self.account_url)
        return (
            f"DefaultEndpointsProtocol={protocol};AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.account_url};"
        )


def urlscheme(url: str) -> str:
    """Scheme of a URL (``http`` or ``https``)."""
    return url.split("://", 1)[0]


def azurite_binary() -> str:
    """Path of ``azurite-blob`` installed into .venv/azurite (or on PATH)."""
    local = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found:
        return found
    raise RuntimeError(
        "azurite-blob not found: run `make install` (tools/bootstrap.py installs Azurite with npm into "
        ".venv/azurite), or `npm install --prefix .venv/azurite azurite@3`"
    )


def _self_signed(workdir: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def _listening(log: Path, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"azurite-blob exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
    return "successfully listens on" in log.read_text(errors="replace")


@contextmanager
def azurite(workdir: Path, *, https: bool = False) -> Iterator[AzuriteServer]:
    """Run ``azurite-blob`` on 127.0.0.1 and a free port; stop it on exit.

    Args:
        workdir: Folder for Azurite's data, log and (with ``https``) certificate.
        https: Serve TLS and accept OAuth bearer tokens (``--oauth basic``).

    Yields:
        The running server.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    port = free_port()
    cmd = [
        azurite_binary(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(data),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
    ]
    ca_file = None
    if https:
        ca_file, key_file = _self_signed(workdir)
        cmd += ["--cert", str(ca_file), "--key", str(key_file), "--oauth", "basic"]
    log_path = workdir / "azurite.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    env = {k: v for k, v in os.environ.items() if k != "AZURITE_ACCOUNTS"}  # only the development account
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until(lambda: _listening(log_path, proc), timeout=60, what="Azurite Blob")
        scheme = "https" if https else "http"
        yield AzuriteServer(f"{scheme}://127.0.0.1:{port}/{DEV_ACCOUNT}", ca_file=ca_file)
    finally:
        stop_process(proc)
        log.close()
