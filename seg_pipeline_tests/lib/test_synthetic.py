from seg_pipeline.lib.synthetic import ARCHETYPES, generate_shop


def test_same_seed_same_shop_and_different_seed_differs():
    a, b, c = (
        generate_shop(300, 80, seed=1),
        generate_shop(300, 80, seed=1),
        generate_shop(300, 80, seed=2),
    )
    assert a.events.equals(b.events) and a.items.equals(b.items)
    assert not a.events.equals(c.events)
    # The launches draw from their own generator: the events do not depend on them.
    assert generate_shop(300, 80, seed=1, new_items=0).events.equals(a.events)


def test_shop_has_the_promised_shape():
    shop = generate_shop(2000, 160, seed=3)
    events = shop.events
    assert set(events["event_type"]) == {"purchase", "return", "view", "rating"}
    assert (
        events.loc[events["event_type"] == "purchase", "quantity"] < 0
    ).any()  # negative-qty returns
    assert 0.01 < (events["customer_id"] == "").mean() < 0.06  # some anonymous rows
    span = events["event_ts"].max() - events["event_ts"].min()
    assert 350 <= span.days <= 365
    assert shop.items["item_id"].is_unique and len(shop.items) == 160 + 8
    # The eight launches are in the catalogue, available, and nobody has bought them yet.
    launches = shop.items[shop.items["item_id"].str.startswith("NEW")]
    assert len(launches) == 8 and launches["available"].all()
    assert not events["item_id"].isin(launches["item_id"]).any()
    assert launches["title"].str.endswith("new edition").all()
    assert set(shop.items["category"]).__len__() == 8
    counts = events.loc[events["event_type"] == "purchase", "item_id"].value_counts().to_numpy()
    # Power-law popularity: the top tenth of items sells over 30 times what the bottom tenth does.
    tenth = len(counts) // 10
    assert counts[:tenth].sum() > 30 * counts[-tenth:].sum()
    assert set(shop.customers["archetype"]) == {a.name for a in ARCHETYPES}
    purchases = events[events["event_type"] == "purchase"]
    assert not purchases.duplicated(["order_id", "item_id"]).any()
