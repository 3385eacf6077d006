"""Plotly figures: the accuracy-vs-cost front, per-group widths, per-class accuracy, overlays.

Pure functions of frames and run dicts (no Streamlit), so a page can draw them and a test can
inspect them. Accuracy is a fraction shown as a percentage; x is FLOPs or params, absolute or
as a percentage of the parent's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from engine.config import DEPTH_TEXT
from engine.pareto import knee, pareto_front
from ui.format import METRIC_LABELS, recipe_text, run_channel_block

SAMPLER_COLORS = {"uniform": "#4C78A8", "random": "#F58518", "guided": "#54A24B"}
# The peers' answers a guided search evaluates first (engine.peers), as the legend names them.
PEER_LABELS = {
    "peer:uniform-l1": "Peer: Torch-Pruning uniform L1",
    "peer:taylor": "Peer: Torch-Pruning global Taylor",
    "peer:sensitivity": "Peer: FastNAS-style sensitivity",
}
PEER_COLORS = {
    "peer:uniform-l1": "#1F3B73",
    "peer:taylor": "#9467BD",
    "peer:sensitivity": "#8C564B",
}
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D"]
PARENT_COLOR = "#222222"
KNEE_COLOR = "#E45756"
MARK_COLORS = ["#7B2CBF", "#17BECF", "#8C564B"]  # rings around marked subnets
FINETUNE_COLOR, FINETUNE_EDGE = "#F2B701", "#7A5C00"  # amber diamonds: not the red knee
TUNED_COLOR = "#2CA02C"  # green triangles: the search's own short fine-tune of its finalists
WEBGL_ABOVE = 3000  # points; beyond this the scatter is drawn with WebGL

_HOVER = (
    "<b>Subnet %{customdata[0]}</b><br>accuracy %{y:.2%}<br>"
    "FLOPs %{customdata[1]:.4s} (%{customdata[3]:.1f}% of parent)<br>"
    "params %{customdata[2]:.4s} (%{customdata[4]:.1f}% of parent)<extra>%{fullData.name}</extra>"
)
_RUNTIME_HOVER = "<br>runtime FLOPs %{customdata[5]:.4s} (%{customdata[6]:.1f}% of parent)"


def valid_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with an accuracy and no evaluation error."""
    if df.empty:
        return df
    return df[df["error"].isna() & df["accuracy"].notna()]


def _scale(run: dict, x: str, relative: bool) -> float:
    return 100.0 / float(run[f"parent_{x}"]) if relative else 1.0


def _hover(run: dict) -> str:
    """The point hover text; with runtime FLOPs for runs that have them."""
    if run_channel_block(run) is None:
        return _HOVER
    return _HOVER.replace("<extra>", _RUNTIME_HOVER + "<extra>")


def _custom(df: pd.DataFrame, run: dict) -> np.ndarray:
    runtime = (
        df["runtime_flops"].to_numpy(dtype=float)
        if "runtime_flops" in df
        else np.full(len(df), np.nan)
    )
    parent_runtime = float(run.get("parent_runtime_flops") or np.nan)
    return np.column_stack(
        [
            df["subnet_id"].to_numpy(),
            df["flops"].to_numpy(dtype=float),
            df["params"].to_numpy(dtype=float),
            100.0 * df["flops"].to_numpy(dtype=float) / float(run["parent_flops"]),
            100.0 * df["params"].to_numpy(dtype=float) / float(run["parent_params"]),
            runtime,
            100.0 * runtime / parent_runtime,
        ]
    )


def clicked_subnet(state) -> int | None:
    """The subnet id of the point clicked in a front chart (its selection state), if any.

    Points carry [subnet_id, flops, params, ...] as customdata, which the browser sends back as
    a list or as a dict keyed "0", "1", ...; the parent marker has none.
    """
    points = ((state or {}).get("selection") or {}).get("points") or []
    for point in points:
        data = point.get("customdata")
        first = data[0] if isinstance(data, list) and data else (data or {}).get("0")
        if first is not None:
            return int(first)
    return None


