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
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

LOG = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
DATASOURCE = dash_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["fraud-detection"]
P99_OBJECTIVE_SECONDS = 2.0  # FraudServingHighLatency
ERROR_RATIO_OBJECTIVE = 0.05  # FraudServingHighErrorRate
AP_FLOOR = 0.30  # FraudRealisedAveragePrecisionLow
DRIFT_SCHEDULE_SECONDS = 3600  # FraudDriftJobStale fires after twice this

# Label matchers shared by the queries of one dashboard.
MODEL = 'model_name=~"$model_name", model_version=~"$model_version"'
MODEL_NAME = 'model_name=~"$model_name"'
FEATURE = f'{MODEL}, feature=~"$feature"'
QUALITY = f'{MODEL}, maturity=~"$maturity"'
FRAUD_ROWS = f'{MODEL}, decision="fraud"'

Target = cogbuilder.Builder[cogvariants.Dataquery]
PanelBuilder = timeseries.Panel | stat.Panel | heatmap.Panel | table.Panel | statetimeline.Panel | bargauge.Panel


# ---------------------------------------------------------------------------------------------- building blocks


def query(expr: str, legend: str = "__auto", *, ref_id: str = "A", instant: bool = False) -> prometheus.Dataquery:
    """A Prometheus query on the dashboard's datasource variable.

    Args:
        expr: The PromQL expression (Grafana variables allowed).
        legend: Legend format, e.g. ``{{model_version}}``.
        ref_id: The query's reference id within its panel.
        instant: Query only the latest value instead of a range.

    Returns:
        The query builder.
    """
    builder = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)
    return builder.instant() if instant else builder.range()


