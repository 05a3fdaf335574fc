"""The "Compute efficiency" dashboard: FLOPs and BOPs next to energy, efficiency and budgets.

Ratios follow DESIGN.md: rate (or increase) each counter first, aggregate, then divide, with a
``> 0`` guard on the joules so an idle meter gives no value instead of +Inf.
Totals are ``max_over_time`` over the range, so a run that has ended still shows its last count.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, VariableRefresh, VariableSort

from .panels import DATASOURCE, RUN, WORK, query, series_panel, stat_panel

UID = "otel-flops-compute-efficiency"

FLOPS = f"otel_flops_flops_total{{{WORK}}}"
BOPS = f"otel_flops_bops_total{{{WORK}}}"
JOULES = f"otel_flops_energy_joules_total{{{RUN}}}"
SKLEARN = f'otel_flops_flops_total{{framework="sklearn", {RUN}, model=~"$model"}}'


def _total(selector: str) -> str:
    return f"sum(max_over_time({selector}[$__range]))"


def _per_joule(selector: str, window: str) -> str:
    return f"sum(increase({selector}[{window}])) / (sum(increase({JOULES}[{window}])) > 0)"


def _per_joule_rate(selector: str) -> str:
    return f"sum(rate({selector}[$__rate_interval])) / (sum(rate({JOULES}[$__rate_interval])) > 0)"


def _budget_used(used: str, gauge: str) -> str:
    """Use over the range as a fraction of each named budget (the gauge a run sets)."""
    return (f"{_total(used)} / on() group_right "
            f"max by (budget) (max_over_time({gauge}{{{RUN}}}[$__range]) > 0)")


def _variables() -> list:
    ds = dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
    chain = [("job", "otel_flops_flops_total"),
             ("instance", 'otel_flops_flops_total{job=~"$job"}'),
             ("model", 'otel_flops_flops_total{job=~"$job", instance=~"$instance"}'),
             ("phase", 'otel_flops_flops_total{job=~"$job", instance=~"$instance", model=~"$model"}'),
             ("device", 'otel_flops_flops_total{job=~"$job", instance=~"$instance", model=~"$model"}'),
             ("dtype", 'otel_flops_flops_total{job=~"$job", instance=~"$instance", model=~"$model"}')]
    return [ds] + [
        dashboard.QueryVariable(name).label(name).datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True)
        for name, metric in chain
    ]


def _section(b: dashboard.Dashboard, title: str, panels: tuple) -> dashboard.Dashboard:
    """A row, then its panels."""
    b = b.with_row(dashboard.Row(title))
    for panel in panels:
        b = b.with_panel(panel)
    return b


def build() -> dashboard.Dashboard:
    """The dashboard as the SDK's model; ``generate.py`` serialises it."""
    b = (
        dashboard.Dashboard("Compute efficiency").uid(UID).tags(["otel-flops"]).editable()
        .description("FLOPs and BOPs counted by otel-flops, with energy, efficiency and compute budgets.")
        .time("now-1h", "now").refresh("30s").tooltip(DashboardCursorSync.CROSSHAIR)
        .variables(_variables())
    )
    b = _section(b, "Totals over the time range", (
        stat_panel("Total FLOPs", "si:FLOP", "FLOPs counted over the range (sum of each series' last value).",
                   query(_total(FLOPS), "FLOPs", instant=True)),
        stat_panel("Total BOPs", "si:BOP", "BOPs (FLOPs x effective bits) counted over the range.",
                   query(_total(BOPS), "BOPs", instant=True)),
        stat_panel("Energy", "joule", "Machine energy (CPU, GPU, RAM) measured over the range.",
                   query(_total(JOULES), "energy", instant=True)),
        stat_panel("FLOP/J", "si:FLOP/J", "FLOPs per joule over the range: both increases first, then divided.",
                   query(_per_joule(FLOPS, "$__range"), "FLOP/J", instant=True)),
        stat_panel("BOP/J", "si:BOP/J", "BOPs per joule over the range: both increases first, then divided.",
                   query(_per_joule(BOPS, "$__range"), "BOP/J", instant=True)),
        stat_panel("Budget used", "percentunit", "Use as a share of each budget set with OTEL_FLOPS_BUDGET_*.",
                   query(_budget_used(f"otel_flops_flops_total{{{RUN}}}", "otel_flops_budget_flops"),
                         "FLOPs {{budget}}", instant=True),
                   query(_budget_used(f"otel_flops_bops_total{{{RUN}}}", "otel_flops_budget_bops"),
                         "BOPs {{budget}}", "B", instant=True),
                   query(_budget_used(JOULES, "otel_flops_budget_joules"), "energy {{budget}}", "C", instant=True)),
    ))

    b = _section(b, "Throughput and efficiency", (
        series_panel("FLOP/s by phase", "flops", "FLOPs per second, by training phase.",
                     query(f"sum by (phase) (rate({FLOPS}[$__rate_interval]))", "{{phase}}")),
        series_panel("BOP/s by dtype", "si:BOP/s", "BOPs per second, by operand dtype and bit-width.",
                     query(f"sum by (dtype, bits) (rate({BOPS}[$__rate_interval]))", "{{dtype}} ({{bits}} bit)")),
        series_panel("Power by hardware", "watt", "Power drawn, by hardware type (cpu, gpu, ram).",
                     query(f"sum by (hw_type) (otel_flops_power_watts{{{RUN}}})", "{{hw_type}}"), span=8),
        series_panel("FLOP/J", "si:FLOP/J", "FLOPs per joule over time.",
                     query(_per_joule_rate(FLOPS), "FLOP/J"), span=8),
        series_panel("BOP/J", "si:BOP/J", "BOPs per joule over time.",
                     query(_per_joule_rate(BOPS), "BOP/J"), span=8),
    ))

    b = _section(b, "Budgets and emissions", (
        *(series_panel(title, unit, "Cumulative use of the running jobs, and each budget they set.",
                       query(f"sum({metric}{{{RUN}}})", "used"),
                       query(f"max by (budget) ({gauge}{{{RUN}}})", "budget {{budget}}", "B"), span=6)
          for title, unit, metric, gauge in (
              ("FLOPs against budget", "si:FLOP", "otel_flops_flops_total", "otel_flops_budget_flops"),
              ("BOPs against budget", "si:BOP", "otel_flops_bops_total", "otel_flops_budget_bops"),
              ("Energy against budget", "joule", "otel_flops_energy_joules_total", "otel_flops_budget_joules"),
          )),
        series_panel("Emissions", "massg", "CO2-equivalent emissions of the energy used, cumulative.",
                     query(f"sum(otel_flops_emissions_grams_total{{{RUN}}})", "CO2eq"), span=6),
    ))

    b = _section(b, "scikit-learn", (
        series_panel("scikit-learn FLOP/s by method", "flops", "FLOPs per second of estimator methods.",
                     query(f"sum by (phase) (rate({SKLEARN}[$__rate_interval]))", "{{phase}}")),
        series_panel("scikit-learn FLOPs by estimator", "si:FLOP", "Cumulative FLOPs of each estimator class.",
                     query(f"sum by (model) ({SKLEARN})", "{{model}}")),
    ))

    b = _section(b, "Per rank", (
        series_panel("FLOP/s by rank", "flops", "FLOPs per second of each scraped process (one per torchrun rank).",
                     query(f"sum by (instance) (rate({FLOPS}[$__rate_interval]))", "{{instance}}")),
        series_panel("Power by rank", "watt", "Energy rate of each process (machine energy: local rank 0).",
                     query(f"sum by (instance) (rate({JOULES}[$__rate_interval]))", "{{instance}}")),
    ))
    built = b.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built
