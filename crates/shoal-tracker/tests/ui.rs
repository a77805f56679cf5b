//! The tracker's page over HTTP: its assets carry the security headers, and its event stream is
//! refused without a reader's token, sends the page's view at once, and ends when the tracker
//! stops, so that a browser left open never holds up a shutdown.

mod common;

use std::time::Duration;

use common::{content, holding, start, Setup, AGENT, READER};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn the_page_is_served_with_its_security_headers() {
    let server = start(Setup::default()).await;
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/tracker.js", "text/javascript"),
        ("/ui/common.js", "text/javascript"),
        ("/ui/tracker.css", "text/css"),
    ] {
        let response = server
            .request(Method::GET, path, None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let header = |name: &str| headers[name].to_str().unwrap().to_string();
        assert!(header("content-type").starts_with(kind), "{path}");
        assert!(
            header("content-security-policy").contains("script-src 'self'"),
            "{path}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn the_event_stream_needs_a_reader_and_ends_with_the_tracker() {
    let server = start(Setup::default()).await;
    let (_, x) = content(1, 8);
    let body = json!({"addr": "127.0.0.1:1", "holdings": [holding(&x, "a.bin", 8, None)]});
    assert_eq!(
        server.register(AGENT, "web-1", body).await.0,
        StatusCode::OK
    );

    for (token, status) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some(AGENT), StatusCode::FORBIDDEN),
    ] {
        let response = server.request(Method::GET, "/ui/events", token);
        assert_eq!(response.send().await.unwrap().status(), status, "{token:?}");
    }
    let long = format!("/ui/events?name={}", "x".repeat(2000));
    let (status, error) = server.call(Method::GET, &long, Some(READER), None).await;
    assert_eq!(
        (status, &error["field"]),
        (StatusCode::BAD_REQUEST, &json!("name"))
    );

    let mut stream = server
        .request(Method::GET, "/ui/events", Some(READER))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert!(stream.headers().contains_key("content-security-policy"));
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .expect("the first view comes at once")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let event = text.split("\n\n").next().unwrap();
    let data = event
        .strip_prefix("event: view\ndata: ")
        .unwrap_or_else(|| panic!("not a view event: {event}"));
    let view: Value = serde_json::from_str(data).unwrap();
    assert_eq!(view["totals"]["agents"], 1);
    assert_eq!(view["agents"][0]["id"], "web-1");
    assert_eq!(view["contents"][0]["name"], "a.bin");
    assert_eq!(
        view["contents"][0]["availability"],
        json!([1, 1]),
        "2 pieces, 1 holder"
    );
    assert_eq!(view["swarms"], json!([]));

    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the tracker stops while a page's stream is open");
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(_chunk) = stream.chunk().await.ok().flatten() {}
    });
    end.await.expect("the stream ended with the tracker");
}
