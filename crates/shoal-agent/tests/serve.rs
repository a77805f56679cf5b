//! The piece server, run for real on loopback and spoken to with a raw HTTP/1.1 client: it
//! sends request targets exactly as written (no `..` normalization, no re-escaping) and shows
//! whether a body arrived whole.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_agent::serve::{self, PieceServer, ServeOptions};
use shoal_agent::{Catalog, Entry, Provenance};
use shoal_core::wire::peer::{path, KnownPeer, PeerHave, PeerList, EXCHANGE_RATE};
use shoal_core::wire::{AgentId, ErrorBody, Scheme, SwarmDigests};
use shoal_core::{ContentId, Manifest, PieceIndex};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SECRET: &str = "peer-secret-0123456789";
const WRONG: &str = "wrong-secret-0123456789";
const PIECE: u64 = 1 << 20;
/// Four pieces, the last one short.
const SIZE: usize = 3 * (1 << 20) + 12_345;

/// Piece `index` of the entry's layout.
fn piece(entry: &Entry, index: u32) -> PieceIndex {
    entry.layout().piece(index).unwrap()
}

/// One answer: status, headers (names in lower case) and, once read, the body.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn error(&self) -> ErrorBody {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn length(&self) -> usize {
        self.header("content-length").unwrap().parse().unwrap()
    }
}

/// One client connection, kept alive between requests.
struct Conn {
    tcp: TcpStream,
    buffered: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            tcp: TcpStream::connect(addr).await.unwrap(),
            buffered: Vec::new(),
        }
    }

    async fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)]) {
        let mut request = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.tcp.write_all(request.as_bytes()).await.unwrap();
    }

    /// Reads the status line and headers of the next answer.
    async fn head(&mut self) -> Answer {
        let end = loop {
            if let Some(at) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            assert!(
                self.fill().await.unwrap() > 0,
                "connection closed in the head"
            );
        };
        let head = String::from_utf8(self.buffered.drain(..end + 4).collect()).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_string())
            })
            .collect();
        Answer {
            status: status.parse().unwrap(),
            headers,
            body: Vec::new(),
        }
    }

    /// Reads the body `answer` announced; an error when the connection ends before it does.
    async fn body(&mut self, answer: &mut Answer) -> io::Result<()> {
        let length = answer.length();
        while self.buffered.len() < length {
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        answer.body = self.buffered.drain(..length).collect();
        Ok(())
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0; 64 * 1024];
        let n = self.tcp.read(&mut chunk).await?;
        self.buffered.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}

