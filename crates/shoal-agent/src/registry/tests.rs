//! The mirror in process, against a real `docker-registry` (from the test kit): an agent
//! without a tracker, so blobs come from the upstream alone, through the same fetch and
//! ordered body the fleet uses; and against upstreams that fail, on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use http::{header, Method, Request, StatusCode};
use shoal_engine::CancellationToken;
use shoal_testkit::{sha256_hex, Credentials, OciImage, Registry, RegistryConfig};

use super::*;

const MIB: usize = 1 << 20;

/// A mirror of `upstream` in an agent of its own (data in `data`), giving up on it after
/// `timeout` of silence, and what stops it.
fn mirror(
    upstream: &str,
    data: &std::path::Path,
    timeout: Duration,
) -> (Mirror, CancellationToken) {
    let fetcher = crate::testing::lone_fetcher("mirror-test", data);
    let stop = CancellationToken::new();
    let options = MirrorOptions {
        upstreams: Upstreams::new(vec![upstream.parse().unwrap()]).unwrap(),
        timeout,
        read_ahead: 1,
    };
    let mirror = Mirror::new(options, Ordered::new(fetcher, stop.clone()));
    (mirror, stop)
}

/// A registry, or `None` (and a SKIP line) when `docker-registry` or skopeo is missing.
fn start(config: RegistryConfig) -> Option<Registry> {
    if !std::path::Path::new("/usr/bin/skopeo").exists() {
        println!("SKIP: skopeo is not installed (apt-get install skopeo)");
        return None;
    }
    match Registry::start(config) {
        Ok(registry) => Some(registry),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("SKIP: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

fn get(path: &str, authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::builder().method(Method::GET).uri(path);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    request.body(Body::empty()).unwrap()
}

/// The whole body, or how it ended early: the bytes read until then.
async fn read(response: Response<Body>) -> Result<Vec<u8>, Vec<u8>> {
    let mut stream = response.into_body().into_data_stream();
    let mut bytes = Vec::new();
    // Bounded by the body's length, and by the test's timeout.
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(_) => return Err(bytes),
        }
    }
    Ok(bytes)
}

#[tokio::test]
async fn pings_and_manifests_pass_through_and_blobs_come_whole_and_checked() {
    let Some(registry) = start(RegistryConfig::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(&dir.path().join("image"), "v1", &[MIB, 100_000], 5).unwrap();
    image.push(&registry, "team/app", None).unwrap();
    let (mirror, stop) = mirror(
        &registry.url(),
        &dir.path().join("data"),
        crate::proxy::DEFAULT_UPSTREAM_TIMEOUT,
    );

    let ping = mirror.handle(get("/v2/", None)).await;
    assert_eq!(ping.status(), StatusCode::OK);
    assert!(ping
        .headers()
        .contains_key("docker-distribution-api-version"));

    let mut manifest = get("/v2/team/app/manifests/v1", None);
    manifest.headers_mut().insert(
        header::ACCEPT,
        "application/vnd.oci.image.manifest.v1+json"
            .parse()
            .unwrap(),
    );
    let manifest = mirror.handle(manifest).await;
    assert_eq!(manifest.status(), StatusCode::OK);
    let body = read(manifest).await.unwrap();
    assert_eq!(sha256_hex(&body), image.manifest.hex);

    for layer in &image.layers {
        let path = format!("/v2/team/app/blobs/{}", layer.digest());
        let answer = tokio::time::timeout(Duration::from_secs(60), mirror.handle(get(&path, None)))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(
            answer.headers()["docker-content-digest"],
            layer.digest().as_str()
        );
        let body = read(answer).await.expect("the whole blob");
        assert_eq!(sha256_hex(&body), layer.hex);
    }

    let unknown = format!("/v2/team/app/blobs/sha256:{}", "0".repeat(64));
    let answer = mirror.handle(get(&unknown, None)).await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
    stop.cancel();
}

#[tokio::test]
async fn a_private_blob_needs_the_clients_own_credentials_every_time() {
    let user = Credentials {
        user: "ci".into(),
        password: "pull-secret".into(),
    };
    let Some(registry) = start(RegistryConfig {
        auth: Some(user.clone()),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(&dir.path().join("image"), "v1", &[MIB], 6).unwrap();
    image.push(&registry, "private/app", Some(&user)).unwrap();
    let (mirror, stop) = mirror(
        &registry.url(),
        &dir.path().join("data"),
        crate::proxy::DEFAULT_UPSTREAM_TIMEOUT,
    );
    let layer = &image.layers[0];
    let path = format!("/v2/private/app/blobs/{}", layer.digest());

    let refused = mirror.handle(get(&path, None)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers()[header::WWW_AUTHENTICATE],
        "Basic realm=\"shoal-test\""
    );
    assert!(registry.blob_gets(&layer.hex).is_empty());

    let served = mirror.handle(get(&path, Some(&user.basic()))).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(sha256_hex(&read(served).await.unwrap()), layer.hex);

    // Held in this agent's cache now: still the registry's word first.
    let wrong = Credentials {
        password: "guess".into(),
        ..user.clone()
    };
    let refused = mirror.handle(get(&path, Some(&wrong.basic()))).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let refused = mirror.handle(get(&path, None)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let sent = |gets: Vec<u64>| gets.iter().sum::<u64>();
    let before = sent(registry.blob_gets(&layer.hex));
    let again = mirror.handle(get(&path, Some(&user.basic()))).await;
    assert_eq!(sha256_hex(&read(again).await.unwrap()), layer.hex);
    // From the cache: the registry answered the HEAD and the one-byte probe of its version.
    let after = sent(registry.blob_gets(&layer.hex));
    assert!(
        after - before <= 1,
        "the registry sent {} bytes again",
        after - before
    );
    stop.cancel();
}

#[tokio::test]
async fn a_blob_whose_bytes_do_not_match_its_digest_ends_early_and_is_not_kept() {
    let Some(registry) = start(RegistryConfig::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = OciImage::build(&dir.path().join("image"), "v1", &[2 * MIB], 7).unwrap();
    image.push(&registry, "team/bad", None).unwrap();
    let layer = &image.layers[0];
    let stored = registry.blob_path(&layer.hex);
    let mut bytes = std::fs::read(&stored).unwrap();
    let near_end = bytes.len() - 100;
    bytes[near_end] ^= 1;
    std::fs::write(&stored, &bytes).unwrap();
    let (mirror, stop) = mirror(
        &registry.url(),
        &dir.path().join("data"),
        crate::proxy::DEFAULT_UPSTREAM_TIMEOUT,
    );
    let path = format!("/v2/team/bad/blobs/{}", layer.digest());

    for attempt in 0..2 {
        let answer = mirror.handle(get(&path, None)).await;
        assert_eq!(answer.status(), StatusCode::OK, "attempt {attempt}");
        let short = match read(answer).await {
            Ok(whole) => panic!(
                "attempt {attempt}: all {} bytes came as a whole body",
                whole.len()
            ),
            Err(short) => short,
        };
        assert!(
            (short.len() as u64) < layer.size,
            "attempt {attempt}: all {} bytes went out",
            short.len()
        );
    }
    // The reader ends the body as soon as the last byte disagrees; the download drops the
    // bytes once it has hashed them too.
    let corrupt = sha256_hex(&bytes);
    let kept = || -> Vec<_> {
        walk(&dir.path().join("data"))
            .into_iter()
            .filter(|file| std::fs::read(file).is_ok_and(|b| sha256_hex(&b) == corrupt))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Bounded by the deadline.
    while !kept().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(kept().is_empty(), "the wrong bytes were kept: {:?}", kept());
    stop.cancel();
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// An upstream on loopback that takes every connection and never answers, holding each open.
async fn silent_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        // Ends with the test's runtime.
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// The status and the registry error's `(code, message)` of `answer`.
async fn registry_error(answer: Response<Body>) -> (StatusCode, String, String) {
    let status = answer.status();
    let body = read(answer).await.expect("a whole error body");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let error = &body["errors"][0];
    (
        status,
        error["code"].as_str().unwrap().to_string(),
        error["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_a_504_and_one_that_refuses_a_502() {
    let silent = silent_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let (waiting, stop) = mirror(
        &format!("http://{silent}"),
        &dir.path().join("silent"),
        Duration::from_secs(1),
    );
    let blob = format!("/v2/team/app/blobs/sha256:{}", "0".repeat(64));
    // Passed through, and a blob's access check before the swarm.
    for path in ["/v2/", blob.as_str()] {
        assert_eq!(
            registry_error(waiting.handle(get(path, None)).await).await,
            (
                StatusCode::GATEWAY_TIMEOUT,
                "UNAVAILABLE".to_string(),
                format!(
                    "the upstream registry at http://{silent}{path} sent no answer within 1s \
                     (--proxy-timeout)"
                )
            )
        );
    }
    stop.cancel();

    let refusing = crate::testing::refusing_url();
    let (refused, stop) = mirror(
        refusing.as_str(),
        &dir.path().join("refusing"),
        Duration::from_secs(1),
    );
    let (status, code, message) = registry_error(refused.handle(get("/v2/", None)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_GATEWAY, "UNAVAILABLE")
    );
    assert!(
        message.starts_with(&format!(
            "the upstream registry at {refusing}v2/ did not answer ("
        )),
        "{message}"
    );
    stop.cancel();
}
