//! Just enough HTTP/1.1 for the origin: reading requests off a keep-alive connection, writing
//! responses byte by byte under our control (pacing, cuts, stalls), and the small formats
//! (ranges, dates, basic auth) the origin needs.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A request head larger than this closes the connection.
const MAX_HEAD: usize = 64 * 1024;
/// Write size for unthrottled bodies: big enough that a 64 MiB file is a few hundred writes.
const WRITE_CHUNK: usize = 256 * 1024;
/// Ahead-of-schedule credit a paced body may use after the client stopped reading for a while.
const PACING_BURST: Duration = Duration::from_millis(50);
/// How long an abortive close waits for written bytes to reach the client before the RST.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// A connection the origin serves: plain TCP or TLS over TCP.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {
    /// The TCP socket underneath, for socket options.
    fn tcp(&self) -> &TcpStream;
}

pub(crate) struct Request {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    /// The client asked to close (or cannot keep the connection alive).
    pub close: bool,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    pub delay: Duration,
}

impl Response {
    /// A status with a one-line text body, for everything that is not the file.
    pub(crate) fn short(status: u16) -> Response {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        Response {
            status,
            headers: vec![("Content-Type", "text/plain".to_owned())],
            body: Body::Fixed(Bytes::from(format!("{status} {reason}\n"))),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn header(&mut self, name: &'static str, value: String) {
        self.headers.push((name, value));
    }
}

pub(crate) enum Body {
    Fixed(Bytes),
    /// (A range of) the file; `rate` paces it in bytes per second.
    File {
        data: Bytes,
        chunked: bool,
        fault: Option<Fault>,
        rate: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// Abortive close after this many body bytes.
    Reset(u64),
    /// Silence after this many body bytes, socket kept open.
    Stall(u64),
}

/// Where file body bytes are counted.
pub(crate) struct Counters<'a> {
    pub request: &'a AtomicU64,
    pub total: &'a AtomicU64,
}

/// Reads the next request head (and discards any request body). `Ok(None)` at end of stream.
pub(crate) async fn read_request<C: Conn>(
    conn: &mut C,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Request>> {
    // Bounded: every iteration reads at least one byte and the head is capped at MAX_HEAD.
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 96];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let request = to_request(&parsed);
                    let body_len = request
                        .header("content-length")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    buf.drain(..len);
                    discard_body(conn, buf, body_len).await?;
                    return Ok(Some(request));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too large",
            ));
        }
        buf.reserve(8192);
        if conn.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Request {
    let mut headers = HeaderMap::new();
    for h in parsed.headers.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(name, value);
        }
    }
    let connection = headers
        .get("connection")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // HTTP/1.0 keep-alive is not worth supporting; a chunked request body has no known end here.
    let close = connection.contains("close")
        || parsed.version != Some(1)
        || headers.contains_key("transfer-encoding");
    Request {
        method: parsed.method.unwrap_or("").to_owned(),
        target: parsed.path.unwrap_or("/").to_owned(),
        headers,
        close,
    }
}

