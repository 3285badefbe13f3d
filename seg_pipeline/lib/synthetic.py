"""A seeded synthetic shop: the embedded default data set, and the generator behind the benchmarks.

The shop is built so that the pipeline has something real to find: customers follow one of six
latent behaviours (archetypes) with different order rates, lifetimes and basket sizes, and each has
favourite categories and a style, so co-purchase structure exists for collaborative filtering to
learn. Item popularity is Zipf-distributed within each category. Everything is vectorised with
numpy so the same code produces a few thousand events for the demo or ten million for a benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = {
    "Kitchen": (12.0, ["ceramic", "enamel", "bamboo", "copper"], ["mug", "teapot", "bowl", "jar"]),
    "Garden": (
        18.0,
        ["zinc", "wooden", "woven", "terracotta"],
        ["planter", "lantern", "sign", "bench"],
    ),
    "Toys": (9.0, ["wooden", "knitted", "tin", "paper"], ["robot", "puzzle", "doll", "train"]),
    "Stationery": (
        4.0,
        ["vintage", "floral", "kraft", "pastel"],
        ["notebook", "card", "pencil", "wrap"],
    ),
    "Lighting": (
        25.0,
        ["glass", "rattan", "brass", "paper"],
        ["lamp", "fairy lights", "candle", "shade"],
    ),
    "Textiles": (
        15.0,
        ["linen", "cotton", "wool", "velvet"],
        ["cushion", "throw", "towel", "apron"],
    ),
    "Party": (
        6.0,
        ["glitter", "paper", "retro", "neon"],
        ["bunting", "balloons", "napkins", "cups"],
    ),
    "Bath": (
        10.0,
        ["lavender", "marble", "rose", "cedar"],
        ["soap", "bath salts", "dish", "candle"],
    ),
}

STYLE_WORDS = ["classic", "modern", "rustic"]


@dataclass(frozen=True)
class Archetype:
    """A latent customer behaviour: how often, how long and how much they buy."""

    name: str
    share: float
    orders_per_day: float
    lifetime_days: float
    basket_mean: float
    return_rate: float
    joins_late: bool = False
    single_order: bool = False


ARCHETYPES = (
    Archetype("champion", 0.08, 1 / 12, 1e9, 3.0, 0.03),
    Archetype("regular", 0.22, 1 / 35, 1e9, 2.0, 0.04),
    Archetype("bargain_hunter", 0.15, 1 / 45, 1e9, 2.0, 0.12),
    Archetype("one_off", 0.30, 0.0, 1e9, 1.0, 0.05, single_order=True),
    Archetype("churned", 0.15, 1 / 25, 80, 2.0, 0.05),
    Archetype("newcomer", 0.10, 1 / 20, 1e9, 1.5, 0.04, joins_late=True),
)


@dataclass
class Shop:
    """A generated shop: events in the canonical layout, items, and each customer's archetype."""

    events: pd.DataFrame
    items: pd.DataFrame
    customers: pd.DataFrame


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return np.cumsum(weights) / weights.sum()


