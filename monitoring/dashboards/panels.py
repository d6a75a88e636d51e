"""Building blocks shared by the dashboards: queries, panels, variables, the common dashboard settings.

Every panel and query uses the Prometheus datasource variable ``datasource``; the label matchers below select the
``model_name`` / ``model_version`` variables every dashboard defines.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash_models

DATASOURCE = dash_models.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["fraud-detection"]

# Label matchers shared by the queries of every dashboard.
MODEL = 'model_name=~"$model_name", model_version=~"$model_version"'
MODEL_NAME = 'model_name=~"$model_name"'

Target = cogbuilder.Builder[cogvariants.Dataquery]
PanelBuilder = timeseries.Panel | stat.Panel | heatmap.Panel | table.Panel | statetimeline.Panel | bargauge.Panel


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