def _x_title(x: str, relative: bool) -> str:
    return f"{METRIC_LABELS[x]} (% of parent)" if relative else f"{METRIC_LABELS[x]} per image"


def front_figure(
    df: pd.DataFrame,
    run: dict,
    *,
    x: str = "flops",
    relative: bool = False,
    budget: float | None = None,
    marks: dict[str, pd.Series | dict] | None = None,
    finetunes: pd.DataFrame | None = None,
    height: int = 460,
) -> go.Figure:
    """Every valid subnet coloured by sampler, the front as a step line, the parent, the knee;
    `budget` (absolute, in x's unit) shades the region over it; `marks` ring subnets by name;
    each finished fine-tune in `finetunes` (Store.finetunes) is a diamond joined to its subnet."""
    scale = _scale(run, x, relative)
    valid = valid_rows(df)
    fig = go.Figure()
    scatter = go.Scattergl if len(valid) > WEBGL_ABOVE else go.Scatter
    for sampler, part in valid.groupby("sampler", sort=True, dropna=False):
        shape = "square" if sampler in PEER_LABELS else "circle"
        screened = _depths(part) == "screen"  # hollow: only the one-shot screen
        fig.add_trace(
            scatter(
                x=part[x].to_numpy(dtype=float) * scale,
                y=part["accuracy"].to_numpy(dtype=float),
                mode="markers",
                name=PEER_LABELS.get(sampler, str(sampler or "subnets")),
                marker=(
                    {"size": 11, "opacity": 0.9, "color": PEER_COLORS[sampler]}
                    if sampler in PEER_LABELS
                    else {"size": 7, "opacity": 0.55, "color": SAMPLER_COLORS.get(sampler)}
                )
                | {"symbol": np.where(screened, f"{shape}-open", shape).tolist()},
                unselected={"marker": {"opacity": 0.55}},  # a click picks, it does not dim
                customdata=_custom(part, run),
                hovertemplate=_hover(run),
            )
        )
    _depth_traces(fig, valid, run, x, scale)
    front = pareto_front(valid, x=x) if len(valid) else valid
    if len(front):
        fig.add_trace(
            go.Scatter(
                x=front[x].to_numpy(dtype=float) * scale,
                y=front["accuracy"].to_numpy(dtype=float),
                mode="lines+markers",
                line={"shape": "hv", "color": "#333333", "width": 1.5},
                marker={"size": 5, "color": "#333333"},
                name="Pareto front",
                customdata=_custom(front, run),
                hovertemplate=_hover(run),
            )
        )
        best = knee(front, x=x)
        if best is not None:
            _marker(fig, best, run, x, scale, "Knee", KNEE_COLOR, "diamond", 14)
    fig.add_trace(
        go.Scatter(
            x=[float(run[f"parent_{x}"]) * scale],
            y=[float(run["parent_accuracy"])],
            mode="markers",
            name="Parent",
            marker={"symbol": "star", "size": 16, "color": PARENT_COLOR},
            hovertemplate="<b>Parent</b><br>accuracy %{y:.2%}<br>"
            + METRIC_LABELS[x]
            + " %{x:.4s}<extra></extra>",
        )
    )
    for i, (name, row) in enumerate((marks or {}).items()):
        color = MARK_COLORS[i % len(MARK_COLORS)]
        _marker(fig, row, run, x, scale, name, color, "circle-open", 20 + 6 * i)
    if finetunes is not None:
        _finetune_traces(fig, finetunes, run, x, scale)
    if budget is not None:
        right = max(float(run[f"parent_{x}"]), float(valid[x].max()) if len(valid) else 0.0)
        fig.add_vrect(
            x0=budget * scale,
            x1=right * scale * 1.04,
            fillcolor="#888888",
            opacity=0.15,
            line_width=0,
            annotation_text="over budget",
            annotation_position="top right",
        )
        fig.add_vline(x=budget * scale, line_dash="dash", line_color="#666666", line_width=1)
    span = float(valid["accuracy"].max() - valid["accuracy"].min()) if len(valid) else 1.0
    fig.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        xaxis_title=_x_title(x, relative),
        yaxis_title="accuracy (search-validation)",
        yaxis_tickformat=".0%" if span > 0.1 else ".1%",  # whole percents repeat on a narrow range
        xaxis_tickformat=".0f" if relative else "~s",
        clickmode="event+select",
        dragmode="pan",
    )
    return fig


