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
    """Silhouette and the elbow (inertia) against the number of segments, per method."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    for method, group in candidates.groupby("method"):
        group = group.sort_values("n_segments")
        left.plot(group["n_segments"], group["silhouette"], "o-", label=method)
        right.plot(group["n_segments"], group["inertia"], "s--", label=method)
    chosen = candidates[candidates["chosen"]]
    for _, row in chosen.iterrows():
        left.scatter(
            [row["n_segments"]],
            [row["silhouette"]],
            s=160,
            facecolors="none",
            edgecolors="red",
            linewidths=2,
            label="chosen",
        )
    left.set_xlabel("segments")
    left.set_ylabel("silhouette (higher is better)")
    right.set_xlabel("segments")
    right.set_ylabel("inertia (look for the elbow)")
    left.legend(fontsize=7)
    fig.suptitle("Choosing the number of segments")
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