def _make_items(rng: np.random.Generator, n_items: int) -> pd.DataFrame:
    names = list(CATEGORIES)
    per_cat = n_items // len(names)
    rows = []
    for c, name in enumerate(names):
        median_price, materials, nouns = CATEGORIES[name]
        for j in range(per_cat):
            style = STYLE_WORDS[j % 3]
            material = materials[(j // 3) % len(materials)]
            noun = nouns[(j // (3 * len(materials))) % len(nouns)]
            title = f"{style.title()} {material} {noun} no. {j + 1}"
            finish = {"classic": "Timeless", "modern": "Clean-lined", "rustic": "Hand-finished"}
            description = (
                f"A {style} {material} {noun} from our {name.lower()} range. "
                f"{finish[style]} {name.lower()} piece in {material}."
            )
            price = round(float(median_price * rng.lognormal(0.0, 0.35)), 2)
            rows.append((c * per_cat + j, title, description, name, price, style))
    items = pd.DataFrame(
        rows, columns=["local", "title", "description", "category", "price", "style"]
    )
    # Ids are shuffled so that an id never reveals popularity rank.
    codes = rng.permutation(len(items))
    items["item_id"] = [f"SKU{code:05d}" for code in codes]
    items["available"] = rng.random(len(items)) > 0.04
    return items


def generate_shop(
    n_customers: int = 3000,
    n_items: int = 320,
    *,
    seed: int = 42,
    start: str = "2025-01-01",
    days: int = 365,
    views_per_line: float = 0.8,
    anonymous_share: float = 0.03,
    new_items: int = 8,
) -> Shop:
    """Generate a shop with ``n_customers`` customers over ``days`` days.

    Parameters
    ----------
    n_customers, n_items : int
        Size of the shop. ``n_items`` is rounded down to a multiple of the category count.
    seed : int
        Seed of the numpy generator; the same seed always gives the same shop.
    start : str
        First day of the history (UTC).
    days : int
        Length of the history in days.
    views_per_line : float
        Mean number of product views that precede each purchase line.
    anonymous_share : float
        Share of orders placed without a customer id (kept for item statistics only).
    new_items : int
        Products in the catalogue that nobody has bought yet (launched at the end of the
        history), named like the range they join; drawn from their own generator, so the events
        do not depend on them.

    Returns
    -------
    Shop
    """
    rng = np.random.default_rng(seed)
    items = _make_items(rng, n_items)
    n_cat = len(CATEGORIES)
    per_cat = len(items) // n_cat
    per_style = per_cat // 3
    item_ids = items.sort_values("local")["item_id"].to_numpy()
    item_price = items.sort_values("local")["price"].to_numpy()

    arch = rng.choice(len(ARCHETYPES), size=n_customers, p=[a.share for a in ARCHETYPES])
    rate = np.array([a.orders_per_day for a in ARCHETYPES])[arch]
    lifetime = np.array([a.lifetime_days for a in ARCHETYPES])[arch]
    basket = np.array([a.basket_mean for a in ARCHETYPES])[arch]
    ret_rate = np.array([a.return_rate for a in ARCHETYPES])[arch]
    late = np.array([a.joins_late for a in ARCHETYPES])[arch]
    single = np.array([a.single_order for a in ARCHETYPES])[arch]

    join = np.where(
        late, rng.uniform(days - 60, days - 1, n_customers), rng.uniform(0, days * 0.8, n_customers)
    )
    end = np.minimum(join + rng.exponential(lifetime), days - 0.01)
    active = np.maximum(end - join, 0.5)
    activity = rng.lognormal(0.0, 0.4, n_customers)
    n_orders = np.where(single, 1, 1 + rng.poisson(rate * activity * active))

    cat_pop = _zipf_cdf(n_cat, 0.6)
    fav = np.searchsorted(cat_pop, rng.random((n_customers, 2)))
    style = rng.integers(0, 3, n_customers)

    order_cust = np.repeat(np.arange(n_customers), n_orders)
    n_total_orders = len(order_cust)
    order_day = join[order_cust] + rng.random(n_total_orders) * active[order_cust]
    order_day[np.r_[0, np.cumsum(n_orders)[:-1]]] = join  # the first order is on the join day
    order_seconds = np.floor(order_day) * 86400 + np.floor(
        rng.uniform(8, 20, n_total_orders) * 3600
    )
    anonymous_order = rng.random(n_total_orders) < anonymous_share

    n_lines = 1 + rng.poisson(np.maximum(basket[order_cust] - 1, 0.05))
    line_order = np.repeat(np.arange(n_total_orders), n_lines)
    line_cust = order_cust[line_order]
    n_total_lines = len(line_order)

    use_fav = rng.random(n_total_lines) < 0.8
    fav_pick = fav[line_cust, rng.integers(0, 2, n_total_lines)]
    any_cat = np.searchsorted(cat_pop, rng.random(n_total_lines))
    line_cat = np.where(use_fav, fav_pick, any_cat)
    on_style = rng.random(n_total_lines) < 0.7
    style_rank = np.searchsorted(_zipf_cdf(per_style, 1.0), rng.random(n_total_lines))
    free_rank = np.searchsorted(_zipf_cdf(per_cat, 1.0), rng.random(n_total_lines))
    local = np.where(on_style, style[line_cust] + 3 * style_rank, free_rank)
    line_item = line_cat * per_cat + np.minimum(local, per_cat - 1)

    quantity = 1 + rng.poisson(0.6, n_total_lines)
    discount = np.where(rng.random(n_total_lines) < 0.1, 0.9, 1.0)
    price = np.round(item_price[line_item] * discount, 2)
    line_seconds = order_seconds[line_order]

    cust_ids = np.array([f"C{i:06d}" for i in range(n_customers)], dtype=object)
    order_ids = np.char.add("O", np.arange(n_total_orders).astype(str)).astype(object)
    line_cust_id = np.where(anonymous_order[line_order], "", cust_ids[line_cust])

    purchases = {
        "customer_id": line_cust_id,
        "item_id": item_ids[line_item],
        "ts": line_seconds,
        "event_type": np.full(n_total_lines, "purchase", dtype=object),
        "quantity": quantity.astype(float),
        "unit_price": price,
        "order_id": order_ids[line_order],
        "value": np.full(n_total_lines, np.nan),
    }

    is_return = (rng.random(n_total_lines) < ret_rate[line_cust]) & ~anonymous_order[line_order]
    r_idx = np.flatnonzero(is_return)
    r_ts = np.minimum(
        line_seconds[r_idx] + rng.uniform(2, 20, len(r_idx)) * 86400, days * 86400 - 1
    )
    # Half the returns use event_type 'return', half a negative purchase quantity (both canonical).
    as_negative = rng.random(len(r_idx)) < 0.5
    returns = {
        "customer_id": line_cust_id[r_idx],
        "item_id": item_ids[line_item[r_idx]],
        "ts": np.floor(r_ts),
        "event_type": np.where(as_negative, "purchase", "return").astype(object),
        "quantity": np.where(as_negative, -1.0, 1.0) * quantity[r_idx],
        "unit_price": price[r_idx],
        "order_id": np.char.add("R", r_idx.astype(str)).astype(object),
        "value": np.full(len(r_idx), np.nan),
    }

    n_views = rng.poisson(views_per_line, n_total_lines)
    v_line = np.repeat(np.arange(n_total_lines), n_views)
    v_rank = np.searchsorted(_zipf_cdf(per_cat, 0.8), rng.random(len(v_line)))
    v_item = line_cat[v_line] * per_cat + v_rank
    views = {
        "customer_id": line_cust_id[v_line],
        "item_id": item_ids[v_item],
        "ts": np.maximum(line_seconds[v_line] - rng.uniform(60, 3600, len(v_line)).round(), 0),
        "event_type": np.full(len(v_line), "view", dtype=object),
        "quantity": np.ones(len(v_line)),
        "unit_price": np.full(len(v_line), np.nan),
        "order_id": np.full(len(v_line), None, dtype=object),
        "value": np.full(len(v_line), np.nan),
    }

    rated = (rng.random(n_total_lines) < 0.08) & ~anonymous_order[line_order]
    rt_idx = np.flatnonzero(rated)
    liked = (line_item[rt_idx] % per_cat) % 3 == style[line_cust[rt_idx]]
    ratings = {
        "customer_id": line_cust_id[rt_idx],
        "item_id": item_ids[line_item[rt_idx]],
        "ts": np.minimum(line_seconds[rt_idx] + 7 * 86400, days * 86400 - 1),
        "event_type": np.full(len(rt_idx), "rating", dtype=object),
        "quantity": np.ones(len(rt_idx)),
        "unit_price": np.full(len(rt_idx), np.nan),
        "order_id": np.full(len(rt_idx), None, dtype=object),
        "value": np.clip(np.where(liked, 4.3, 3.0) + rng.normal(0, 0.8, len(rt_idx)), 1, 5).round(),
    }

    # A basket never lists the same item on two lines: real carts merge them into one line.
    frames = [pd.DataFrame(part) for part in (purchases, returns, views, ratings)]
    frames[0] = frames[0].drop_duplicates(["order_id", "item_id"])
    events = pd.concat(frames, ignore_index=True)
    events = events.sort_values(["ts", "order_id"], kind="stable", na_position="last")
    origin = pd.Timestamp(start)
    events["event_ts"] = origin + pd.to_timedelta(events.pop("ts"), unit="s")
    events = events[
        [
            "customer_id",
            "item_id",
            "event_ts",
            "event_type",
            "quantity",
            "unit_price",
            "order_id",
            "value",
        ]
    ].reset_index(drop=True)

    customers = pd.DataFrame(
        {
            "customer_id": cust_ids,
            "archetype": np.array([a.name for a in ARCHETYPES])[arch],
            "favourite_category": np.array(list(CATEGORIES))[fav[:, 0]],
        }
    )
    item_cols = ["item_id", "title", "description", "category", "price", "available"]
    catalogue = pd.concat([items, _launches(items, new_items, seed)], ignore_index=True)
    return Shop(events=events, items=catalogue[item_cols].copy(), customers=customers)


def _launches(items: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` new products, each a new edition of an existing one ("... no. 7, new edition")."""
    rng = np.random.default_rng([seed, 1])
    base = items.iloc[rng.choice(len(items), size=min(n, len(items)), replace=False)].copy()
    base["title"] = base["title"] + ", new edition"
    base["description"] = "New this season. " + base["description"]
    base["item_id"] = [f"NEW{i:04d}" for i in range(len(base))]
    base["available"] = True
    return base


def write_shop(shop: Shop, directory: Path, *, fmt: str = "csv") -> dict[str, Path]:
    """Write a shop as ``events.<fmt>``, ``items.csv`` and ``customers.csv`` in ``directory``.

    Files are written under a temporary name and renamed, so an interrupted write never leaves a
    half-written events file that a later ``demo`` would mistake for a complete one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "events": directory / f"events.{fmt}",
        "items": directory / "items.csv",
        "customers": directory / "customers.csv",
    }
    for key, frame in (
        ("items", shop.items),
        ("customers", shop.customers),
        ("events", shop.events),
    ):
        path = paths[key]
        tmp = path.with_name(path.name + ".tmp")
        if key == "events" and fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            out = frame.copy()
            if key == "events":
                out["event_ts"] = out["event_ts"].dt.strftime("%Y-%m-%dT%H:%M:%S")
            out.to_csv(tmp, index=False)
        tmp.replace(path)
    return paths


def generate_impressions(
    recommendations: pd.DataFrame,
    start: pd.Timestamp | str,
    *,
    days: int = 3,
    shown_per_day: int = 3,
    share_of_customers: float = 0.5,
    seed: int = 7,
) -> pd.DataFrame:
    """An impressions log for published lists (``customer_id``, ``item_id``, ``rank``): on each
    of ``days`` days from ``start``, a random ``share_of_customers`` see their top
    ``shown_per_day`` items; a shown item is clicked with probability 0.12 / rank and bought
    after a click with probability 0.3. Columns as the ``--impressions`` input."""
    rng = np.random.default_rng(seed)
    top = recommendations[recommendations["rank"] <= shown_per_day]
    customers = top["customer_id"].unique()
    frames = []
    for day in range(days):
        seen = rng.random(len(customers)) < share_of_customers
        shown = top[top["customer_id"].isin(customers[seen])].copy()
        minutes = rng.integers(0, 24 * 60, len(shown))
        shown["shown_at"] = (
            pd.Timestamp(start) + pd.Timedelta(days=day) + pd.to_timedelta(minutes, unit="m")
        )
        shown["clicked"] = rng.random(len(shown)) < 0.12 / shown["rank"].to_numpy()
        shown["purchased"] = shown["clicked"] & (rng.random(len(shown)) < 0.3)
        frames.append(shown)
    out = pd.concat(frames, ignore_index=True)
    return out[["customer_id", "item_id", "shown_at", "clicked", "purchased"]]
