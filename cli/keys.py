"""``fraud keys``: the Ed25519 key pair that signs model bundles (private) and verifies them (public)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli.common import console, guarded

app = typer.Typer(help="Bundle signing keys: FRAUD_SIGNING_KEY (publishers) and FRAUD_VERIFY_KEY (loaders).")
SIGNING_FILE = "signing-key.pem"
VERIFY_FILE = "verify-key.pem"


@app.command("generate")
def generate(
    output: Annotated[Path, typer.Option(help="Directory for signing-key.pem (mode 0600) and verify-key.pem.")],
    force: Annotated[bool, typer.Option(help="Overwrite existing key files.")] = False,
) -> None:
    """Create a key pair: the private key signs published bundles, the public key verifies them on load."""
    from fraud_detection.model.bundle import generate_key_pair, key_id, load_verify_key

    def body() -> None:
        private_pem, public_pem = generate_key_pair()
        output.mkdir(parents=True, exist_ok=True)
        signing, verify = output / SIGNING_FILE, output / VERIFY_FILE
        for path in (signing, verify):
            if path.exists() and not force:
                raise FileExistsError(f"{path} exists: keep it, or pass --force to replace the key pair")
        signing.unlink(missing_ok=True)
        fd = os.open(signing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(private_pem)
        verify.write_text(public_pem)
        console.print(f"key {key_id(load_verify_key(public_pem))}")
        console.print(f"private (FRAUD_SIGNING_KEY, the pipeline's Secret only): {signing}")
        console.print(f"public  (FRAUD_VERIFY_KEY, every loader):              {verify}")

    guarded(body)
