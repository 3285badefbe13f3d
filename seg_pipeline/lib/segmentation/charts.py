"""PNG charts for the Dagster UI and MLflow. The Agg backend keeps this headless."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def selection_chart(candidates: pd.DataFrame) -> bytes:
    """How the sweep chose: silhouette, forecast power and the elbow against the number of
    segments, one line per method and feature space, the chosen candidate ringed in each panel.

    Forecast power (omega squared of next-period spend) decides among the candidates within the
    silhouette tolerance, so it is drawn only where it was measured. Inertia is only comparable
    within one feature space and a mixture's BIC is on another scale altogether: BIC gets its own
    axis.
    """
    fig, (sil, fc, elbow) = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    bic_axis = None
    colours = plt.get_cmap("tab10").colors
    for ((method, features), group), colour in zip(
        candidates.groupby(["method", "features"]), colours, strict=False
    ):
        group = group.sort_values("n_segments")
        label = f"{method}, {features}"
        style = {"color": colour, "label": label}
        sil.plot(group["n_segments"], group["silhouette"], "o-", **style)
        if "forecast_omega2" in group and group["forecast_omega2"].notna().any():
            measured = group[group["forecast_omega2"].notna()]
            fc.plot(measured["n_segments"], measured["forecast_omega2"], "o-", **style)
        if method == "gmm" and "bic" in group:
            bic_axis = bic_axis or elbow.twinx()
            bic_axis.plot(group["n_segments"], group["bic"], "^:", **style)
        else:
            elbow.plot(group["n_segments"], group["inertia"], "s--", **style)
    chosen = candidates[candidates["chosen"]].iloc[0]
    ring = {"s": 220, "facecolors": "none", "edgecolors": "red", "linewidths": 2, "zorder": 5}
    sil.scatter([chosen["n_segments"]], [chosen["silhouette"]], label="chosen", **ring)
    if pd.notna(chosen.get("forecast_omega2")):
        fc.scatter([chosen["n_segments"]], [chosen["forecast_omega2"]], **ring)
    if chosen["method"] == "gmm" and bic_axis is not None and "bic" in chosen:
        bic_axis.scatter([chosen["n_segments"]], [chosen["bic"]], **ring)
    else:
        elbow.scatter([chosen["n_segments"]], [chosen["inertia"]], **ring)
    sil.set_ylabel("silhouette (higher is better)")
    fc.set_ylabel("forecast power ω² (decides)")
    fc.set_title("measured for the candidates within the silhouette tolerance", fontsize=8)
    elbow.set_ylabel("inertia (look for the elbow)")
    if bic_axis is not None:
        bic_axis.set_ylabel("mixture BIC (lower is better)")
    for ax in (sil, fc, elbow):
        ax.set_xlabel("segments")
    fig.legend(*sil.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=7)
    fig.suptitle(
        "Choosing the number of segments: chosen "
        f"{chosen['method']} {chosen['param']} on {chosen['features']}"
    )
    return _png(fig)


def calibration_chart(calibration: pd.DataFrame) -> bytes:
    """The value forecast against what happened, by decile of predicted spend (out of fold):
    mean spend on the left, the buying rate on the right; on the diagonal is calibrated."""
    fig, (spend, rate) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for ax, (pred, actual, label) in (
        (spend, ("predicted_spend", "actual_spend", "mean spend in the horizon")),
        (rate, ("predicted_buy_rate", "actual_buy_rate", "share who bought")),
    ):
        ax.plot(calibration[pred], calibration[actual], "o-", color="tab:blue")
        for _, row in calibration.iterrows():
            ax.annotate(str(int(row["decile"])), (row[pred], row[actual]), fontsize=7)
        top = max(calibration[pred].max(), calibration[actual].max())
        ax.plot([0, top], [0, top], ":", color="gray", label="calibrated")
        ax.set_xlabel(f"predicted {label}")
        ax.set_ylabel(f"actual {label}")
        ax.legend(fontsize=7)
    spend.set_xscale("symlog")
    spend.set_yscale("symlog")
    fig.suptitle("Value forecast calibration by decile (holdout, out of fold)")
    return _png(fig)


def dendrogram_chart(linkage_matrix) -> bytes:
    """The top of the agglomerative tree (sampled customers), truncated to 30 leaves."""
    from scipy.cluster.hierarchy import dendrogram

    fig, ax = plt.subplots(figsize=(8, 3.5))
    dendrogram(
        linkage_matrix, truncate_mode="lastp", p=30, ax=ax, no_labels=True, color_threshold=None
    )
    ax.set_ylabel("merge distance")
    ax.set_title("Agglomerative clustering dendrogram (sample)")
    return _png(fig)


def rfm_heatmap(rfm: pd.DataFrame) -> bytes:
    """Customers per (R score, F score) cell, annotated with the mean spend."""
    counts = rfm.pivot_table(
        index="r_score", columns="f_score", values="customer_id", aggfunc="count", fill_value=0
    ).reindex(index=range(5, 0, -1), columns=range(1, 6), fill_value=0)
    spend = rfm.pivot_table(
        index="r_score", columns="f_score", values="monetary", aggfunc="mean"
    ).reindex(index=range(5, 0, -1), columns=range(1, 6))
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    image = ax.imshow(counts.to_numpy(), cmap="Blues")
    for i in range(5):
        for j in range(5):
            n = counts.iloc[i, j]
            if n:
                ax.text(j, i, f"{n}\n{spend.iloc[i, j]:,.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(5), range(1, 6))
    ax.set_yticks(range(5), range(5, 0, -1))
    ax.set_xlabel("F score")
    ax.set_ylabel("R score")
    ax.set_title("Customers (and mean spend) per RFM cell")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png(fig)


def migration_chart(matrix: pd.DataFrame, title: str) -> bytes:
    """A from × to matrix of customer counts between two snapshots."""
    fig, ax = plt.subplots(figsize=(0.7 * matrix.shape[1] + 3, 0.5 * matrix.shape[0] + 2))
    ax.imshow(matrix.to_numpy(dtype=float), cmap="Greens")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, int(matrix.iloc[i, j]), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(matrix.shape[1]), matrix.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(matrix.shape[0]), matrix.index, fontsize=7)
    ax.set_xlabel("to")
    ax.set_ylabel("from")
    ax.set_title(title)
    return _png(fig)


def sizes_chart(profiles: pd.DataFrame) -> bytes:
    """Horizontal bars of segment sizes, labelled with their names."""
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(profiles) + 1))
    labels = [
        f"{sid} {name}"
        for sid, name in zip(profiles["segment_id"], profiles["segment_name"], strict=True)
    ]
    ax.barh(labels[::-1], profiles["n_customers"].to_numpy()[::-1], color="tab:blue")
    ax.set_xlabel("customers")
    ax.set_title("Segment sizes")
    return _png(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown that embeds a PNG inline, which the Dagster UI renders in asset metadata."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
