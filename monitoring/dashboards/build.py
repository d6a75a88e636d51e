"""Build the platform's Grafana dashboards as code with the Grafana Foundation SDK.

``python monitoring/dashboards/build.py`` writes ``serving.json``, ``drift.json`` and ``model-quality.json`` next to
this file (``--output-dir`` to write elsewhere). The JSON is committed: the Helm chart ships it as ConfigMaps
labelled for the Grafana dashboard sidecar. Each dashboard has a stable uid, a Prometheus datasource variable
``datasource`` used by every panel and query, and ``model_name`` / ``model_version`` variables. Metric names and
labels are the contract in docs/METRICS.md; ``fraud:*`` series are recording rules of
``monitoring/alerts/fraud-detection.rules.yaml``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
if not __package__:
    # Run as a script: import the package from the repository root, not from this directory (where serving.py
    # would shadow the top-level serving package).
    sys.path[0] = str(HERE.parents[1])

from grafana_foundation_sdk.builders import dashboard as dash  # noqa: E402
from grafana_foundation_sdk.cog.encoder import JSONEncoder  # noqa: E402
from grafana_foundation_sdk.models import dashboard as dash_models  # noqa: E402

from monitoring.dashboards.drift import drift_dashboard  # noqa: E402
from monitoring.dashboards.quality import model_quality_dashboard  # noqa: E402
from monitoring.dashboards.serving import serving_dashboard  # noqa: E402

LOG = logging.getLogger(__name__)

DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
    "serving.json": serving_dashboard,
    "drift.json": drift_dashboard,
    "model-quality.json": model_quality_dashboard,
}


def build_model(builder: dash.Dashboard) -> dash_models.Dashboard:
    """Build a dashboard and number its rows and panels 1, 2, ... in layout order.

    Args:
        builder: The dashboard builder.

    Returns:
        The dashboard model.
    """
    model = builder.build()
    number = 0
    for panel in model.panels or []:
        number += 1
        panel.id_val = number
        for child in panel.panels if isinstance(panel, dash_models.RowPanel) else []:
            number += 1
            child.id_val = number
    return model


def render(builder: dash.Dashboard) -> str:
    """Serialise a dashboard to stable, sorted, indented JSON.

    Args:
        builder: The dashboard builder.

    Returns:
        The JSON text, ending with a newline.
    """
    return json.dumps(build_model(builder), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def write_dashboards(output_dir: Path) -> list[Path]:
    """Write every dashboard into ``output_dir``, each through a temporary file renamed into place.

    Args:
        output_dir: Target directory (created if missing).

    Returns:
        The written paths.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, build in DASHBOARDS.items():
        target = output_dir / filename
        text = render(build())
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".tmp", dir=output_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        LOG.info("wrote %s", target)
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output-dir", type=Path, default=HERE, help="directory to write the JSON into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    write_dashboards(args.output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
