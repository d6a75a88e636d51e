"""The drift dashboard: per-feature drift, drifted share, dataset and score drift, window and job health."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, statetimeline
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common

from monitoring.dashboards.panels import (
    DATASOURCE,
    MODEL,
    MODEL_NAME,
    add_row,
    base_dashboard,
    flag_mappings,
    graph,
    queries,
    query,
    query_variable,
    single_stat,
    thresholds,
)

DRIFT_SCHEDULE_SECONDS = 3600  # FraudDriftJobStale fires after twice this
FEATURE = f'{MODEL}, feature=~"$feature"'


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
