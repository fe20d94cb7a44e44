"""The report's charts as inline SVG (matplotlib, Agg): no scripts, no fonts to fetch.

Text is drawn as paths (`svg.fonttype: path`), so the SVG looks the same offline on
any machine.
"""

from __future__ import annotations

import io
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

PALETTE = [
    "#1f5a96",
    "#d9822b",
    "#3a8f5c",
    "#b33a3a",
    "#7a5aa6",
    "#8c6d46",
    "#c45c9c",
    "#6b6b6b",
    "#a3a332",
    "#2aa3b3",
]
_STYLE: Any = {
    "svg.fonttype": "path",
    "svg.hashsalt": "fairpool",  # stable ids: the same report renders the same bytes
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
}


def _svg(figure: Figure, title: str) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # Matplotlib's RDF block only names schemas; a report keeps no foreign URLs.
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    # Inline SVGs scale with the page; an accessible title names the chart.
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", text, count=1)
    return text.replace(">", f' role="img" aria-label="{title}"><title>{title}</title>', 1)


def _figure(width: float = 7.5, height: float = 3.0) -> tuple[Figure, plt.Axes]:
    with plt.rc_context(_STYLE):
        figure, axes = plt.subplots(figsize=(width, height))
    return figure, axes


def color_for(members: list[str]) -> dict[str, str]:
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(members)}


def daily_stacked(daily: pd.DataFrame, colors: dict[str, str]) -> str:
    title = "GPU-hours used per day, by member"
    with plt.rc_context(_STYLE):
        figure, axes = _figure()
        bottom = np.zeros(len(daily))
        labels = [pd.Timestamp(d).day for d in daily.index]
        x = np.arange(len(daily))
        for member in daily.columns:
            values = daily[member].to_numpy(dtype="float64")
            axes.bar(x, values, bottom=bottom, color=colors.get(member, "#999999"), label=member)
            bottom += values
        axes.set_xticks(x, [str(d) for d in labels], fontsize=7)
        axes.set_xlabel("day of month (local time)")
        axes.set_ylabel("GPU-hours")
        axes.set_title(title, pad=22)
        if len(daily.columns):
            axes.legend(
                fontsize=8,
                frameon=False,
                ncols=min(6, len(daily.columns)),
                loc="lower left",
                bbox_to_anchor=(0.0, 1.0),
            )
        return _svg(figure, title)


def entitlement_vs_use(table: pd.DataFrame, colors: dict[str, str]) -> str:
    title = "Entitlement vs use (GPU-hours)"
    with plt.rc_context(_STYLE):
        grouped = table.groupby("member", sort=False)[
            ["entitlement_gpu_hours", "used_gpu_hours"]
        ].sum()
        figure, axes = _figure(height=0.6 + 0.5 * max(1, len(grouped)))
        y = np.arange(len(grouped))
        axes.barh(
            y + 0.2,
            grouped["entitlement_gpu_hours"],
            height=0.38,
            color="#c9d3de",
            label="entitlement",
        )
        axes.barh(
            y - 0.2,
            grouped["used_gpu_hours"],
            height=0.38,
            color=[colors.get(m, "#999999") for m in grouped.index],
            label="used",
        )
        axes.set_yticks(y, list(grouped.index))
        axes.invert_yaxis()
        axes.set_xlabel("GPU-hours")
        axes.set_title(title)
        axes.legend(fontsize=8, frameon=False)
        return _svg(figure, title)


def lent_heatmap(flows: pd.DataFrame) -> str:
    title = "Used on others' hardware: GPU-hours of member (row) on owner's nodes (column)"
    with plt.rc_context(_STYLE):
        n = max(1, len(flows))
        figure, axes = _figure(width=1.6 + 0.9 * len(flows.columns), height=1.0 + 0.55 * n)
        values = flows.to_numpy(dtype="float64")
        axes.imshow(values, cmap="Blues", aspect="auto", vmin=0)
        axes.set_xticks(range(len(flows.columns)), list(flows.columns), rotation=30, ha="right")
        axes.set_yticks(range(len(flows.index)), list(flows.index))
        axes.set_xlabel("owner (lent)")
        axes.set_ylabel("member (used)")
        peak = values.max() if values.size else 0.0
        for (i, j), value in np.ndenumerate(values):
            text = "-" if i == j else f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"
            axes.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if peak and value > 0.6 * peak else "#222222",
            )
        axes.set_title("Lent (GPU-hours)")
        axes.spines[:].set_visible(False)
        return _svg(figure, title)


def utilization(daily: pd.DataFrame) -> str:
    title = "Utilization and GPU activity per day"
    with plt.rc_context(_STYLE):
        figure, axes = _figure(height=2.6)
        x = np.arange(len(daily))
        axes.plot(
            x,
            daily["allocation"].to_numpy(dtype="float64") * 100,
            color="#1f5a96",
            marker="o",
            markersize=3,
            label="utilization (allocated / available)",
        )
        activity = daily["utilization"].to_numpy(dtype="float64")
        if np.isfinite(activity).any():
            axes.plot(
                x,
                activity * 100,
                color="#d9822b",
                marker="s",
                markersize=3,
                label="GPU activity (DCGM; n/a below half coverage)",
            )
        axes.set_ylim(0, 105)
        axes.set_xticks(x, [str(pd.Timestamp(d).day) for d in daily["day"]], fontsize=7)
        axes.set_xlabel("day of month (local time)")
        axes.set_ylabel("%")
        axes.set_title(title)
        axes.legend(fontsize=8, frameon=False, loc="lower left")
        return _svg(figure, title)


def coverage(daily: pd.DataFrame) -> str:
    title = "Data coverage per day"
    with plt.rc_context(_STYLE):
        figure, axes = _figure(height=2.2)
        x = np.arange(len(daily))
        hours = daily["hours"].to_numpy(dtype="float64")
        missing = daily["hours_missing"].to_numpy(dtype="float64")
        partial = daily["hours_partial"].to_numpy(dtype="float64")
        complete = hours - missing - partial
        axes.bar(x, complete, color="#3a8f5c", label="complete hours")
        axes.bar(x, partial, bottom=complete, color="#e0b341", label="partial hours")
        axes.bar(x, missing, bottom=complete + partial, color="#b33a3a", label="missing hours")
        axes.set_xticks(x, [str(pd.Timestamp(d).day) for d in daily["day"]], fontsize=7)
        axes.set_ylim(0, 26)
        axes.set_xlabel("day of month (local time)")
        axes.set_ylabel("hours")
        axes.set_title(title, pad=22)
        axes.legend(fontsize=8, frameon=False, ncols=3, loc="lower left", bbox_to_anchor=(0.0, 1.0))
        return _svg(figure, title)
