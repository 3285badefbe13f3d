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
    """Silhouette and inertia (elbow) against k, with the chosen k marked."""
    fig, left = plt.subplots(figsize=(6, 3.2))
    left.plot(candidates["k"], candidates["silhouette"], "o-", color="tab:blue")
    left.set_xlabel("number of segments k")
    left.set_ylabel("silhouette (higher is better)", color="tab:blue")
    right = left.twinx()
    right.plot(candidates["k"], candidates["inertia"], "s--", color="tab:gray")
    right.set_ylabel("inertia (elbow)", color="tab:gray")
    chosen = candidates.loc[candidates["chosen"], "k"]
    for k in chosen:
        left.axvline(k, color="tab:red", alpha=0.5)
    left.set_title("Choosing k")
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