def queries(*specs: tuple[str, str], instant: bool = False) -> list[Target]:
    """Several queries with reference ids A, B, C, ...

    Args:
        *specs: ``(expr, legend)`` pairs.
        instant: Query only the latest values.

    Returns:
        The query builders, in order.
    """
    return [
        query(expr, legend, ref_id=chr(ord("A") + index), instant=instant) for index, (expr, legend) in enumerate(specs)
    ]


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds; the first step's value is ``None`` (minus infinity).

    Args:
        *steps: ``(value, color)`` pairs in ascending order.

    Returns:
        The thresholds builder.
    """
    return (
        dash.ThresholdsConfig()
        .mode(dash_models.ThresholdsMode.ABSOLUTE)
        .steps([dash_models.Threshold(value=value, color=color) for value, color in steps])
    )


def flag_mappings(off: str, on: str) -> list[dash_models.ValueMapping]:
    """Value mappings of a 0/1 gauge.

    Args:
        off: Text shown for 0 (green).
        on: Text shown for 1 (red).

    Returns:
        The value mappings.
    """
    return [
        dash_models.ValueMap(
            options={
                "0": dash_models.ValueMappingResult(text=off, color="green", index=0),
                "1": dash_models.ValueMappingResult(text=on, color="red", index=1),
            }
        )
    ]


def graph(
    title: str,
    description: str,
    targets: Sequence[Target],
    unit: str,
    *,
    width: int = 12,
    height: int = 8,
    min_val: float | None = None,
    max_val: float | None = None,
    threshold_line: float | None = None,
    stacked: bool = False,
) -> timeseries.Panel:
    """A time-series panel with a table legend.

    Args:
        title: Panel title.
        description: Panel description (what it shows and how to read it).
        targets: The panel's queries.
        unit: Grafana unit id (``s``, ``percentunit``, ``reqps``, ...).
        width: Grid width (of 24).
        height: Grid height.
        min_val: Axis minimum.
        max_val: Axis maximum.
        threshold_line: Draw a dashed red line at this value (an alert's threshold).
        stacked: Stack the series.

    Returns:
        The panel builder.
    """
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
    )
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    if threshold_line is not None:
        panel = panel.thresholds(thresholds((None, "transparent"), (threshold_line, "red"))).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL)).fill_opacity(60)
    return panel


def single_stat(
    title: str,
    description: str,
    targets: Sequence[Target],
    unit: str,
    steps: Sequence[tuple[float | None, str]],
    *,
    width: int = 4,
    mappings: list[dash_models.ValueMapping] | None = None,
) -> stat.Panel:
    """A stat panel showing the last value of each series, coloured by thresholds.

    Args:
        title: Panel title.
        description: Panel description.
        targets: The panel's queries.
        unit: Grafana unit id.
        steps: Threshold steps ``(value, color)``, the first value ``None``.
        width: Grid width (of 24).
        mappings: Value mappings (for 0/1 flags).

    Returns:
        The panel builder.
    """
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(list(targets))
        .unit(unit)
        .span(width)
        .height(4)
        .thresholds(thresholds(*steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    return panel.mappings(mappings) if mappings else panel


def query_variable(name: str, label: str, expr: str, *, include_all: bool = True) -> dash.QueryVariable:
    """A multi-value Prometheus ``label_values`` variable on the datasource variable.

    Args:
        name: Variable name.
        label: Label shown on the dashboard.
        expr: The variable query, e.g. ``label_values(metric, label)``.
        include_all: Offer "All" (matching any value, ``.*``).

    Returns:
        The variable builder.
    """
    variable = (
        dash.QueryVariable(name)
        .label(label)
        .query(expr)
        .datasource(DATASOURCE)
        .refresh(dash_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_models.VariableSort.NATURAL_ASC)
        .multi(True)
    )
    if include_all:
        variable = (
            variable.include_all(True)
            .all_value(".*")
            .current(dash_models.VariableOption(selected=True, text="All", value="$__all"))
        )
    return variable


def base_dashboard(uid: str, title: str, description: str, variables: Sequence[dash.QueryVariable]) -> dash.Dashboard:
    """A dashboard with the common settings and the datasource variable first.

    Args:
        uid: Stable dashboard uid (links and the sidecar rely on it).
        title: Dashboard title.
        description: Dashboard description.
        variables: Query variables after ``datasource``.

    Returns:
        The dashboard builder.
    """
    builder = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(dash_models.DashboardCursorSync.CROSSHAIR)
        .with_variable(dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .link(
            dash.DashboardLink("Fraud detection")
            .type(dash_models.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for variable in variables:
        builder = builder.with_variable(variable)
    return builder


def add_row(builder: dash.Dashboard, title: str, panels: Sequence[PanelBuilder]) -> dash.Dashboard:
    """Append a row and its panels (laid out left to right, wrapping at 24 columns).

    Args:
        builder: The dashboard.
        title: Row title.
        panels: The row's panels.

    Returns:
        The dashboard builder.
    """
    builder = builder.with_row(dash.Row(title))
    for panel in panels:
        builder = builder.with_panel(panel)
    return builder


# ---------------------------------------------------------------------------------------------- serving


def _rate(metric: str, selector: str = MODEL) -> str:
    return f"rate({metric}{{{selector}}}[$__rate_interval])"


def _quantile(quantile: float, metric: str) -> str:
    return f"histogram_quantile({quantile}, sum by (model_version, le) ({_rate(metric + '_bucket')}))"


def serving_dashboard() -> dash.Dashboard:
    """The model server: traffic, latency, errors, decisions and scores per model version.

    Returns:
        The dashboard builder.
    """
    requests = f"sum by (model_version) ({_rate('fraud_serving_requests_total')})"
    builder = base_dashboard(
        "fraud-serving",
        "Fraud detection / Serving",
        "KServe model server: requests, latency, errors, decisions and fraud scores per model version. During a "
        "canary rollout two versions serve at once: the canary is the one with the smaller traffic share.",
        [
            query_variable("model_name", "Model", "label_values(fraud_serving_model_info, model_name)"),
            query_variable(
                "model_version",
                "Version",
                f"label_values(fraud_serving_model_info{{{MODEL_NAME}}}, model_version)",
            ),
        ],
    )
    builder = add_row(
        builder,
        "Overview",
        [
            single_stat(
                "Requests/s",
                "Scoring requests per second, all selected versions and protocols.",
                [query(f"sum({_rate('fraud_serving_requests_total')})", "requests/s")],
                "reqps",
                [(None, "blue")],
            ),
            single_stat(
                "Error rate",
                "Failed requests / requests, all kinds. FraudServingHighErrorRate fires above 5 % for 5 minutes.",
                [
                    query(
                        f"(sum({_rate('fraud_serving_errors_total')}) or vector(0))"
                        f" / sum({_rate('fraud_serving_requests_total')})",
                        "error rate",
                    )
                ],
                "percentunit",
                [(None, "green"), (0.01, "orange"), (ERROR_RATIO_OBJECTIVE, "red")],
            ),
            single_stat(
                "p99 latency (worst version)",
                "The highest p99 latency of the selected versions. FraudServingHighLatency fires above 2 s.",
                [query(f"max({_quantile(0.99, 'fraud_serving_request_duration_seconds')})", "p99")],
                "s",
                [(None, "green"), (1.0, "orange"), (P99_OBJECTIVE_SECONDS, "red")],
            ),
            single_stat(
                "Fraud decisions",
                "Share of scored rows decided as fraud (score at or above the bundle's threshold).",
                [
                    query(
                        f"sum({_rate('fraud_serving_predictions_total', FRAUD_ROWS)})"
                        f" / sum({_rate('fraud_serving_predictions_total')})",
                        "fraud share",
                    )
                ],
                "percentunit",
                [(None, "blue")],
            ),
            single_stat(
                "Payload-log rows dropped/s",
                "Rows the payload log dropped (buffer full or store failing). Drift and quality need that log.",
                [query(f"sum({_rate('fraud_serving_payload_log_dropped_total')}) or vector(0)", "dropped/s")],
                "short",
                [(None, "green"), (0.000001, "red")],
            ),
            table.Panel()
            .title("Loaded models")
            .description("The bundle each version serves and its decision threshold (fraud_serving_model_info).")
            .datasource(DATASOURCE)
            .targets(
                [
                    query(
                        f"count by (model_name, model_version, threshold) (fraud_serving_model_info{{{MODEL}}})",
                        instant=True,
                    ).format(PromQueryFormat.TABLE)
                ]
            )
            .span(4)
            .height(4)
            .with_transformation(
                dash_models.DataTransformerConfig(
                    id_val="organize",
                    options={"excludeByName": {"Time": True}, "renameByName": {"Value": "replicas"}},
                )
            ),
        ],
    )
    builder = add_row(
        builder,
        "Traffic and errors",
        [
            graph(
                "Requests/s by version",
                "Scoring requests per second per model version.",
                [query(requests, "{{model_version}}")],
                "reqps",
                min_val=0,
            ),
            graph(
                "Traffic share by version (canary vs stable)",
                "Share of the model's traffic each version receives over 5 minutes (recording rule "
                "fraud:serving_traffic_share:rate5m). The canary alerts treat a version under 50 % as the canary.",
                [query(f"fraud:serving_traffic_share:rate5m{{{MODEL}}}", "{{model_version}}")],
                "percentunit",
                min_val=0,
                max_val=1,
            ),
            graph(
                "Error rate by version and kind",
                "Failed requests / requests per version, split by kind: validation (400), not_found (404), "
                "internal (500). The dashed line is the 5 % alert threshold (all kinds together).",
                [
                    query(
                        f"sum by (model_version, kind) ({_rate('fraud_serving_errors_total')})"
                        f" / on (model_version) group_left () {requests}",
                        "{{model_version}} {{kind}}",
                    )
                ],
                "percentunit",
                min_val=0,
                threshold_line=ERROR_RATIO_OBJECTIVE,
                stacked=True,
            ),
            graph(
                "Requests/s by version and protocol",
                "Scoring requests per second per version and protocol (v2_rest, v2_grpc, v1_rest).",
                [
                    query(
                        f"sum by (model_version, protocol) ({_rate('fraud_serving_requests_total')})",
                        "{{model_version}} {{protocol}}",
                    )
                ],
                "reqps",
                min_val=0,
            ),
        ],
    )
    builder = add_row(
        builder,
        "Latency",
        [
            graph(
                "Latency p50 / p90 / p99 by version",
                "End-to-end scoring latency inside the server, per version. The dashed line is the 2 s p99 "
                "objective (FraudServingHighLatency).",
                queries(
                    *(
                        (_quantile(q, "fraud_serving_request_duration_seconds"), f"p{p} {{{{model_version}}}}")
                        for q, p in ((0.5, 50), (0.9, 90), (0.99, 99))
                    )
                ),
                "s",
                width=16,
                min_val=0,
                threshold_line=P99_OBJECTIVE_SECONDS,
            ),
            graph(
                "Mean latency by version",
                "Mean scoring latency per version (histogram sum / count).",
                [
                    query(
                        f"sum by (model_version) ({_rate('fraud_serving_request_duration_seconds_sum')})"
                        f" / sum by (model_version) ({_rate('fraud_serving_request_duration_seconds_count')})",
                        "{{model_version}}",
                    )
                ],
                "s",
                width=8,
                min_val=0,
            ),
        ],
    )
    builder = add_row(
        builder,
        "Decisions and scores",
        [
            graph(
                "Scored rows/s by decision",
                "Rows scored per second per version and decision (fraud or legit at the bundle's threshold).",
                [
                    query(
                        f"sum by (model_version, decision) ({_rate('fraud_serving_predictions_total')})",
                        "{{model_version}} {{decision}}",
                    )
                ],
                "short",
                min_val=0,
            ),
            graph(
                "Fraud decision share by version",
                "Share of rows decided as fraud per version: the alert volume analysts see. A canary whose share "
                "differs much from the stable version's shifts the analysts' workload.",
                [
                    query(
                        f"sum by (model_version) ({_rate('fraud_serving_predictions_total', FRAUD_ROWS)})"
                        f" / sum by (model_version) ({_rate('fraud_serving_predictions_total')})",
                        "{{model_version}}",
                    )
                ],
                "percentunit",
                min_val=0,
            ),
            graph(
                "Fraud score quantiles by version",
                "Median, p90 and p99 of the calibrated fraud score per version (score histogram, buckets 0.001 to 1).",
                queries(
                    *(
                        (_quantile(q, "fraud_serving_score_ratio"), f"p{p} {{{{model_version}}}}")
                        for q, p in ((0.5, 50), (0.9, 90), (0.99, 99))
                    )
                ),
                "percentunit",
                min_val=0,
                max_val=1,
            ),
            graph(
                "Mean fraud score by version",
                "Mean calibrated fraud score per version: close to the fraud base rate for a calibrated model.",
                [
                    query(
                        f"sum by (model_version) ({_rate('fraud_serving_score_ratio_sum')})"
                        f" / sum by (model_version) ({_rate('fraud_serving_score_ratio_count')})",
                        "{{model_version}}",
                    )
                ],
                "percentunit",
                min_val=0,
            ),
            heatmap.Panel()
            .title("Fraud score distribution: $model_version")
            .description(
                "Scored rows per second in each score bucket over time, one heatmap per selected version (the "
                "panel repeats over model_version), so canary and stable distributions sit side by side."
            )
            .datasource(DATASOURCE)
            .targets(
                [
                    query(f"sum by (le) ({_rate('fraud_serving_score_ratio_bucket')})", "{{le}}").format(
                        PromQueryFormat.HEATMAP
                    )
                ]
            )
            .repeat("model_version")
            .repeat_direction("h")
            .max_per_row(2)
            .span(12)
            .height(9)
            .calculate(False)
            .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE))
            .color(
                heatmap.HeatmapColorOptions()
                .mode(heatmap_models.HeatmapColorMode.SCHEME)
                .scheme("Oranges")
                .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
                .exponent(0.5)
                .steps(64)
            )
            .y_axis(heatmap.YAxisConfig().unit("percentunit").decimals(3))
            .cell_values(heatmap.CellValues().unit("short").decimals(2))
            .mode(common.TooltipDisplayMode.SINGLE)
            .show_y_histogram(),
        ],
    )
    return builder


# ---------------------------------------------------------------------------------------------- drift


def drift_dashboard() -> dash.Dashboard:
    """The drift job: per-feature drift, drifted share, dataset and score drift, window and job health.

    Returns:
        The dashboard builder.
    """
    builder = base_dashboard(
        "fraud-drift",
        "Fraud detection / Drift",
        "The drift CronJob compares a window of the payload log with the bundle's reference sample (Evidently) and "
        "pushes gauges to the Pushgateway. A value stays until the next run overwrites it: check the last-success "
        "age before trusting the others.",
        [
            query_variable(
                "model_name", "Model", "label_values(fraud_drift_last_success_timestamp_seconds, model_name)"
            ),
            query_variable(
                "model_version", "Version", f"label_values(fraud_drift_window_rows{{{MODEL_NAME}}}, model_version)"
            ),
            query_variable("feature", "Feature", f"label_values(fraud_drift_feature_score{{{MODEL}}}, feature)"),
        ],
    )
    builder = add_row(
        builder,
        "Latest run",
        [
            single_stat(
                "Dataset drift",
                "Evidently's dataset drift verdict in the latest run (FraudDatasetDriftSustained fires after two "
                "consecutive drifted runs).",
                [query(f"max by (model_version) (fraud_drift_dataset_drifted{{{MODEL}}})", "{{model_version}}")],
                "none",
                [(None, "green"), (1, "red")],
                mappings=flag_mappings("no drift", "DRIFT"),
            ),
            single_stat(
                "Score drift",
                "Whether the fraud-score distribution drifted from the reference sample's (FraudScoreDrift).",
                [query(f"max by (model_version) (fraud_drift_prediction_drifted{{{MODEL}}})", "{{model_version}}")],
                "none",
                [(None, "green"), (1, "red")],
                mappings=flag_mappings("no drift", "DRIFT"),
            ),
            single_stat(
                "Drifted features",
                "Share of the features Evidently found drifted in the latest run.",
                [query(f"max by (model_version) (fraud_drift_drifted_features_ratio{{{MODEL}}})", "{{model_version}}")],
                "percentunit",
                [(None, "green"), (0.2, "orange"), (0.5, "red")],
            ),
            single_stat(
                "Window rows",
                "Payload-log rows in the analysed window.",
                [query(f"sum by (model_version) (fraud_drift_window_rows{{{MODEL}}})", "{{model_version}}")],
                "short",
                [(None, "blue")],
            ),
            single_stat(
                "Window too small",
                "1 when the window had too few rows to judge drift: then no drift is reported at all.",
                [query(f"max by (model_version) (fraud_drift_window_too_small{{{MODEL}}})", "{{model_version}}")],
                "none",
                [(None, "green"), (1, "orange")],
                mappings=flag_mappings("ok", "TOO SMALL"),
            ),
            single_stat(
                "Last success",
                "Time since the last successful drift run. FraudDriftJobStale fires after twice the hourly schedule.",
                [
                    query(
                        f"time() - max by (model_name) (fraud_drift_last_success_timestamp_seconds{{{MODEL_NAME}}})",
                        "{{model_name}}",
                    )
                ],
                "s",
                [(None, "green"), (DRIFT_SCHEDULE_SECONDS * 1.25, "orange"), (DRIFT_SCHEDULE_SECONDS * 2, "red")],
            ),
        ],
    )
    builder = add_row(
        builder,
        "Features",
        [
            graph(
                "Drift score per feature",
                "Evidently's drift score of each feature: the stat test's p-value (drift when low) or a distance "
                "(drift when high), depending on the feature's type and the window size.",
                [query(f"fraud_drift_feature_score{{{FEATURE}}}", "{{feature}} {{model_version}}")],
                "short",
                width=16,
            ),
            bargauge.Panel()
            .title("Drift score per feature (latest)")
            .description("The latest drift score of each feature.")
            .datasource(DATASOURCE)
            .targets([query(f"fraud_drift_feature_score{{{FEATURE}}}", "{{feature}} {{model_version}}", instant=True)])
            .span(8)
            .height(8)
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .unit("short"),
            statetimeline.Panel()
            .title("Drifted features over time")
            .description("Which features Evidently flagged as drifted in each run (red) over time.")
            .datasource(DATASOURCE)
            .targets([query(f"fraud_drift_feature_drifted{{{FEATURE}}}", "{{feature}} {{model_version}}")])
            .mappings(flag_mappings("ok", "drifted"))
            .thresholds(thresholds((None, "green"), (1, "red")))
            .show_value(common.VisibilityMode.NEVER)
            .merge_values(True)
            .span(16)
            .height(8),
            graph(
                "Share of drifted features",
                "Share of features flagged as drifted per version, run after run.",
                [query(f"fraud_drift_drifted_features_ratio{{{MODEL}}}", "{{model_version}}")],
                "percentunit",
                width=8,
                min_val=0,
                max_val=1,
            ),
        ],
    )
    builder = add_row(
        builder,
        "Dataset and score drift",
        [
            statetimeline.Panel()
            .title("Dataset and score drift verdicts")
            .description("Dataset drift and fraud-score drift verdicts per version, run after run.")
            .datasource(DATASOURCE)
            .targets(
                queries(
                    (f"fraud_drift_dataset_drifted{{{MODEL}}}", "dataset {{model_version}}"),
                    (f"fraud_drift_prediction_drifted{{{MODEL}}}", "score {{model_version}}"),
                )
            )
            .mappings(flag_mappings("no drift", "drift"))
            .thresholds(thresholds((None, "green"), (1, "red")))
            .show_value(common.VisibilityMode.NEVER)
            .merge_values(True)
            .span(12)
            .height(8),
            graph(
                "Fraud-score drift score",
                "Drift score of the fraud-score distribution against the reference sample's.",
                [query(f"fraud_drift_prediction_score{{{MODEL}}}", "{{model_version}}")],
                "short",
            ),
        ],
    )
    builder = add_row(
        builder,
        "Window and job",
        [
            graph(
                "Window rows",
                "Payload-log rows in each analysed window.",
                [query(f"fraud_drift_window_rows{{{MODEL}}}", "{{model_version}}")],
                "short",
                width=8,
                min_val=0,
            ),
            graph(
                "Time since last success",
                "Age of the last successful run; the dashed line is the stale threshold (twice the schedule).",
                [
                    query(
                        f"time() - max by (model_name) (fraud_drift_last_success_timestamp_seconds{{{MODEL_NAME}}})",
                        "{{model_name}}",
                    )
                ],
                "s",
                width=8,
                min_val=0,
                threshold_line=2 * DRIFT_SCHEDULE_SECONDS,
            ),
            graph(
                "Run duration",
                "Wall time of the last drift run.",
                [query(f"max by (model_name) (fraud_drift_duration_seconds{{{MODEL_NAME}}})", "{{model_name}}")],
                "s",
                width=8,
                min_val=0,
            ),
        ],
    )
    return builder


# ---------------------------------------------------------------------------------------------- model quality


def model_quality_dashboard() -> dash.Dashboard:
    """Realised quality on delayed labels by maturity, estimated precision and the unlabelled share.

    Returns:
        The dashboard builder.
    """
    builder = base_dashboard(
        "fraud-model-quality",
        "Fraud detection / Model quality",
        "Realised average precision, recall and precision at the threshold, measured by the drift job once "
        "chargeback labels arrive, per model version and label maturity (predictions whose labels had 7, 14 or 30 "
        "days to arrive, or all). Before labels arrive, precision is estimated from the calibrated scores.",
        [
            query_variable("model_name", "Model", "label_values(fraud_quality_unlabelled_ratio, model_name)"),
            query_variable(
                "model_version",
                "Version",
                f"label_values(fraud_quality_unlabelled_ratio{{{MODEL_NAME}}}, model_version)",
            ),
            query_variable(
                "maturity",
                "Label maturity",
                f"label_values(fraud_quality_average_precision_ratio{{{MODEL}}}, maturity)",
            ),
        ],
    )
    builder = add_row(
        builder,
        "Latest",
        [
            bargauge.Panel()
            .title("Realised average precision (latest)")
            .description(
                "Latest realised AP per version and label maturity. FraudRealisedAveragePrecisionLow fires below "
                "0.30 on 14d or 30d labels."
            )
            .datasource(DATASOURCE)
            .targets(
                [
                    query(
                        f"fraud_quality_average_precision_ratio{{{QUALITY}}}",
                        "{{model_version}} {{maturity}}",
                        instant=True,
                    )
                ]
            )
            .span(8)
            .height(6)
            .min(0)
            .max(1)
            .orientation(common.VizOrientation.HORIZONTAL)
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .thresholds(thresholds((None, "red"), (AP_FLOOR, "green")))
            .unit("percentunit"),
            single_stat(
                "Estimated precision",
                "Precision at the threshold estimated from calibrated scores (expected fraud among alerts): an "
                "estimate available before labels arrive.",
                [query(f"fraud_quality_estimated_precision_ratio{{{MODEL}}}", "{{model_version}}")],
                "percentunit",
                [(None, "blue")],
                width=8,
            ),
            single_stat(
                "Unlabelled share",
                "Share of logged predictions with no label yet: realised metrics cover only the rest.",
                [query(f"fraud_quality_unlabelled_ratio{{{MODEL}}}", "{{model_version}}")],
                "percentunit",
                [(None, "blue")],
                width=8,
            ),
        ],
    )
    builder = add_row(
        builder,
        "Realised quality by label maturity",
        [
            graph(
                "Realised average precision",
                "AP on labelled predictions per version and label maturity. Fresh maturities miss late "
                "chargebacks; the dashed line is the 0.30 floor.",
                [query(f"fraud_quality_average_precision_ratio{{{QUALITY}}}", "{{model_version}} {{maturity}}")],
                "percentunit",
                min_val=0,
                max_val=1,
                threshold_line=AP_FLOOR,
            ),
            graph(
                "Realised recall at the threshold",
                "Share of labelled fraud the model flagged, per version and label maturity.",
                [query(f"fraud_quality_recall_ratio{{{QUALITY}}}", "{{model_version}} {{maturity}}")],
                "percentunit",
                min_val=0,
                max_val=1,
            ),
            graph(
                "Realised vs estimated precision",
                "Realised precision at the threshold per label maturity next to the estimate from calibrated scores.",
                queries(
                    (f"fraud_quality_precision_ratio{{{QUALITY}}}", "{{model_version}} {{maturity}}"),
                    (f"fraud_quality_estimated_precision_ratio{{{MODEL}}}", "{{model_version}} estimated"),
                ),
                "percentunit",
                min_val=0,
                max_val=1,
            ),
            graph(
                "Unlabelled share",
                "Share of logged predictions still waiting for a label, per version.",
                [query(f"fraud_quality_unlabelled_ratio{{{MODEL}}}", "{{model_version}}")],
                "percentunit",
                min_val=0,
                max_val=1,
            ),
        ],
    )
    return builder


# ---------------------------------------------------------------------------------------------- output

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