def _depths(df: pd.DataFrame) -> np.ndarray:
    """Each row's evaluation depth (engine.rungs); rows from before rungs were fully validated."""
    if "depth" not in df:
        return np.full(len(df), "val", dtype=object)
    return df["depth"].fillna("val").to_numpy(dtype=object)


def _depth_traces(fig, valid: pd.DataFrame, run: dict, x: str, scale: float) -> None:
    """A legend key for screened-only points (hollow), and a triangle per finalist of the
    search's short fine-tune at its accuracy after it, above its own point."""
    depths = _depths(valid)
    if (depths == "screen").any():
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"Hollow: {DEPTH_TEXT['screen']} only",
                marker={"symbol": "circle-open", "size": 8, "color": "#666666"},
            )
        )
    tuned = valid[depths == "finetune"]
    if "tuned_accuracy" not in valid or tuned.empty:
        return
    tuned = tuned[tuned["tuned_accuracy"].notna()]
    fig.add_trace(
        go.Scatter(
            x=tuned[x].to_numpy(dtype=float) * scale,
            y=tuned["tuned_accuracy"].to_numpy(dtype=float),
            mode="markers",
            name=f"Search finalists after a {DEPTH_TEXT['finetune']}",
            marker={"symbol": "triangle-up", "size": 11, "color": TUNED_COLOR},
            customdata=_custom(tuned, run),
            text=[
                f"<b>Subnet {int(r.subnet_id)}</b> after the search's short distilled "
                f"fine-tune<br>accuracy {100 * r.accuracy:.2f}% → {100 * r.tuned_accuracy:.2f}%"
                for r in tuned.itertuples()
            ],
            hovertemplate="%{text}<extra></extra>",
        )
    )


def finished_finetunes(finetunes: pd.DataFrame) -> pd.DataFrame:
    """Fine-tunes that finished with an accuracy and whose subnet is still stored."""
    if finetunes is None or finetunes.empty:
        return pd.DataFrame()
    done = finetunes[(finetunes["status"] == "done") & finetunes["val_accuracy_after"].notna()]
    return done[done["subnet_accuracy"].notna()]


def _finetune_traces(fig, finetunes: pd.DataFrame, run: dict, x: str, scale: float) -> None:
    """A diamond per finished fine-tune at (its subnet's x, accuracy after), joined by a dotted
    line to the subnet's own point; the hover names the fine-tune and its recipe."""
    done = finished_finetunes(finetunes)
    if done.empty:
        return
    xs = done[x].to_numpy(dtype=float) * scale
    before = done["subnet_accuracy"].to_numpy(dtype=float)
    after = done["val_accuracy_after"].to_numpy(dtype=float)
    fig.add_trace(
        go.Scatter(
            x=np.column_stack([xs, xs, np.full(len(xs), np.nan)]).ravel(),
            y=np.column_stack([before, after, np.full(len(xs), np.nan)]).ravel(),
            mode="lines",
            line={"color": FINETUNE_EDGE, "width": 1.5, "dash": "dot"},
            name="Fine-tuned from",
            showlegend=False,
            hoverinfo="skip",
        )
    )
    text = [
        f"<b>Fine-tune {r.finetune_id}</b> of subnet {int(r.subnet_id)}<br>"
        f"{recipe_text(r.recipe or {})}<br>"
        f"accuracy {100 * r.subnet_accuracy:.2f}% → {100 * r.val_accuracy_after:.2f}%"
        + (
            f"<br>test {100 * r.test_accuracy_after:.2f}%"
            if pd.notna(r.test_accuracy_after)
            else ""
        )
        for r in done.itertuples()
    ]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=after,
            mode="markers",
            name="Fine-tuned",
            marker={
                "symbol": "diamond",
                "size": 13,
                "color": FINETUNE_COLOR,
                "line": {"width": 1.5, "color": FINETUNE_EDGE},
            },
            customdata=_custom(done, run),  # a click picks the fine-tuned subnet
            text=text,
            hovertemplate="%{text}<extra></extra>",
        )
    )


