"""The "Compute efficiency" dashboard: FLOPs and BOPs next to energy, efficiency and budgets.

Ratios follow DESIGN.md: rate (or increase) each counter first, aggregate, then divide, with a
``> 0`` guard on the joules so an idle meter gives no value instead of +Inf. FLOP/J divides the
FLOPs and the joules of the same nodes (a node without an energy series is left out of both) under
the same run and device filters. Totals are ``increase`` over the range: restarts keep their work.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, VariableRefresh, VariableSort

from .panels import DATASOURCE, NODE_ENERGY, RUN, WORK, query, series_panel, stat_panel

UID = "otel-flops-compute-efficiency"

FLOPS = f"otel_flops_flops_total{{{WORK}}}"
BOPS = f"otel_flops_bops_total{{{WORK}}}"
JOULES = f"otel_flops_energy_joules_total{{{NODE_ENERGY}}}"
SKLEARN = f'otel_flops_flops_total{{framework="sklearn", {RUN}, model=~"$model"}}'
# MFU per run, averaged over its ranks (deploy/prometheus/rules/otel-flops.yml); ranks carry no job filter.
MFU = 'otel_flops:mfu:ratio_rate5m{run=~"$run"}'


def _total(selector: str) -> str:
    return f"sum(increase({selector}[$__range]))"


def _per_joule(selector: str, function: str, window: str) -> str:
    """Work per joule over the nodes that have both, the same filters on both sides."""
    work = f"sum by (node) ({function}({selector}[{window}]))"
    joules = f"sum by (node) ({function}({JOULES}[{window}]))"
    return f"sum({work} and on (node) {joules} > 0) / (sum({joules} and on (node) {work}) > 0)"


def _window(kind: str) -> str:
    """One window series (otel_flops.window blocks) summed per window name over the range."""
    return f"sum by (window) (increase(otel_flops_window_{kind}_total{{{RUN}}}[$__range]))"


def _budget_used(used: str, gauge: str) -> str:
    """Each run's use over the range as a fraction of its own budget (the gauge the run sets)."""
    return (f"sum by (run) (increase({used}[$__range])) / on (run) group_right "
            f'max by (run, budget) (max_over_time({gauge}{{{RUN}, pool=""}}[$__range]) > 0)')


def _variables() -> list:
    ds = dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
    chain = [("job", "otel_flops_flops_total"),
             ("run", 'otel_flops_flops_total{job=~"$job"}'),
             ("instance", 'otel_flops_flops_total{job=~"$job", run=~"$run"}'),
             ("model", f"otel_flops_flops_total{{{RUN}}}"),
             ("phase", f'otel_flops_flops_total{{{RUN}, model=~"$model"}}'),
             ("device", f'otel_flops_flops_total{{{RUN}, model=~"$model"}}'),
             ("dtype", f'otel_flops_flops_total{{{RUN}, model=~"$model"}}')]
    variables = [
        dashboard.QueryVariable(name).label(name).datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True)
        for name, metric in chain
    ]
    # "All" devices also takes the energy-only ones (ram), so the joules at "All" are the machine's.
    variables[5] = variables[5].all_value(".*")
    return [ds] + variables


def _section(b: dashboard.Dashboard, title: str, panels: tuple) -> dashboard.Dashboard:
    """A row, then its panels."""
    b = b.with_row(dashboard.Row(title))
    for panel in panels:
        b = b.with_panel(panel)
    return b