async fn discard_body<C: Conn>(conn: &mut C, buf: &mut Vec<u8>, len: u64) -> io::Result<()> {
    let buffered = (buf.len() as u64).min(len);
    buf.drain(..buffered as usize);
    let mut rest = len - buffered;
    let mut scratch = vec![0u8; 16 * 1024];
    // Bounded by `len`: every read consumes at least one byte or ends the connection.
    while rest > 0 {
        let want = scratch.len().min(rest as usize);
        let n = conn.read(&mut scratch[..want]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        rest -= n as u64;
    }
    Ok(())
}

/// Writes `response`; `Ok(true)` when the connection can serve another request.
pub(crate) async fn write_response<C: Conn>(
    conn: &mut C,
    request: &Request,
    response: Response,
    counters: Counters<'_>,
) -> io::Result<bool> {
    if !response.delay.is_zero() {
        tokio::time::sleep(response.delay).await;
    }
    let reason = http::StatusCode::from_u16(response.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", response.status);
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match &response.body {
        Body::Fixed(data)
        | Body::File {
            data,
            chunked: false,
            ..
        } => {
            head.push_str(&format!("Content-Length: {}\r\n", data.len()));
        }
        Body::File { chunked: true, .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    if request.close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes()).await?;
    if request.method == "HEAD" {
        conn.flush().await?;
        return Ok(!request.close);
    }
    match response.body {
        Body::Fixed(data) => conn.write_all(&data).await?,
        Body::File {
            data,
            chunked,
            fault,
            rate,
        } => {
            if !send_file(conn, &data, chunked, fault, rate, &counters).await? {
                return Ok(false);
            }
        }
    }
    conn.flush().await?;
    Ok(!request.close)
}

/// Sends a file body, applying its fault; `Ok(false)` when the connection must end.
async fn send_file<C: Conn>(
    conn: &mut C,
    data: &Bytes,
    chunked: bool,
    fault: Option<Fault>,
    rate: Option<u64>,
    counters: &Counters<'_>,
) -> io::Result<bool> {
    let limit = match fault {
        Some(Fault::Reset(n) | Fault::Stall(n)) => (n as usize).min(data.len()),
        None => data.len(),
    };
    let mut pacer = rate.map(Pacer::new);
    let chunk = pacer.as_ref().map_or(WRITE_CHUNK, |p| p.chunk());
    let mut offset = 0;
    while offset < limit {
        let end = (offset + chunk).min(limit);
        if let Some(pacer) = &mut pacer {
            pacer.wait(end - offset).await;
        }
        if chunked {
            conn.write_all(format!("{:x}\r\n", end - offset).as_bytes())
                .await?;
            conn.write_all(&data[offset..end]).await?;
            conn.write_all(b"\r\n").await?;
        } else {
            conn.write_all(&data[offset..end]).await?;
        }
        // TLS buffers records; paced and cut bodies must really be on the wire now.
        conn.flush().await?;
        let n = (end - offset) as u64;
        counters.request.fetch_add(n, Ordering::Relaxed);
        counters.total.fetch_add(n, Ordering::Relaxed);
        offset = end;
    }
    match fault {
        Some(Fault::Reset(_)) => {
            wait_until_acked(conn.tcp()).await;
            // SO_LINGER 0: closing sends RST instead of FIN. The caller drops the connection.
            conn.tcp().set_zero_linger()?;
            Ok(false)
        }
        Some(Fault::Stall(_)) => {
            let mut scratch = [0u8; 4096];
            // Ends when the client closes or errors, or when the origin's runtime stops.
            while conn.read(&mut scratch).await.is_ok_and(|n| n > 0) {}
            Ok(false)
        }
        None => {
            if chunked {
                conn.write_all(b"0\r\n\r\n").await?;
            }
            Ok(true)
        }
    }
}

/// Waits (bounded) until the peer acknowledged everything written: an RST discards unsent
/// data, which would make a reset body shorter than promised.
async fn wait_until_acked(tcp: &TcpStream) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    while unacked_bytes(tcp) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn unacked_bytes(tcp: &TcpStream) -> libc::c_int {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on a TCP socket) writes one c_int through the pointer, which
    // points to a live local; the descriptor is open for as long as `tcp` is borrowed.
    let rc = unsafe { libc::ioctl(tcp.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc < 0 {
        0
    } else {
        n
    }
}

/// Paces one body at `rate` bytes per second on an absolute schedule, so timer slop does not
/// accumulate into a lower rate.
struct Pacer {
    rate: u64,
    next: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        Pacer {
            rate: rate.max(1),
            next: Instant::now(),
        }
    }

    /// About 64 writes per second, so the rate is smooth even over a fraction of a second.
    fn chunk(&self) -> usize {
        (self.rate / 64).clamp(256, 64 * 1024) as usize
    }

    async fn wait(&mut self, len: usize) {
        let now = Instant::now();
        if let Some(earliest) = now.checked_sub(PACING_BURST) {
            self.next = self.next.max(earliest);
        }
        tokio::time::sleep_until(self.next).await;
        let nanos = len as u128 * 1_000_000_000 / u128::from(self.rate);
        self.next += Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    }
}

/// A single byte range as asked for in a `Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeSpec {
    /// `bytes=a-b` (inclusive) or `bytes=a-`.
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// The inclusive byte span served for a file of `size` bytes; `None` when unsatisfiable.
    pub(crate) fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let last = size.checked_sub(1)?;
        match self {
            RangeSpec::From(start, end) if start <= last => {
                Some((start, end.map_or(last, |e| e.min(last))))
            }
            RangeSpec::From(..) => None,
            RangeSpec::Suffix(0) => None,
            RangeSpec::Suffix(n) => Some((size.saturating_sub(n), last)),
        }
    }
}

/// Parses a single-range `Range` header; multiple or malformed ranges give `None` (served as
/// if there were no `Range`, which RFC 9110 allows).
pub(crate) fn parse_range(value: &str) -> Option<RangeSpec> {
    let value = value.trim();
    let (unit, spec) = value.split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if start.is_empty() {
        return number(end).map(RangeSpec::Suffix);
    }
    let start = number(start)?;
    if end.is_empty() {
        return Some(RangeSpec::From(start, None));
    }
    let end = number(end)?;
    (end >= start).then_some(RangeSpec::From(start, Some(end)))
}

/// The `hop=N` query parameter of a request target (0 when absent).
pub(crate) fn query_hop(target: &str) -> u32 {
    target
        .split_once('?')
        .map(|(_, query)| query)
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("hop=")?.parse().ok())
        .unwrap_or(0)
}

