"""Python footprint of each image target, before and after the per-image extras (no Docker engine needed).

Run: ``.venv/bin/python -m bench.image_size`` (part of ``make bench``). It builds the project wheel once from a copy
of what the Dockerfile's builder stage copies, then for each image target creates a fresh virtualenv, installs the
wheel with the target's extra (non-editable, as the Dockerfile does) and measures it:

* before: every image installed ``[platform]`` (now the union of the three extras: the same distributions as the
  old ``[platform]`` plus matplotlib, which was in the base dependencies);
* after: each image installs its own extra (serve: ``[serve]``, pipeline: ``[pipeline]``, drift: ``[monitor]``).

The size is the disk usage (``du``) of the virtualenv's site-packages, which is what the image's install layer adds
on top of the Python base image (both include the same pip and setuptools). ``pip check`` runs in each, as in the
Dockerfile. The section "Image sizes (issue: restructuring)" of docs/PERFORMANCE.md is rewritten.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.report import update_section

LOG = logging.getLogger("bench.image_size")
ROOT = Path(__file__).resolve().parent.parent
TITLE = "Image sizes (issue: restructuring)"
# What the Dockerfile's builder stage copies (and .dockerignore lets through).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "src", "serving", "components", "pipelines", "monitoring", "cli")
# (image target, extra installed before, extra installed after)
TARGETS = (("serve", "platform", "serve"), ("pipeline", "platform", "pipeline"), ("drift", "platform", "monitor"))
WATCHED = ("kfp", "evidently", "matplotlib", "kubernetes", "kserve")

PROBE = r"""
import json
from importlib.metadata import distributions
names = sorted({(d.metadata["Name"] or "").lower().replace("_", "-") for d in distributions()})
print(json.dumps(names))
"""


@dataclass
class Measurement:
    target: str
    extra: str
    size_mib: float
    distributions: list[str]
    pip_check: str
    install_seconds: float

    def has(self, name: str) -> bool:
        return name in self.distributions


def build_wheel(out: Path) -> Path:
    """Build the project wheel from a copy of the builder stage's sources (never in the working tree)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", ".pytest_cache", ".mypy_cache")
    with tempfile.TemporaryDirectory(prefix="fraud-wheel-") as tmp:
        src = Path(tmp) / "src-tree"
        src.mkdir()
        for name in WHEEL_SOURCES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=ignore)
            elif path.exists():
                shutil.copy2(path, src / name)
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out), str(src)]
        subprocess.run(cmd, check=True)
    (wheel,) = out.glob("fraud_detection-*.whl")
    return wheel


def du_bytes(path: Path) -> int:
    """Disk usage of a tree like ``du -s`` (allocated blocks, hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for item in [path, *path.rglob("*")]:
        st = item.lstat()
        key = (st.st_dev, st.st_ino)
        if key in seen:
            continue
        seen.add(key)
        total += st.st_blocks * 512
    return total


def measure(wheel: Path, workdir: Path, target: str, extra: str, label: str, keep: bool) -> Measurement:
    """Install ``wheel[extra]`` into a fresh virtualenv and measure its site-packages."""
    venv = workdir / f"{label}-{target}"
    if venv.exists():
        shutil.rmtree(venv)
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    t0 = time.perf_counter()
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    install = subprocess.run([*pip, "install", "-q", f"{wheel}[{extra}]"], capture_output=True, text=True)
    if install.returncode != 0:
        raise RuntimeError(f"pip install {wheel.name}[{extra}] failed:\n{install.stdout}\n{install.stderr}")
    seconds = time.perf_counter() - t0
    check = subprocess.run([*pip, "check"], capture_output=True, text=True)
    pip_check = "ok" if check.returncode == 0 else check.stdout.strip().splitlines()[0]
    names = json.loads(subprocess.run([str(python), "-c", PROBE], check=True, capture_output=True, text=True).stdout)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    size = du_bytes(Path(purelib)) / 2**20
    if not keep:
        shutil.rmtree(venv)
    LOG.info("%s [%s]: %.0f MiB, %d distributions, pip check %s", target, extra, size, len(names), pip_check)
    return Measurement(target, extra, size, names, pip_check, seconds)


def markdown(before: list[Measurement], after: list[Measurement]) -> str:
    """The before/after table."""
    mark = {True: "yes", False: "-"}
    head = "| image | extra | site-packages (MiB) | distributions | " + " | ".join(WATCHED) + " | pip check |"
    rows = [head, "|" + "---|" * (5 + len(WATCHED))]
    for label, group in (("before", before), ("after", after)):
        for m in group:
            present = " | ".join(mark[m.has(name)] for name in WATCHED)
            rows.append(
                f"| {m.target} ({label}) | `[{m.extra}]` | {m.size_mib:,.0f} | {len(m.distributions)} | "
                f"{present} | {m.pip_check} |"
            )
    saved = []
    for b, a in zip(before, after, strict=True):
        saved.append(f"{a.target} {b.size_mib - a.size_mib:,.0f} MiB ({(1 - a.size_mib / b.size_mib):.0%})")
    return "\n".join(rows) + "\n\nSaved per image: " + ", ".join(saved) + "."


def main(argv: list[str] | None = None) -> None:
    """Measure before and after for every target; write the docs/PERFORMANCE.md section unless --no-write."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "imgsize")
    parser.add_argument("--keep", action="store_true", help="keep the virtualenvs under --workdir")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/PERFORMANCE.md alone")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(Path(tempfile.mkdtemp(prefix="wheel-", dir=args.workdir)))
    LOG.info("built %s", wheel.name)
    # Installs of the same extra are the same (before, the three images shared one install layer): measure once.
    done: dict[str, Measurement] = {}

    def once(target: str, extra: str, label: str) -> Measurement:
        if extra not in done:
            done[extra] = measure(wheel, args.workdir, target, extra, label, args.keep)
        return replace(done[extra], target=target)

    before = [once(target, extra, "before") for target, extra, _ in TARGETS]
    after = [once(target, extra, "after") for target, _, extra in TARGETS]
    shutil.rmtree(wheel.parent)
    table = markdown(before, after)
    print(table)  # noqa: T201
    if args.no_write:
        return
    body = (
        "Python footprint of each Dockerfile target, measured without a Docker engine: the project wheel installed "
        "(non-editable) with the target's extra into a fresh virtualenv, size = `du` of its site-packages (the "
        "layer the image's `pip install` adds to `python:3.11-slim`; pip and setuptools are in every row). "
        "Before: all three images installed `[platform]`; after: each installs its own extra.\n\n"
        "```bash\n.venv/bin/python -m bench.image_size\n```\n\n"
        f"{table}\n\n"
        "The three before rows are one install: the images shared the runtime stage's `[platform]` layer. "
        "kubernetes stays in the serve image because kserve 0.21 requires it; `[serve]` pins it to the platform's "
        "30.1.0 (unpinned, pip picks 37.x with its asyncio client: 126 MiB instead of 31). The drift image keeps kfp "
        "and kfp-kubernetes for the optional retrain trigger (it compiles and submits the training pipeline); most of "
        "its size is Evidently's own dependencies (plotly 188 MiB, statsmodels 65 MiB). typer and rich (the `fraud` "
        "console script, ~15 MiB with pygments) are in every image."
    )
    LOG.info("wrote %s", update_section(TITLE, body))


if __name__ == "__main__":
    main(sys.argv[1:])