/// One request on a fresh connection, body and all (none for `HEAD`).
async fn fetch(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    let mut conn = Conn::open(addr).await;
    conn.send(method, target, headers).await;
    let mut answer = conn.head().await;
    if method != "HEAD" {
        conn.body(&mut answer).await.unwrap();
    }
    answer
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

struct Peer {
    addr: SocketAddr,
    server: PieceServer,
    catalog: Catalog,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

async fn start(options: ServeOptions) -> Peer {
    let catalog = Catalog::new();
    let options = ServeOptions {
        tokens: vec![SECRET.into()],
        ..options
    };
    let server = PieceServer::new(catalog.clone(), options);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve::run(listener, server.clone(), async move {
        let _ = stopped.await;
    }));
    Peer {
        addr,
        server,
        catalog,
        dir: tempfile::tempdir().unwrap(),
        stop: Some(stop),
        task,
    }
}

/// Options whose uploads crawl, so a test can hold one open as long as it likes.
fn crawling() -> ServeOptions {
    ServeOptions {
        upload_limit: Some(64 * 1024),
        ..Default::default()
    }
}

fn data(seed: u64) -> Vec<u8> {
    shoal_testkit::random_bytes(SIZE, seed).to_vec()
}

impl Peer {
    /// Writes `data` to `name` and catalogs it with no piece verified.
    fn add(&self, name: &str, data: &[u8]) -> Arc<Entry> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let manifest = Arc::new(Manifest::of_bytes(data, PIECE).unwrap());
        let entry = Arc::new(Entry::new(manifest, name.into(), Provenance::Fetched, path));
        self.catalog.insert(entry.clone());
        entry
    }

    /// Writes `data` to `name` and catalogs it as whole.
    fn share(&self, name: &str, data: &[u8]) -> ContentId {
        let entry = self.add(name, data);
        for piece in entry.layout().pieces() {
            entry.mark(piece);
        }
        entry.id()
    }

    /// An authenticated `GET`, with a `Range` when one is given.
    async fn get(&self, id: &ContentId, range: Option<&str>) -> Answer {
        let (mut conn, mut answer) = self.open(id, range).await;
        conn.body(&mut answer).await.unwrap();
        answer
    }

    /// An authenticated `GET` whose body is left unread.
    async fn open(&self, id: &ContentId, range: Option<&str>) -> (Conn, Answer) {
        let auth = bearer(SECRET);
        let mut headers = vec![("Authorization", auth.as_str())];
        headers.extend(range.map(|r| ("Range", r)));
        let mut conn = Conn::open(self.addr).await;
        conn.send("GET", &path::pieces(id), &headers).await;
        let answer = conn.head().await;
        (conn, answer)
    }

    /// Waits until no upload is in progress; the deadline only keeps a broken server from
    /// hanging the test.
    async fn idle(&self) {
        for _ in 0..500 {
            if self.server.load() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("uploads still in progress: {}", self.server.load());
    }
}

fn unsatisfiable(answer: &Answer) {
    assert_eq!(answer.status, 416);
    assert_eq!(
        answer.header("content-range"),
        Some(&*format!("bytes */{SIZE}"))
    );
    assert_eq!(answer.error().field.as_deref(), Some("range"));
}

#[tokio::test]
async fn whole_file_when_every_piece_is_held() {
    let peer = start(ServeOptions::default()).await;
    let data = data(1);
    let id = peer.share("f", &data);
    let answer = peer.get(&id, None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.length(), SIZE);
    assert_eq!(answer.header("accept-ranges"), Some("bytes"));
    assert_eq!(answer.header("etag"), Some(&*format!("\"{id}\"")));
    assert_eq!(answer.header("content-range"), None);
    assert_eq!(blake3::hash(&answer.body), blake3::hash(&data));
    assert_eq!(peer.server.bytes_served(), SIZE as u64);
    assert_eq!(peer.server.load(), 0);
}

#[tokio::test]
async fn ranges_are_served_exactly() {
    let peer = start(ServeOptions::default()).await;
    let data = data(2);
    let id = peer.share("f", &data);

    // Across a piece boundary.
    let answer = peer.get(&id, Some("bytes=1048000-1049999")).await;
    assert_eq!(answer.status, 206);
    let content_range = format!("bytes 1048000-1049999/{SIZE}");
    assert_eq!(answer.header("content-range"), Some(&*content_range));
    assert_eq!(answer.length(), 2000);
    assert_eq!(answer.header("accept-ranges"), Some("bytes"));
    assert_eq!(answer.header("etag"), Some(&*format!("\"{id}\"")));
    assert_eq!(answer.body, data[1_048_000..1_050_000]);

    let answer = peer.get(&id, Some("bytes=-1000")).await;
    assert_eq!(answer.status, 206);
    let content_range = format!("bytes {}-{}/{SIZE}", SIZE - 1000, SIZE - 1);
    assert_eq!(answer.header("content-range"), Some(&*content_range));
    assert_eq!(answer.body, data[SIZE - 1000..]);

    let answer = peer.get(&id, Some("bytes=3000000-")).await;
    assert_eq!(answer.status, 206);
    assert_eq!(answer.body, data[3_000_000..]);

    // A last byte past the end is cut to the end.
    let range = format!("bytes={}-{}", SIZE - 10, SIZE + 1000);
    let answer = peer.get(&id, Some(&range)).await;
    assert_eq!(answer.status, 206);
    assert_eq!(answer.body, data[SIZE - 10..]);

    let served = 2000 + 1000 + (SIZE - 3_000_000) + 10;
    assert_eq!(peer.server.bytes_served(), served as u64);
}

#[tokio::test]
async fn one_connection_serves_many_requests() {
    let peer = start(ServeOptions::default()).await;
    let data = data(3);
    let id = peer.share("f", &data);
    let auth = bearer(SECRET);
    let mut conn = Conn::open(peer.addr).await;
    for start in [0, 2_000_000, SIZE - 7] {
        let range = format!("bytes={start}-{}", start + 6);
        let headers = [("Authorization", auth.as_str()), ("Range", range.as_str())];
        conn.send("GET", &path::pieces(&id), &headers).await;
        let mut answer = conn.head().await;
        conn.body(&mut answer).await.unwrap();
        assert_eq!(answer.status, 206);
        assert_eq!(answer.body, data[start..start + 7]);
    }
}

#[tokio::test]
async fn unsatisfiable_and_malformed_ranges() {
    let peer = start(ServeOptions::default()).await;
    let id = peer.share("f", &data(4));
    for range in [
        format!("bytes={SIZE}-"),
        format!("bytes={}-{}", SIZE + 10, SIZE + 20),
        "bytes=-0".into(),
    ] {
        unsatisfiable(&peer.get(&id, Some(&range)).await);
    }

    let answer = peer.get(&id, Some("bytes=0-1,5-6")).await;
    unsatisfiable(&answer);
    assert!(answer.error().error.contains("one range"));

    for range in ["bytes=abc", "bytes=5-1", "lines=0-1", "bytes=-", "0-1"] {
        let answer = peer.get(&id, Some(range)).await;
        assert_eq!(answer.status, 400, "{range}");
        assert_eq!(answer.error().field.as_deref(), Some("range"));
    }
    assert_eq!(peer.server.bytes_served(), 0);
}

#[tokio::test]
async fn only_verified_pieces_are_served() {
    let peer = start(ServeOptions::default()).await;
    let data = data(5);
    let entry = peer.add("f.part", &data);
    let id = entry.id();
    entry.mark(piece(&entry, 0));
    entry.mark(piece(&entry, 2));

    let answer = peer.get(&id, Some("bytes=0-1048575")).await;
    assert_eq!(answer.status, 206);
    assert_eq!(answer.body, data[..1 << 20]);
    let answer = peer.get(&id, Some("bytes=2097152-2097251")).await;
    assert_eq!(answer.status, 206);
    assert_eq!(answer.body, data[2_097_152..2_097_252]);

    for (range, named) in [
        ("bytes=1048000-1049000", "piece 1 "),
        ("bytes=0-", "pieces 1 and 1 more"),
        ("bytes=-10", "piece 3 "),
    ] {
        let answer = peer.get(&id, Some(range)).await;
        unsatisfiable(&answer);
        let message = answer.error().error;
        assert!(message.contains(named), "{range}: {message}");
    }

    // No range means the whole file, which this agent does not have.
    unsatisfiable(&peer.get(&id, None).await);
    assert_eq!(peer.server.bytes_served(), (1 << 20) + 100);
}

#[tokio::test]
async fn bearer_token_comes_before_everything() {
    let peer = start(ServeOptions::default()).await;
    let id = peer.share("f", &data(6));
    let unknown = ContentId::of_canonical(b"not held");
    let (right, wrong) = (bearer(SECRET), bearer(WRONG));
    let auth = |value: &'static str| [("Authorization", value)];

    let answer = fetch(peer.addr, "GET", &path::pieces(&id), &[]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
    let answer = fetch(peer.addr, "GET", &path::pieces(&id), &auth("Basic YTpi")).await;
    assert_eq!(answer.status, 401);
    let answer = fetch(peer.addr, "GET", &path::pieces(&id), &auth("Bearer ")).await;
    assert_eq!(answer.status, 401);
    let headers = [("Authorization", wrong.as_str())];
    let answer = fetch(peer.addr, "GET", &path::pieces(&id), &headers).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.header("etag"), None);
    // The scheme is case-insensitive.
    let lower = format!("bearer {SECRET}");
    let answer = fetch(
        peer.addr,
        "HEAD",
        &path::pieces(&id),
        &[("Authorization", lower.as_str())],
    )
    .await;
    assert_eq!(answer.status, 200);

    // Nothing about a content is told before the token is checked.
    for target in [path::pieces(&unknown), "/v1/pieces/nonsense".into()] {
        assert_eq!(fetch(peer.addr, "GET", &target, &[]).await.status, 401);
        let headers = [("Authorization", wrong.as_str())];
        assert_eq!(fetch(peer.addr, "GET", &target, &headers).await.status, 403);
    }

    let headers = [("Authorization", right.as_str())];
    let answer = fetch(peer.addr, "GET", &path::pieces(&unknown), &headers).await;
    assert_eq!(answer.status, 404);
    assert!(answer.error().error.contains(&unknown.to_string()));
    let target = format!("/v1/pieces/{}", "ab".repeat(31));
    let answer = fetch(peer.addr, "GET", &target, &headers).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error().field.as_deref(), Some("content_id"));

    // Upper-case hex names the same content.
    let target = format!("/v1/pieces/{}", id.to_string().to_uppercase());
    assert_eq!(fetch(peer.addr, "GET", &target, &headers).await.status, 200);
}

