//! Reports against peers and URL mappings: what hides a peer, what withdraws a mapping.

use std::sync::Arc;

use shoal_core::wire::UrlKey;
use shoal_core::{ContentId, Manifest};
use shoal_tracker::store::{PeerReport, Reporter, UrlReport, REPORT_HOLD};
use shoal_tracker::{Clock, Store, StoreError};

use super::{caller, content, holding, id, peer_ids, reg};

pub(crate) async fn reports_hide_a_peer_for_one_content<S: Store>(store: S, clock: Clock) {
    let t = || caller("t");
    store
        .register(t(), reg("bad", vec![holding(1, None), holding(2, None)]))
        .await
        .unwrap();
    store
        .register(t(), reg("good", vec![holding(1, Some(&[0]))]))
        .await
        .unwrap();
    let report = |n: u8, agent: &str, piece: u32| PeerReport {
        content: content(n),
        agent: id(agent),
        piece,
        by: Reporter::Admin,
    };
    assert!(store.report(report(1, "bad", 3)).await.unwrap());
    assert_eq!(peer_ids(&store, 1, None).await, ["good"]);
    assert_eq!(peer_ids(&store, 2, None).await, ["bad"]);
    // Registering again does not lift it.
    store
        .register(t(), reg("bad", vec![holding(1, None), holding(2, None)]))
        .await
        .unwrap();
    assert_eq!(peer_ids(&store, 1, None).await, ["good"]);

    // Reports of agents that do not hold the content change nothing.
    assert!(!store.report(report(2, "good", 0)).await.unwrap());
    assert!(!store.report(report(2, "nobody", 0)).await.unwrap());
    assert_eq!(peer_ids(&store, 2, None).await, ["bad"]);
    assert!(matches!(
        store.report(report(9, "bad", 0)).await,
        Err(StoreError::UnknownContent(_))
    ));
    let err = store.report(report(1, "bad", 10)).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid { ref field, .. } if field == "piece"));

    // The hold ends by itself.
    clock.advance(REPORT_HOLD);
    store.sweep().await.unwrap();
    store
        .register(t(), reg("bad", vec![holding(1, None)]))
        .await
        .unwrap();
    assert_eq!(peer_ids(&store, 1, None).await, ["bad"]);
}

/// Registers `bad` and `good` again, holding content 1: leases are shorter than a report's
/// hold, and reports count only against live holders.
async fn renew_bad_and_good<S: Store>(store: &S) {
    for agent in ["bad", "good"] {
        store
            .register(caller("t"), reg(agent, vec![holding(1, None)]))
            .await
            .unwrap();
    }
}

async fn offered<S: Store>(store: &S) -> Vec<String> {
    let mut ids = peer_ids(store, 1, None).await;
    ids.sort();
    ids
}

pub(crate) async fn reports_need_corroboration<S: Store>(store: S, clock: Clock) {
    renew_bad_and_good(&store).await;
    let by = |reporter: &str| PeerReport {
        content: content(1),
        agent: id("bad"),
        piece: 0,
        by: Reporter::Agent(id(reporter)),
    };
    let both = ["bad", "good"];
    // One report, and the same agent's again, hide nothing.
    assert!(!store.report(by("r1")).await.unwrap());
    assert!(!store.report(by("r1")).await.unwrap());
    assert_eq!(offered(&store).await, both);
    // A second agent's report, within the hold of the first, does.
    clock.advance(REPORT_HOLD / 2);
    renew_bad_and_good(&store).await;
    assert!(store.report(by("r2")).await.unwrap());
    assert_eq!(offered(&store).await, ["good"]);

    // Reports that lapsed before the next one corroborate nothing.
    clock.advance(REPORT_HOLD);
    renew_bad_and_good(&store).await;
    assert_eq!(offered(&store).await, both);
    assert!(!store.report(by("r1")).await.unwrap());
    clock.advance(REPORT_HOLD);
    renew_bad_and_good(&store).await;
    assert!(!store.report(by("r2")).await.unwrap());
    assert_eq!(offered(&store).await, both);

    // One admin report is enough.
    let admin_report = PeerReport {
        by: Reporter::Admin,
        ..by("r1")
    };
    assert!(store.report(admin_report).await.unwrap());
    assert_eq!(offered(&store).await, ["good"]);
}

pub(crate) async fn url_reports_withdraw_a_mapping_on_corroboration<S: Store>(
    store: S,
    clock: Clock,
) {
    let key = |version: &str| UrlKey {
        url: "https://origin.example/f.iso".into(),
        size: 40,
        etag: Some(format!("\"{version}\"")),
        last_modified: None,
    };
    let mut ids = Vec::new();
    for seed in [1, 2] {
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(seed)).collect();
        let manifest = Manifest::of_bytes(&data, 4).unwrap();
        ids.push(manifest.id());
        store.put_manifest(manifest, Arc::from("t")).await.unwrap();
    }
    let (poisoned, honest) = (ids[0], ids[1]);
    for version in ["v1", "v2"] {
        store
            .publish_url(key(version), poisoned, Arc::from("liar"))
            .await
            .unwrap();
    }
    let report = |version: &str, content: ContentId, by: Reporter| UrlReport {
        key: key(version),
        content,
        by,
    };
    let agent = |name: &str| Reporter::Agent(id(name));
    let mapped = |version: &'static str| {
        let store = store.clone();
        async move { store.lookup_url(key(version)).await.map(|m| m.content).ok() }
    };

    // One agent's reports, a report of another content, and one that lapsed withdraw nothing.
    assert!(!store
        .report_url(report("v1", poisoned, agent("r1")))
        .await
        .unwrap());
    assert!(!store
        .report_url(report("v1", poisoned, agent("r1")))
        .await
        .unwrap());
    assert!(!store
        .report_url(report("v1", honest, agent("r2")))
        .await
        .unwrap());
    assert_eq!(mapped("v1").await, Some(poisoned));
    clock.advance(REPORT_HOLD);
    store.sweep().await.unwrap();
    assert!(!store
        .report_url(report("v1", poisoned, agent("r2")))
        .await
        .unwrap());
    assert_eq!(mapped("v1").await, Some(poisoned));

    // A second agent within the hold does; then the next publish of the version wins.
    assert!(store
        .report_url(report("v1", poisoned, agent("r3")))
        .await
        .unwrap());
    assert_eq!(mapped("v1").await, None);
    assert_eq!(mapped("v2").await, Some(poisoned));
    assert!(!store
        .report_url(report("v1", poisoned, agent("r4")))
        .await
        .unwrap());
    let (mapping, created) = store
        .publish_url(key("v1"), honest, Arc::from("honest"))
        .await
        .unwrap();
    assert!(created && mapping.content == honest);

    // One admin report is enough.
    assert!(store
        .report_url(report("v2", poisoned, Reporter::Admin))
        .await
        .unwrap());
    assert_eq!(mapped("v2").await, None);
}
