//! A deliberately raw HTTP/1.1 client for testing the origin: it reports exactly what came over
//! the wire (partial bodies, resets, silence), which a real client would paper over.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use shoal_testkit::Origin;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// `Ok` when the body arrived whole, else how the connection failed first.
    pub end: Result<(), io::ErrorKind>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub(crate) struct Client {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    /// Longest wait for any single read.
    pub read_timeout: Duration,
}

impl Client {
    /// Connects to the origin, over TLS trusting its certificate when it serves https.
    pub(crate) async fn connect(origin: &Origin) -> Client {
        Client::open(origin.addr(), origin.ca_cert_pem()).await
    }

    /// Connects to `addr`, over TLS trusting `ca_pem` when given.
    pub(crate) async fn open(addr: SocketAddr, ca_pem: Option<String>) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let stream: Box<dyn Io> = match ca_pem {
            None => Box::new(tcp),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
                    .unwrap();
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = ServerName::try_from("127.0.0.1").unwrap();
                Box::new(connector.connect(name, tcp).await.unwrap())
            }
        };
        Client {
            stream,
            buf: Vec::new(),
            read_timeout: Duration::from_secs(10),
        }
    }

    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        self.stream.write_all(head.as_bytes()).await.unwrap();
        self.stream.flush().await.unwrap();
        self.read_reply(method == "HEAD").await
    }

    async fn read_reply(&mut self, head_only: bool) -> Reply {
        let (status, headers, len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf).unwrap() {
                let mut headers = HeaderMap::new();
                for h in parsed.headers.iter() {
                    headers.append(
                        http::HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                        http::HeaderValue::from_bytes(h.value).unwrap(),
                    );
                }
                break (parsed.code.unwrap(), headers, len);
            }
            self.fill().await.expect("response head");
        };
        self.buf.drain(..len);
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
            end: Ok(()),
        };
        if head_only {
            return reply;
        }
        let chunked = reply.header("transfer-encoding") == Some("chunked");
        let length = reply
            .header("content-length")
            .map(|v| v.parse::<usize>().unwrap());
        reply.end = match (chunked, length) {
            (true, _) => self.read_chunked(&mut reply.body).await,
            (false, Some(len)) => self.read_exact(len, &mut reply.body).await,
            (false, None) => loop {
                reply.body.append(&mut self.buf);
                match self.fill().await {
                    Ok(()) => {}
                    Err(io::ErrorKind::UnexpectedEof) => break Ok(()),
                    Err(e) => break Err(e),
                }
            },
        };
        reply
    }

    async fn read_exact(&mut self, len: usize, out: &mut Vec<u8>) -> Result<(), io::ErrorKind> {
        let mut want = len;
        loop {
            let take = want.min(self.buf.len());
            out.extend(self.buf.drain(..take));
            want -= take;
            if want == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    async fn read_chunked(&mut self, out: &mut Vec<u8>) -> Result<(), io::ErrorKind> {
        loop {
            let line = self.read_line().await?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            if size == 0 {
                assert_eq!(self.read_line().await?, "");
                return Ok(());
            }
            self.read_exact(size, out).await?;
            assert_eq!(self.read_line().await?, "");
        }
    }

    async fn read_line(&mut self) -> Result<String, io::ErrorKind> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf[..i].to_vec()).unwrap();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    /// Reads until the server closes the connection: how it ended (`TimedOut` if it did not).
    pub(crate) async fn wait_closed(&mut self) -> io::ErrorKind {
        // Bounded by the read timeout: the origin sends nothing more on a stalled connection.
        loop {
            if let Err(end) = self.fill().await {
                return end;
            }
        }
    }

    /// Reads more bytes into the buffer; EOF is `UnexpectedEof`, silence is `TimedOut`.
    async fn fill(&mut self) -> Result<(), io::ErrorKind> {
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout(self.read_timeout, self.stream.read(&mut chunk)).await {
            Err(_) => Err(io::ErrorKind::TimedOut),
            Ok(Err(e)) => Err(e.kind()),
            Ok(Ok(0)) => Err(io::ErrorKind::UnexpectedEof),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
        }
    }
}

/// One request on a fresh connection.
pub(crate) async fn get(origin: &Origin, path: &str, headers: &[(&str, &str)]) -> Reply {
    Client::connect(origin)
        .await
        .request("GET", path, headers)
        .await
}