#[tokio::test]
async fn request_paths_never_reach_the_file_system() {
    let peer = start(ServeOptions::default()).await;
    let id = peer.share("shared.bin", &data(7));
    let secret_file = peer.dir.path().join("secret.txt");
    std::fs::write(&secret_file, "TOP-SECRET-d4c8").unwrap();
    let secret_path = secret_file.to_str().unwrap();
    let escaped: String = secret_path.bytes().map(|b| format!("%{b:02x}")).collect();

    let cases = [
        ("/v1/pieces/../../etc/passwd".to_string(), 404),
        ("/v1/pieces/..%2f..%2fetc%2fpasswd".into(), 400),
        ("/v1/pieces/%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(), 400),
        ("/v1/pieces/%2e%2e".into(), 400),
        ("/v1/pieces/..".into(), 400),
        ("/etc/passwd".into(), 404),
        ("//etc/passwd".into(), 404),
        (format!("/v1/pieces/{id}/../../secret.txt"), 404),
        (format!("/v1/pieces/{id}%2f..%2fsecret.txt"), 400),
        (format!("/v1/pieces{secret_path}"), 404),
        (format!("/v1/pieces/{escaped}"), 400),
        ("/v1/pieces/secret.txt".into(), 400),
        ("/v1/pieces/shared.bin".into(), 400),
        (format!("/v1/pieces/{id}%00"), 400),
        ("/v1/pieces/%ff%fe".into(), 400),
        (format!("/v1/pieces/{id}/"), 404),
    ];
    let auth = bearer(SECRET);
    let headers = [("Authorization", auth.as_str())];
    for (target, expected) in &cases {
        let answer = fetch(peer.addr, "GET", target, &headers).await;
        let body = String::from_utf8_lossy(&answer.body);
        assert_eq!(answer.status, *expected, "{target}: {body}");
        assert!(
            !body.contains("TOP-SECRET") && !body.contains("root:"),
            "{target}"
        );
    }
    assert_eq!(peer.server.bytes_served(), 0);

    // The same client does get the content by its id.
    let answer = fetch(peer.addr, "GET", &path::pieces(&id), &headers).await;
    assert_eq!(answer.status, 200);
    assert_eq!(peer.server.bytes_served(), SIZE as u64);
}

#[tokio::test]
async fn head_answers_headers_only() {
    let peer = start(ServeOptions::default()).await;
    let id = peer.share("f", &data(8));
    let auth = bearer(SECRET);
    let path = path::pieces(&id);
    let headers = [("Authorization", auth.as_str())];

    let mut conn = Conn::open(peer.addr).await;
    conn.send("HEAD", &path, &headers).await;
    let answer = conn.head().await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.length(), SIZE);
    assert_eq!(answer.header("etag"), Some(&*format!("\"{id}\"")));
    // No body follows: the next answer on the connection comes right after the head.
    let ranged = [("Authorization", auth.as_str()), ("Range", "bytes=10-19")];
    conn.send("HEAD", &path, &ranged).await;
    let answer = conn.head().await;
    assert_eq!(answer.status, 206);
    assert_eq!(answer.length(), 10);
    let content_range = format!("bytes 10-19/{SIZE}");
    assert_eq!(answer.header("content-range"), Some(&*content_range));

    assert_eq!(fetch(peer.addr, "HEAD", &path, &[]).await.status, 401);
    assert_eq!(fetch(peer.addr, "POST", &path, &headers).await.status, 405);
    assert_eq!(peer.server.bytes_served(), 0);
    assert_eq!(peer.server.load(), 0);
}