def _marker(fig, row, run, x, scale, name, color, symbol, size) -> None:
    frame = pd.DataFrame([dict(row)])
    fig.add_trace(
        go.Scatter(
            x=[float(row[x]) * scale],
            y=[float(row["accuracy"])],
            mode="markers",
            name=name,
            marker={
                "symbol": symbol,
                "size": size,
                "color": color,
                "line": {"width": 2, "color": color},
            },
            customdata=_custom(frame, run),
            hovertemplate=_hover(run),
        )
    )


def widths_figure(
    groups: list[dict], subnets: dict[str, list[int]], height: int = 360
) -> go.Figure:
    """Kept channels per group (a run's `space["groups"]`): the parent's full widths next to
    each subnet's, as grouped bars."""
    names = [g["name"] for g in groups]
    parent_widths = [g["size"] for g in groups]
    fig = go.Figure()
    full = np.asarray(parent_widths, dtype=float)
    fig.add_trace(
        go.Bar(
            x=names,
            y=parent_widths,
            name="Parent",
            marker_color="#BBBBBB",
            hovertemplate="%{x}: %{y} channels<extra>Parent</extra>",
        )
    )
    for i, (label, widths) in enumerate(subnets.items()):
        kept = 100.0 * np.asarray(widths, dtype=float) / full
        fig.add_trace(
            go.Bar(
                x=names,
                y=widths,
                name=label,
                marker_color=PALETTE[i % len(PALETTE)],
                customdata=kept,
                hovertemplate="%{x}: %{y} channels (%{customdata:.0f}% kept)<extra>"
                + label
                + "</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        height=height,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        yaxis_title="channels kept",
        xaxis_tickangle=-45,
    )
    return fig


def per_class_figure(class_names: list[str], series: dict[str, list[float]]) -> go.Figure:
    """Accuracy per class, one bar group per class and one bar per model."""
    fig = go.Figure()
    for i, (label, values) in enumerate(series.items()):
        color = "#BBBBBB" if label == "Parent" else PALETTE[(i - 1) % len(PALETTE)]
        fig.add_trace(
            go.Bar(
                x=class_names,
                y=values,
                name=label,
                marker_color=color,
                hovertemplate="%{x}: %{y:.1%}<extra>" + label + "</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        height=360,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        yaxis_title="accuracy (search-validation)",
        yaxis_tickformat=".0%",
    )
    return fig


def overlay_figure(
    runs: list[tuple[str, dict, pd.DataFrame]], *, x: str = "flops", relative: bool = True
) -> go.Figure:
    """The Pareto fronts of several runs on one chart, each with its parent."""
    fig = go.Figure()
    for i, (label, run, df) in enumerate(runs):
        color = PALETTE[i % len(PALETTE)]
        scale = _scale(run, x, relative)
        valid = valid_rows(df)
        front = pareto_front(valid, x=x) if len(valid) else valid
        fig.add_trace(
            go.Scatter(
                x=front[x].to_numpy(dtype=float) * scale if len(front) else [],
                y=front["accuracy"].to_numpy(dtype=float) if len(front) else [],
                mode="lines+markers",
                line={"shape": "hv", "color": color},
                name=label,
                legendgroup=label,
                customdata=_custom(front, run) if len(front) else None,
                hovertemplate=_hover(run),
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[float(run[f"parent_{x}"]) * scale],
                y=[float(run["parent_accuracy"])],
                mode="markers",
                marker={"symbol": "star", "size": 14, "color": color},
                name=f"{label} parent",
                legendgroup=label,
                showlegend=False,
                hovertemplate="<b>Parent</b><br>accuracy %{y:.2%}<extra>" + label + "</extra>",
            )
        )
    fig.update_layout(
        height=460,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        xaxis_title=_x_title(x, relative),
        yaxis_title="accuracy (search-validation)",
        yaxis_tickformat=".0%",
        xaxis_tickformat=".0f" if relative else "~s",
    )
    return fig
