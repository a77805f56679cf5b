//! The store suite's case for `Registration::scheme`: an agent that serves HTTPS is named with
//! it wherever its address is, and a plain one (as agents from before TLS) with `http`.

use shoal_core::wire::Scheme;
use shoal_tracker::store::{AgentPage, PeerQuery};
use shoal_tracker::{Clock, Store};

use super::{caller, content, holding, reg};

pub(crate) async fn an_agent_serving_tls_is_named_with_https<S: Store>(store: S, _: Clock) {
    let tls = |scheme| shoal_tracker::store::Registration {
        scheme,
        ..reg("tls", vec![holding(1, None)])
    };
    store
        .register(caller("t"), tls(Scheme::Https))
        .await
        .unwrap();
    store
        .register(caller("t"), reg("plain", vec![holding(1, None)]))
        .await
        .unwrap();
    let schemes = || async {
        let peers = store
            .peers(content(1), PeerQuery { k: 10, asker: None })
            .await
            .unwrap();
        let mut named: Vec<(String, Scheme)> = peers
            .peers
            .into_iter()
            .map(|p| (p.id.to_string(), p.scheme))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let page = AgentPage {
            after: None,
            limit: 10,
        };
        let listed: Vec<(String, Scheme)> = (store.agents(page).await.unwrap())
            .into_iter()
            .map(|a| (a.id.to_string(), a.scheme))
            .collect();
        assert_eq!(named, listed);
        named
    };
    assert_eq!(
        schemes().await,
        [
            ("plain".to_string(), Scheme::Http),
            ("tls".to_string(), Scheme::Https)
        ]
    );
    // Restarted without its certificate at the same address: plain again.
    store
        .register(caller("t"), tls(Scheme::Http))
        .await
        .unwrap();
    assert_eq!(schemes().await[1], ("tls".to_string(), Scheme::Http));
}
