//! What the liar [`crate::Peer`]'s origin answers beyond the file's bytes: the bearer token
//! check and the `have` long-poll of the piece protocol ([`shoal_core::wire::peer`]).

use bytes::Bytes;
use shoal_core::wire::peer::{PeerHave, HAVE_WAIT};
use shoal_core::Bitfield;

use crate::http1::{Body, Request, Response};

/// What an origin answers as a peer, beyond the file's bytes.
#[derive(Debug)]
pub(crate) struct PeerRoutes {
    token: Option<String>,
    have: Bitfield,
}

impl PeerRoutes {
    /// Routes that take `token` (any request when `None`) and answer `have` as a holder of
    /// the pieces in it.
    pub(crate) fn new(token: Option<String>, have: Bitfield) -> Self {
        Self { token, have }
    }

    /// The answer to `request` when it is not for the file's bytes: a refused token, or the
    /// `have` long-poll.
    pub(crate) fn answer(&self, request: &Request) -> Option<Response> {
        if let Some(token) = &self.token {
            let given = request
                .header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                None => {
                    let mut response = Response::short(401);
                    response.header("WWW-Authenticate", "Bearer".into());
                    return Some(response);
                }
                Some(given) if given != token => return Some(Response::short(403)),
                Some(_) => {}
            }
        }
        let (route, query) = request
            .target
            .split_once('?')
            .unwrap_or((request.target.as_str(), ""));
        if !route.ends_with("/have") {
            return None;
        }
        let have = PeerHave::of(&self.have);
        let after = query
            .split('&')
            .find_map(|pair| pair.strip_prefix("after="))
            .and_then(|n| n.parse::<u32>().ok());
        let body = serde_json::to_vec(&have).expect("a have answer serializes");
        Some(Response {
            status: 200,
            headers: vec![("Content-Type", "application/json".to_owned())],
            body: Body::Fixed(Bytes::from(body)),
            // Nothing more will be verified here: a poll for more waits as long as an agent's.
            delay: if after.is_some_and(|a| a >= have.count) {
                HAVE_WAIT
            } else {
                std::time::Duration::ZERO
            },
        })
    }
}
