//! Runs the shared store suite against every backend.

mod store_suite;

use shoal_testkit::Redis;
use shoal_tracker::{Clock, RedisStore, SqliteLocation, SqliteStore, StoreOptions, SwarmLimits};

store_suite!(sqlite, |clock: Clock, swarms: SwarmLimits| async move {
    let store = SqliteStore::open(
        SqliteLocation::Memory,
        StoreOptions {
            lease: store_suite::LEASE,
            clock,
            max_holdings: store_suite::MAX_HOLDINGS,
            retention: Some(store_suite::RETENTION),
        },
    )
    .await
    .unwrap()
    .with_swarms(swarms);
    (store, ())
});

// Each case gets its own redis-server (it starts in milliseconds), so cases run in parallel.
store_suite!(redis, |clock: Clock, swarms: SwarmLimits| async move {
    let server = Redis::start().unwrap();
    let store = RedisStore::open(
        &server.url(0),
        StoreOptions {
            lease: store_suite::LEASE,
            clock,
            max_holdings: store_suite::MAX_HOLDINGS,
            retention: Some(store_suite::RETENTION),
        },
    )
    .await
    .unwrap()
    .with_swarms(swarms);
    (store, server)
});
