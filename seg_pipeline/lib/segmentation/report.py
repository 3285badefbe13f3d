"""A self-contained HTML segment report: profiles, descriptions and every chart inline."""

from __future__ import annotations

import base64
import html
import json
import math

import pandas as pd

from seg_pipeline.lib.segmentation.value import spend_totals


def report_html(
    title: str,
    profiles: pd.DataFrame,
    charts: dict[str, bytes],
    facts: dict[str, str],
) -> str:
    """Return the report as one HTML string (images embedded as data URIs, no external files)."""
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                r["segment_id"],
                r["segment_name"],
                f"{r['n_customers']:,}",
                f"{r['share']:.1%}",
                f"{r['median_recency_days']:.0f}",
                f"{r['median_frequency']:.0f}",
                f"{r['median_monetary']:,.0f}",
                r["description"],
            )
        )
        + "</tr>"
        for _, r in profiles.iterrows()
    )
    facts_html = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in facts.items()
    )
    images = "".join(
        f"<figure><img alt='{html.escape(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode()}'/><figcaption>{html.escape(name)}</figcaption></figure>"
        for name, png in charts.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
th {{ background: #f0f4f8; }} figure {{ display: inline-block; margin: 1em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<ul>{facts_html}</ul>
<table><tr><th>id</th><th>segment</th><th>customers</th><th>share</th><th>median recency (days)</th>
<th>median orders</th><th>median spend</th><th>description</th></tr>{rows}</table>
{images}
</body></html>
"""


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def report_facts(run: dict, calibration: pd.DataFrame | None = None) -> dict[str, str]:
    """The report's key facts from a ``segmentation_runs`` row (``tables.load_report_inputs``)
    and the value forecast's calibration table."""
    facts = {
        "as of": str(run["as_of"]),
        "method": f"{run['method']} {run['param']}",
        "segments": str(run["n_segments"]),
        "features": ", ".join(json.loads(run["features"])),
        "customers": f"{run['n_customers']:,}",
    }
    for measure, symbol in (("eta2", "η²"), ("omega2", "ω²")):
        ours = run.get(f"forecast_{measure}")
        if _finite(ours) and _finite(run.get(f"rfm_cell_{measure}")):
            facts[f"next-period spend explained ({symbol})"] = (
                f"segments {ours:.3f}; named RFM segments {run[f'rfm_segment_{measure}']:.3f}; "
                f"125 RFM cells {run[f'rfm_cell_{measure}']:.3f}"
            )
    if calibration is not None and len(calibration):
        predicted, actual, ratio = spend_totals(calibration)
        facts["value forecast (holdout, out of fold)"] = (
            f"predicted {predicted:,.0f} against {actual:,.0f} actual spend "
            f"({ratio:.2f}×); top decile predicted "
            f"{calibration['predicted_spend'].iloc[-1]:,.0f}, actual "
            f"{calibration['actual_spend'].iloc[-1]:,.0f}"
        )
    if run.get("decision"):
        facts["refit" if run.get("refit") else "between refits"] = run["decision"]
    for lag in ("day", "week"):
        kept = run.get(f"segment_kept_{lag}")
        if kept is not None and math.isfinite(kept):
            facts[f"customers with no purchase who kept their segment, {lag} over {lag}"] = (
                f"segments {kept:.1%}; named RFM segments {run[f'rfm_segment_kept_{lag}']:.1%}"
            )
    return facts