/// `target` with its `hop` query parameter set to `hop`, other parameters kept.
pub(crate) fn with_hop(target: &str, hop: u32) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !pair.starts_with("hop="))
        .map(str::to_owned)
        .collect();
    pairs.push(format!("hop={hop}"));
    format!("{path}?{}", pairs.join("&"))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for seconds since the Unix epoch.
pub(crate) fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), for dates after 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Standard base64 with padding, for `Authorization: Basic`.
pub(crate) fn base64(input: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.as_bytes().chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_735_689_599), "Tue, 31 Dec 2024 23:59:59 GMT");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(
            base64("Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(base64("ab"), "YWI=");
        assert_eq!(base64("abc"), "YWJj");
        assert_eq!(base64(""), "");
    }

    #[test]
    fn ranges_parse_and_resolve() {
        assert_eq!(
            parse_range("bytes=0-99"),
            Some(RangeSpec::From(0, Some(99)))
        );
        assert_eq!(parse_range("bytes=5-"), Some(RangeSpec::From(5, None)));
        assert_eq!(
            parse_range("Bytes = 7 - 9"),
            Some(RangeSpec::From(7, Some(9)))
        );
        assert_eq!(parse_range("bytes=-10"), Some(RangeSpec::Suffix(10)));
        assert_eq!(parse_range("bytes=9-3"), None);
        assert_eq!(parse_range("bytes=0-1,5-6"), None);
        assert_eq!(parse_range("items=0-1"), None);
        assert_eq!(parse_range("bytes=+1-2"), None);
        assert_eq!(RangeSpec::From(0, Some(99)).resolve(50), Some((0, 49)));
        assert_eq!(RangeSpec::From(50, None).resolve(50), None);
        assert_eq!(RangeSpec::From(0, None).resolve(0), None);
        assert_eq!(RangeSpec::Suffix(10).resolve(4), Some((0, 3)));
        assert_eq!(RangeSpec::Suffix(0).resolve(4), None);
    }

    #[test]
    fn hops_are_read_and_replaced() {
        assert_eq!(query_hop("/f.bin"), 0);
        assert_eq!(query_hop("/f.bin?a=1&hop=2"), 2);
        assert_eq!(with_hop("/f.bin", 1), "/f.bin?hop=1");
        assert_eq!(with_hop("/f.bin?a=1&hop=1", 2), "/f.bin?a=1&hop=2");
    }
}
