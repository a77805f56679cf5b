//! Runs the shared store suite against every backend.

mod store_suite;

use shoal_tracker::{Clock, SqliteLocation, SqliteStore, StoreOptions};

store_suite!(sqlite, |clock: Clock| async move {
    SqliteStore::open(
        SqliteLocation::Memory,
        StoreOptions {
            lease: store_suite::LEASE,
            clock,
        },
    )
    .await
    .unwrap()
});
