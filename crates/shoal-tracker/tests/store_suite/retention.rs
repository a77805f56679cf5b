//! The store suite's case for `StoreOptions::retention`: contents no agent holds are removed
//! by the sweep once the retention has passed, and only then.

use std::time::Duration;

use shoal_core::wire::{Holding, UrlKey};
use shoal_core::Manifest;
use shoal_tracker::store::PeerQuery;
use shoal_tracker::{Clock, Store, StoreError};

use super::{caller, holding, id, reg, url_key, RETENTION};

pub(crate) async fn unheld_contents_go_after_the_retention<S: Store>(store: S, clock: Clock) {
    // Two files with manifests and URL mappings: "a" holds the first until it leaves, "b"
    // holds the second throughout (registering again before each sweep, as its heartbeats
    // would keep it live).
    let gone = Manifest::of_bytes(&[1u8; 40], 4).unwrap();
    let kept = Manifest::of_bytes(&[2u8; 40], 4).unwrap();
    let held = |m: &Manifest| Holding {
        content: m.id(),
        ..holding(0, None)
    };
    let key = |m: &Manifest| UrlKey {
        url: format!("https://example.com/{}", m.id()),
        ..url_key(0)
    };
    for (agent, m) in [("a", &gone), ("b", &kept)] {
        store.put_manifest(m.clone(), "t".into()).await.unwrap();
        store
            .register(caller("t"), reg(agent, vec![held(m)]))
            .await
            .unwrap();
        store.publish_url(key(m), m.id(), "t".into()).await.unwrap();
    }
    store.deregister(caller("t"), id("a")).await.unwrap();
    let b_beats = || store.register(caller("t"), reg("b", vec![held(&kept)]));

    assert_eq!(store.sweep().await.unwrap().contents, 0);
    clock.advance(RETENTION - Duration::from_secs(1));
    b_beats().await.unwrap();
    assert_eq!(store.sweep().await.unwrap().contents, 0);
    // Unheld for less than the retention: all still there.
    assert!(store.content(gone.id()).await.is_ok());
    assert_eq!(store.manifest(gone.id()).await.unwrap(), gone);
    assert_eq!(
        store.lookup_url(key(&gone)).await.unwrap().content,
        gone.id()
    );

    clock.advance(Duration::from_secs(1));
    b_beats().await.unwrap();
    assert_eq!(store.sweep().await.unwrap().contents, 1);
    assert!(matches!(
        store.content(gone.id()).await,
        Err(StoreError::UnknownContent(_))
    ));
    assert!(matches!(
        store.manifest(gone.id()).await,
        Err(StoreError::NoManifest(_))
    ));
    assert!(matches!(
        store.lookup_url(key(&gone)).await,
        Err(StoreError::UnknownUrl)
    ));
    assert!(matches!(
        store.latest_url(key(&gone).url).await,
        Err(StoreError::UnknownUrl)
    ));
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.contents, stats.manifests), (1, 1), "{stats:?}");

    // What was held all along is untouched, holder included.
    assert_eq!(store.manifest(kept.id()).await.unwrap(), kept);
    assert_eq!(
        store.lookup_url(key(&kept)).await.unwrap().content,
        kept.id()
    );
    let summary = store.content(kept.id()).await.unwrap();
    assert_eq!(summary.complete_holders, 1);
    assert_eq!(
        store
            .peers(kept.id(), PeerQuery { k: 5, asker: None })
            .await
            .unwrap()
            .peers
            .iter()
            .map(|p| p.id.to_string())
            .collect::<Vec<_>>(),
        ["b"]
    );
    // A removed content comes back when an agent announces it again.
    store
        .register(caller("t"), reg("a", vec![held(&gone)]))
        .await
        .unwrap();
    assert_eq!(store.content(gone.id()).await.unwrap().complete_holders, 1);
    store.deregister(caller("t"), id("b")).await.unwrap();
    assert_eq!(store.content(kept.id()).await.unwrap().complete_holders, 0);
}
