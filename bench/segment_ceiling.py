"""How much of next-period spend ten groups can explain: trees and boosted value tiers.

    python bench/segment_ceiling.py bench/out/segments/published_work.duckdb

Reads ``customer_features`` of a work database (any run's ``*_work.duckdb``) and prints, for
the holdout snapshot, eta² and omega² of next-period log spend for: the 125 RFM cells; a 10-leaf
regression tree, cross-fitted over five folds; and 5, 8 and 10 tiers cut from a gradient-boosted
forecast (five-fold out-of-fold predictions; tier boundaries by a one-feature tree, cross-fitted
over two halves) beside plain quantile tiers of the same forecast, with the forecast's own
out-of-fold R². It is the measurement behind not adding value tiers as a segmentation family.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.tree import DecisionTreeRegressor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seg_pipeline.lib.segmentation.features import BEHAVIOUR_FEATURES, RFM_FEATURES  # noqa: E402
from seg_pipeline.lib.segmentation.forecast import forecast_power  # noqa: E402
from seg_pipeline.lib.segmentation.sweep import holdout_target  # noqa: E402
from seg_pipeline.lib.segmentation.tables import load_features  # noqa: E402
from seg_pipeline.lib.segmentation.tree import cross_fitted_power  # noqa: E402


def main() -> None:
    con = duckdb.connect(sys.argv[1], read_only=True)
    hold = load_features(con, "holdout")
    y = holdout_target(hold)
    eta, omega = forecast_power(hold["rfm_cell"].to_numpy(), y)
    print(f"{len(hold):,} holdout customers; 125 RFM cells eta2 {eta:.3f} omega2 {omega:.3f}")
    rng = np.random.default_rng(0)
    for name, features in (("rfm", RFM_FEATURES), ("behaviour", BEHAVIOUR_FEATURES)):
        x = hold[list(features)].to_numpy(float)
        eta, omega = cross_fitted_power(x, y, 10, min_share=0.02, random_state=0)
        print(f"{name}: 10-leaf tree, cross-fitted: eta2 {eta:.3f} omega2 {omega:.3f}")
        fold = rng.permutation(len(x)) % 5
        oof = np.empty(len(x))
        for f in range(5):
            model = HistGradientBoostingRegressor(
                max_iter=100,
                learning_rate=0.05,
                max_leaf_nodes=15,
                min_samples_leaf=max(20, len(x) // 100),
                l2_regularization=1.0,
                random_state=0,
            ).fit(x[fold != f], y[fold != f])
            oof[fold == f] = model.predict(x[fold == f])
        r2 = 1 - ((y - oof) ** 2).sum() / ((y - y.mean()) ** 2).sum()
        print(f"{name}: boosted forecast, out-of-fold R2 {r2:.3f}")
        for k in (5, 8, 10):
            half = rng.permutation(len(x)) % 2 == 0
            labels = np.empty(len(x), dtype=np.int64)
            for part in (half, ~half):
                cut = DecisionTreeRegressor(
                    max_leaf_nodes=k, min_samples_leaf=int(0.02 * len(x)), random_state=0
                ).fit(oof[~part, None], y[~part])
                labels[part] = cut.apply(oof[part, None]) + (0 if part is half else len(x))
            quantiles = np.digitize(oof, np.quantile(oof, np.linspace(0, 1, k + 1)[1:-1]))
            tiers, plain = forecast_power(labels, y), forecast_power(quantiles, y)
            print(
                f"  {k} tiers: eta2 {tiers[0]:.3f} omega2 {tiers[1]:.3f}; "
                f"quantile tiers eta2 {plain[0]:.3f} omega2 {plain[1]:.3f}"
            )


if __name__ == "__main__":
    main()
