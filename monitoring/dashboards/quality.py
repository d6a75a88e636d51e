"""The model-quality dashboard: realised quality on delayed labels, estimated precision, unlabelled share."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common

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
    thresholds,
)

AP_FLOOR = 0.30  # FraudRealisedAveragePrecisionLow
QUALITY = f'{MODEL}, maturity=~"$maturity"'


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
