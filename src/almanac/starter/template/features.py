"""Features of a streaming platform: who the user is and what they watch.

Each feature is declared once here. `almanac apply` registers these definitions;
training sets (`get_historical_features`) and online serving (`get_online_features`)
both read them, so the two cannot drift apart.
"""

from almanac import (
    Aggregation,
    AggregationView,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    Int64,
    SqlSource,
    String,
)

user = Entity(name="user", join_keys=["user_id"], description="A subscriber of the platform.")

# A daily batch job writes each user's segment; a value older than two days is stale.
user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    source=FileSource(name="user_segments", path="data/user_segments.parquet"),
    schema=[Field("user_segment", String, description="Marketing segment, refreshed daily.")],
    ttl="2d",
    materialize_every="1d",
    owner="growth@example.com",
    description="Slowly changing facts about the user.",
    tags={"team": "growth"},
)

# Every watch event, as the player logs it.
watch_log = FileSource(name="watch_log", path="data/watch_events.parquet")

# Windowed aggregations over the log, exact at any point in time: offline, each training
# row counts the events in the 30 days (7 days) before its own timestamp; online, the
# counts decay as events age out, without re-materializing.
user_stats = AggregationView(
    name="user_stats",
    entities=[user],
    source=watch_log,
    aggregations=[
        Aggregation(function="count", windows=["30d"], name="watch_count"),
        Aggregation(column="watch_seconds", function="sum", windows=["7d"]),
        Aggregation(column="genre", function="count_distinct", windows=["30d"], name="genres"),
    ],
    columns=[Field("watch_seconds", Int64), Field("genre", String)],
    owner="recs@example.com",
    description="Viewing activity: 30-day watch count, 7-day watch time, 30-day genre variety.",
    tags={"team": "recommendations"},
)

# The genre of the latest title the user watched, straight from the event log.
watch_events = SqlSource(
    name="watch_events",
    query="SELECT user_id, event_timestamp, genre AS last_genre FROM read_parquet('data/watch_events.parquet')",
)
user_last_genre = FeatureView(
    name="user_last_genre",
    entities=[user],
    source=watch_events,
    schema=[Field("last_genre", String, description="Genre of the latest title watched.")],
    ttl="90d",
    owner="recs@example.com",
    description="Updated on every watch event.",
    tags={"team": "recommendations"},
)

recommender = FeatureService(
    name="recommender_v1",
    features=[user_profile, "user_stats:watch_count_30d", user_last_genre],
    owner="recs@example.com",
    description="Everything the home-page recommender reads.",
    prompt_template=(
        "The user is in the {{ user_segment }} segment, watched {{ watch_count_30d }} titles "
        "in the last 30 days, and last watched {{ last_genre }}."
    ),
)