#[tokio::test]
async fn uploads_over_the_cap_are_refused_at_once() {
    let options = ServeOptions {
        max_connections: 1,
        ..crawling()
    };
    let peer = start(options).await;
    let data = data(9);
    let id = peer.share("f", &data);

    let (held, answer) = peer.open(&id, None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(peer.server.load(), 1);

    let refused = peer.get(&id, Some("bytes=0-9")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Answers without a body take no slot.
    let auth = bearer(SECRET);
    let head = fetch(
        peer.addr,
        "HEAD",
        &path::pieces(&id),
        &[("Authorization", auth.as_str())],
    )
    .await;
    assert_eq!(head.status, 200);

    drop(held);
    peer.idle().await;
    let answer = peer.get(&id, Some("bytes=100-199")).await;
    assert_eq!(answer.status, 206);
    assert_eq!(answer.body, data[100..200]);
    assert_eq!(peer.server.load(), 0);
}

#[tokio::test]
async fn rate_limited_uploads_count_every_byte_once() {
    let options = ServeOptions {
        upload_limit: Some(4 << 20),
        ..Default::default()
    };
    let peer = start(options).await;
    let data = data(10);
    let id = peer.share("f", &data);
    let (first, second) = tokio::join!(
        peer.get(&id, Some("bytes=0-1048575")),
        peer.get(&id, Some("bytes=1048576-2097151")),
    );
    assert_eq!(first.body, data[..1 << 20]);
    assert_eq!(second.body, data[1 << 20..2 << 20]);
    assert_eq!(peer.server.bytes_served(), 2 << 20);
    assert_eq!(peer.server.load(), 0);
}

#[tokio::test]
async fn a_part_file_renamed_mid_way_still_serves() {
    let options = ServeOptions {
        upload_limit: Some(1 << 20),
        ..Default::default()
    };
    let peer = start(options).await;
    let data = data(11);
    let entry = peer.add("f.part", &data);
    let id = entry.id();
    entry.mark(piece(&entry, 0));

    // An upload in progress keeps the file it opened.
    let (mut in_flight, mut answer) = peer.open(&id, Some("bytes=0-524287")).await;
    assert_eq!(answer.status, 206);
    let done = peer.dir.path().join("f");
    std::fs::rename(entry.path(), &done).unwrap();
    entry.set_path(done);
    for piece in entry.layout().pieces().skip(1) {
        entry.mark(piece);
    }
    in_flight.body(&mut answer).await.unwrap();
    assert_eq!(answer.body, data[..512 << 10]);

    // Later requests open the new path.
    let answer = peer.get(&id, Some("bytes=-100")).await;
    assert_eq!(answer.status, 206);
    assert_eq!(answer.body, data[SIZE - 100..]);
}

#[tokio::test]
async fn a_file_that_shrinks_ends_the_body_with_an_error() {
    let peer = start(crawling()).await;
    let id = peer.share("f", &data(12));
    let path = peer.catalog.get(&id).unwrap().path();

    let (mut conn, mut answer) = peer.open(&id, None).await;
    assert_eq!(answer.status, 200);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(0).unwrap();
    assert!(conn.body(&mut answer).await.is_err());
    assert!(peer.server.bytes_served() < SIZE as u64);
    peer.idle().await;

    // Now plainly too short: refused before any header is sent, and the path stays private.
    let answer = peer.get(&id, Some("bytes=0-9")).await;
    assert_eq!(answer.status, 500);
    let message = answer.error().error;
    assert!(!message.contains(path.to_str().unwrap()), "{message}");
}

#[tokio::test]
async fn shutdown_ends_uploads_in_progress() {
    let mut peer = start(crawling()).await;
    let id = peer.share("f", &data(13));
    let (mut conn, mut answer) = peer.open(&id, None).await;
    assert_eq!(answer.status, 200);

    peer.stop.take().unwrap().send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), &mut peer.task);
    stopped.await.expect("run returns").unwrap().unwrap();
    assert!(conn.body(&mut answer).await.is_err());
    assert_eq!(peer.server.load(), 0);
}