def build() -> dashboard.Dashboard:
    """The dashboard as the SDK's model; ``generate.py`` serialises it."""
    b = (
        dashboard.Dashboard("Compute efficiency").uid(UID).tags(["otel-flops"]).readonly()
        .description("FLOPs and BOPs counted by otel-flops, with energy, efficiency and compute budgets.")
        .time("now-1h", "now").refresh("30s").tooltip(DashboardCursorSync.CROSSHAIR)
        .variables(_variables())
    )
    b = _section(b, "Totals over the time range", (
        stat_panel("Total FLOPs", "sishort", "FLOPs counted over the range (increase: restarts keep their work).",
                   query(_total(FLOPS), "FLOPs", instant=True)),
        stat_panel("Total BOPs", "sishort", "BOPs (FLOPs x effective bits) counted over the range.",
                   query(_total(BOPS), "BOPs", instant=True)),
        stat_panel("Energy", "joule", "Machine energy (CPU, GPU, RAM) over the range, each node once.",
                   query(_total(JOULES), "energy", instant=True)),
        stat_panel("FLOP/J", "sishort", "FLOPs per joule over the range: both increases first, then divided.",
                   query(_per_joule(FLOPS, "increase", "$__range"), "FLOP/J", instant=True)),
        stat_panel("BOP/J", "sishort", "BOPs per joule over the range: both increases first, then divided.",
                   query(_per_joule(BOPS, "increase", "$__range"), "BOP/J", instant=True)),
        stat_panel("Budget used", "percentunit", "Each run's use over the range as a share of its own budget "
                   "(OTEL_FLOPS_BUDGET_*); the alerts count 14 days.",
                   query(_budget_used(f"otel_flops_flops_total{{{RUN}}}", "otel_flops_budget_flops"),
                         "FLOPs {{run}} {{budget}}", instant=True),
                   query(_budget_used(f"otel_flops_bops_total{{{RUN}}}", "otel_flops_budget_bops"),
                         "BOPs {{run}} {{budget}}", "B", instant=True),
                   query(_budget_used(JOULES, "otel_flops_budget_joules"), "energy {{run}} {{budget}}", "C",
                         instant=True)),
    ))

    b = _section(b, "Throughput and efficiency", (
        series_panel("FLOP/s by phase", "flops", "FLOPs per second, by training phase.",
                     query(f"sum by (phase) (rate({FLOPS}[$__rate_interval]))", "{{phase}}")),
        series_panel("BOP/s by dtype", "sishort", "BOPs per second, by operand dtype and bit-width.",
                     query(f"sum by (dtype, bits) (rate({BOPS}[$__rate_interval]))", "{{dtype}} ({{bits}} bit)")),
        series_panel("Power by hardware", "watt", "Power drawn, by hardware type (cpu, gpu, ram).",
                     query(f"sum by (hw_type) (otel_flops_power_watts{{{NODE_ENERGY}}})", "{{hw_type}}"), span=8),
        series_panel("FLOP/J", "sishort", "FLOPs per joule over time, over the nodes that measure energy.",
                     query(_per_joule(FLOPS, "rate", "$__rate_interval"), "FLOP/J"), span=8),
        series_panel("BOP/J", "sishort", "BOPs per joule over time, over the nodes that measure energy.",
                     query(_per_joule(BOPS, "rate", "$__rate_interval"), "BOP/J"), span=8),
    ))

    b = _section(b, "Utilisation and windows", (
        series_panel("MFU", "percentunit", "Model FLOP utilisation: seconds the counted work would take at the "
                     "device's dense peak, per second (otel_flops:mfu:ratio_rate5m, mean over the run's ranks).",
                     query(MFU, "{{run}}"), span=8),
        stat_panel("FLOPs by window", "sishort", "FLOPs inside each otel_flops.window block over the range.",
                   query(_window("flops"), "{{window}}", instant=True)),
        stat_panel("Window FLOP/s", "flops", "FLOPs per second spent inside each window over the range.",
                   query(f'{_window("flops")} / ({_window("duration_seconds")} > 0)', "{{window}}", instant=True)),
        stat_panel("Window energy", "joule", "Joules measured while each window was open over the range.",
                   query(_window("energy_joules"), "{{window}}", instant=True)),
        stat_panel("Window time", "s", "Seconds each window was open over the range.",
                   query(_window("duration_seconds"), "{{window}}", instant=True)),
    ))

    b = _section(b, "Budgets and emissions", (
        *(series_panel(title, unit, "Each run's use since the range began (increase), and the budget it set.",
                       query(f"sum by (run) (increase({selector}[$__range]))", "used {{run}}"),
                       query(f"max by (run, budget) ({gauge}{{{RUN}}})", "budget {{run}} {{budget}}", "B"), span=6)
          for title, unit, selector, gauge in (
              ("FLOPs against budget", "sishort", f"otel_flops_flops_total{{{RUN}}}", "otel_flops_budget_flops"),
              ("BOPs against budget", "sishort", f"otel_flops_bops_total{{{RUN}}}", "otel_flops_budget_bops"),
              ("Energy against budget", "joule", JOULES, "otel_flops_budget_joules"),
          )),
        series_panel("Emissions", "massg", "CO2-equivalent emissions of the energy used, per interval.",
                     query(f'sum(increase(otel_flops_emissions_grams_total{{scope="node", {RUN}}}'
                           "[$__rate_interval]))", "CO2eq"), span=6),
    ))

    b = _section(b, "scikit-learn", (
        series_panel("scikit-learn FLOP/s by method", "flops", "FLOPs per second of estimator methods.",
                     query(f"sum by (phase) (rate({SKLEARN}[$__rate_interval]))", "{{phase}}")),
        series_panel("scikit-learn FLOP/s by estimator", "flops", "FLOPs per second of each estimator class.",
                     query(f"sum by (model) (rate({SKLEARN}[$__rate_interval]))", "{{model}}")),
    ))

    b = _section(b, "Per rank", (
        series_panel("FLOP/s by rank", "flops", "FLOPs per second of each scraped process (one per torchrun rank).",
                     query(f"sum by (instance) (rate({FLOPS}[$__rate_interval]))", "{{instance}}")),
        series_panel("Power by node", "watt", "Energy rate of each machine, published by one process per node.",
                     query(f"sum by (node) (rate({JOULES}[$__rate_interval]))", "{{node}}")),
    ))
    built = b.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built
