"""The tables of the public surface (README, "Published tables"), in one list for the publishing
step, the checks and the tests."""

# Every row of these carries the run id of the run that published them: a reader never sees
# tables from two runs.
CONTRACT_TABLES = (
    "customer_rfm",
    "customer_segments",
    "segment_profiles",
    "customer_recommendations",
    "item_similarities",
    "segment_recommendations",
    "segment_migration",
    "item_catalog",
    "quarantined_events",
    "customer_360",
    "customer_value_forecast",
    "item_audiences",
    "category_audiences",
    "recommendation_feedback",
    "quarantined_impressions",
)
# History tables keep rows of earlier runs by design.
HISTORY_TABLES = ("recommendation_metrics", "segment_history", "audience_metrics")
PUBLISHED_TABLES = CONTRACT_TABLES + HISTORY_TABLES
# Tables a shop with clean input and one night of history may publish empty (the value forecast
# needs 50 customers at the holdout cut to learn from; a catalogue without categories has no
# category audiences; feedback needs an impressions file).
MAY_BE_EMPTY = (
    "quarantined_events",
    "customer_value_forecast",
    "category_audiences",
    "recommendation_feedback",
    "quarantined_impressions",
)
