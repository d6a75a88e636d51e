"""The serving dashboard: traffic, latency, errors, decisions and scores of the KServe model server per version."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, table
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from monitoring.dashboards.panels import (
    DATASOURCE,
    MODEL,
    MODEL_NAME,
    add_row,
    base_dashboard,
    graph,
    queries,
    query,
    query_variable,
    single_stat,
)

P99_OBJECTIVE_SECONDS = 2.0  # FraudServingHighLatency
ERROR_RATIO_OBJECTIVE = 0.05  # FraudServingHighErrorRate
FRAUD_ROWS = f'{MODEL}, decision="fraud"'


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