#[tokio::test]
async fn app_merges_with_a_router_that_has_a_fallback() {
    let server = PieceServer::new(Catalog::new(), ServeOptions::default());
    let local = axum::Router::new()
        .route("/v1/local/status", axum::routing::get(|| async { "ok" }))
        .fallback(|| async { (http::StatusCode::NOT_FOUND, "no such route") });
    let router = serve::app(server).merge(local);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });

    assert_eq!(
        fetch(addr, "GET", "/v1/local/status", &[]).await.body,
        b"ok"
    );
    assert_eq!(
        fetch(addr, "GET", "/elsewhere", &[]).await.body,
        b"no such route"
    );
    let piece = path::pieces(&ContentId::of_canonical(b"x"));
    assert_eq!(fetch(addr, "GET", &piece, &[]).await.status, 401);
}

#[test]
fn options_never_print_secrets() {
    let options = ServeOptions {
        tokens: vec!["supersecret-0123456789".into()],
        ..Default::default()
    };
    let printed = format!("{options:?}");
    assert!(!printed.contains("supersecret"), "{printed}");
    assert!(printed.contains("max_connections: 64"), "{printed}");
}

#[tokio::test]
async fn have_answers_at_once_or_when_more_pieces_are_verified() {
    let peer = start(ServeOptions::default()).await;
    let entry = peer.add("g.part", &data(9));
    let id = entry.id();
    entry.mark(piece(&entry, 1));
    let auth = bearer(SECRET);
    let path = path::have(&id);
    let answer = fetch(peer.addr, "GET", &path, &[("Authorization", &auth)]).await;
    assert_eq!(answer.status, 200);
    let have: PeerHave = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(have.count, 1);
    assert_eq!(have.pieces.unwrap().as_bytes(), &[0x40]);

    // Asked for news after one piece, it answers once a second piece is verified.
    let (addr, target, token) = (peer.addr, format!("{path}?after=1"), auth.clone());
    let waiting =
        tokio::spawn(
            async move { fetch(addr, "GET", &target, &[("Authorization", &token)]).await },
        );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let more = [0, 2, 3].map(|i| piece(&entry, i));
    peer.catalog.mark(&id, &more);
    let answer = waiting.await.unwrap();
    let have: PeerHave = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        (have.count, have.pieces),
        (4, None),
        "complete: no bitfield"
    );

    assert_eq!(fetch(peer.addr, "GET", &path, &[]).await.status, 401);
    let bad = fetch(
        peer.addr,
        "GET",
        &format!("{path}?after=x"),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(bad.status, 400);
    let unknown = path::have(&ContentId::from_bytes([1; 32]));
    assert_eq!(
        fetch(peer.addr, "GET", &unknown, &[("Authorization", &auth)])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn the_exchange_routes_tell_the_swarm_and_the_learned_digests() {
    let peer = start(ServeOptions::default()).await;
    let id = ContentId::from_bytes([5; 32]);
    let layout = shoal_core::Layout::new(SIZE as u64, PIECE).unwrap();
    let entry = Arc::new(Entry::provisional(
        id,
        layout,
        "s".into(),
        peer.dir.path().join("s"),
    ));
    peer.catalog.insert(entry.clone());
    let other = KnownPeer {
        id: AgentId::new("other").unwrap(),
        addr: "127.0.0.1:7701".parse().unwrap(),
        scheme: Scheme::Https,
    };
    entry.meet([other.clone()]);
    entry.learn(1, [7; 32]);
    let auth = bearer(SECRET);

    let answer = fetch(
        peer.addr,
        "GET",
        &path::peers(&id),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(answer.status, 200);
    let list: PeerList = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(list.peers, vec![other]);

    let answer = fetch(
        peer.addr,
        "GET",
        &path::digests(&id),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(answer.status, 200);
    let digests: SwarmDigests = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(
        digests.to_digests(layout.piece_count()).unwrap(),
        vec![None, Some([7; 32]), None, None]
    );

    // A whole content answers its manifest's digests.
    let whole = peer.share("w", &data(3));
    let answer = fetch(
        peer.addr,
        "GET",
        &path::digests(&whole),
        &[("Authorization", &auth)],
    )
    .await;
    let digests: SwarmDigests = serde_json::from_slice(&answer.body).unwrap();
    let manifest = Manifest::of_bytes(&data(3), PIECE).unwrap();
    let expected: Vec<_> = manifest.digests().iter().copied().map(Some).collect();
    assert_eq!(digests.to_digests(layout.piece_count()).unwrap(), expected);

    for target in [path::peers(&id), path::digests(&id)] {
        assert_eq!(fetch(peer.addr, "GET", &target, &[]).await.status, 401);
    }
    let unknown = ContentId::from_bytes([1; 32]);
    let answer = fetch(
        peer.addr,
        "GET",
        &path::peers(&unknown),
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn the_exchange_routes_are_rate_limited() {
    let peer = start(ServeOptions::default()).await;
    let id = peer.share("r", &data(4));
    // Four seconds' worth at once: the bucket holds one.
    let asks: Vec<_> = (0..4 * EXCHANGE_RATE)
        .map(|_| {
            let (addr, target, auth) = (peer.addr, path::peers(&id), bearer(SECRET));
            tokio::spawn(
                async move { fetch(addr, "GET", &target, &[("Authorization", &auth)]).await },
            )
        })
        .collect();
    let mut refused = 0;
    for ask in asks {
        let answer = ask.await.unwrap();
        match answer.status {
            200 => {}
            429 => {
                assert_eq!(answer.header("retry-after"), Some("1"));
                refused += 1;
            }
            other => panic!("answered {other}"),
        }
    }
    assert!(refused > 0, "no request was refused");
}
