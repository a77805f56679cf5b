//! The web pages' shared assets, and the one way shoal's servers (the tracker's `/ui`, the
//! agent's `/ui` on its RPC listener) serve them. It knows nothing of either server's state.
//!
//! Every asset is built into the binary (`include_str!`): nothing is fetched at run time, so a
//! page works on a fleet without Internet access and no CDN can change what it runs. Every
//! response carries [`SECURITY_HEADERS`]: a Content-Security-Policy that allows only the
//! page's own scripts, styles and connections (no inline script, no `eval`, no framing),
//! `nosniff`, and no referrer (the token lives in the URL fragment, which browsers never send,
//! but a referrer would still name the page).
//!
//! The shared script ([`COMMON_JS`]) holds what both pages need: the token (from `#token=`,
//! a form, kept in `sessionStorage`), DOM building through `textContent` only (file names,
//! URLs and agent ids are attacker-controlled text), and number formatting.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// What a page may load and run: its own scripts, styles, images and connections only; no
/// inline script or style element, no plugins, no `<base>`, forms only to itself, and no
/// framing (clickjacking).
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The headers every page response carries: [`CONTENT_SECURITY_POLICY_VALUE`], `nosniff`,
/// `no-referrer`, `DENY` for browsers older than `frame-ancestors`, and `no-store` (the
/// assets are small, and a stale script must never talk to a newer server).
pub const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY_VALUE),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (REFERRER_POLICY, "no-referrer"),
    (X_FRAME_OPTIONS, "DENY"),
    (CACHE_CONTROL, "no-store"),
];

/// The script both pages load first: the token, DOM helpers, formatting.
pub const COMMON_JS: Asset = Asset::js(include_str!("assets/common.js"));
/// The style sheet both pages load first: layout that fits 1280×800 and a 390×844 phone.
pub const COMMON_CSS: Asset = Asset::css(include_str!("assets/common.css"));
/// Where a page loads [`COMMON_JS`] from, under its own prefix.
pub const COMMON_JS_PATH: &str = "common.js";
/// Where a page loads [`COMMON_CSS`] from, under its own prefix.
pub const COMMON_CSS_PATH: &str = "common.css";

/// A file built into the binary, with its media type.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The `Content-Type` it is served with.
    pub content_type: &'static str,
    /// Its text.
    pub body: &'static str,
}

impl Asset {
    /// An HTML page.
    pub const fn html(body: &'static str) -> Self {
        Self {
            content_type: "text/html; charset=utf-8",
            body,
        }
    }

    /// A script.
    pub const fn js(body: &'static str) -> Self {
        Self {
            content_type: "text/javascript; charset=utf-8",
            body,
        }
    }

    /// A style sheet.
    pub const fn css(body: &'static str) -> Self {
        Self {
            content_type: "text/css; charset=utf-8",
            body,
        }
    }
}

impl IntoResponse for Asset {
    fn into_response(self) -> Response {
        let mut response = self.body.into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        secure(headers);
        response
    }
}

/// The routes of the page called `name`: the page at `/ui` and `/ui/`, the shared
/// [`COMMON_JS`] and [`COMMON_CSS`], and its own `/ui/NAME.js` and `/ui/NAME.css`; the server
/// adds its data routes beside them.
pub fn page_routes<S: Clone + Send + Sync + 'static>(
    name: &str,
    page: Asset,
    script: Asset,
    style: Asset,
) -> Router<S> {
    Router::new()
        .route("/ui", get(move || async move { page }))
        .route("/ui/", get(move || async move { page }))
        .route(
            &format!("/ui/{COMMON_JS_PATH}"),
            get(|| async { COMMON_JS }),
        )
        .route(
            &format!("/ui/{COMMON_CSS_PATH}"),
            get(|| async { COMMON_CSS }),
        )
        .route(
            &format!("/ui/{name}.js"),
            get(move || async move { script }),
        )
        .route(
            &format!("/ui/{name}.css"),
            get(move || async move { style }),
        )
}

/// Adds [`SECURITY_HEADERS`] to a response's headers (the pages' JSON and event streams carry
/// them too, so that nothing a page fetches can be rendered as a page of its own).
pub fn secure(headers: &mut axum::http::HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_carry_the_security_headers() {
        let response = Asset::html("<!doctype html>").into_response();
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
        let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[REFERRER_POLICY], "no-referrer");
    }

    #[test]
    fn shared_script_never_parses_html() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(
                !COMMON_JS.body.contains(forbidden),
                "common.js uses {forbidden}"
            );
        }
    }
}
