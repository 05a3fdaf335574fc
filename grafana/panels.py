"""Panel and query helpers: every panel and target reads the dashboard's ``$datasource``."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label filters of the dashboard's variables; energy, power and budgets carry no model/phase/dtype.
RUN = 'job=~"$job", run=~"$run", instance=~"$instance"'
WORK = RUN + ', model=~"$model", phase=~"$phase", device=~"$device", dtype=~"$dtype"'
# Machine energy (one publisher per node), under the same run and device filters as the FLOPs.
NODE_ENERGY = 'scope="node", ' + RUN + ', device=~"$device"'


def query(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    """One PromQL target; stats are instant so they read the range's end, not a reduced series."""
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return q.instant() if instant else q.range()


def stat_panel(title: str, unit: str, description: str, *targets: prometheus.Dataquery) -> stat.Panel:
    """A headline number, 4 wide so six fill a row."""
    panel = (
        stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
        .height(4).span(4).graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def series_panel(title: str, unit: str, description: str, *targets: prometheus.Dataquery,
                 span: int = 12) -> timeseries.Panel:
    """A time series, 8 high."""
    panel = (
        timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
        .height(8).span(span).fill_opacity(10)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel
