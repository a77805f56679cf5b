//! The shoal download engine. It probes a URL, splits the file into segments, keeps every
//! connection busy with work stealing, writes with positional writes into `NAME.part`,
//! verifies, and renames into place. It reports progress as [`Event`]s and draws nothing.
//!
//! Every place bytes can come from is a source answering "bytes A..B"; multi-connection,
//! mirrors and peers are the same scheduler loop with different sources.

pub mod ca;
mod checkpoint;
mod digest;
mod download;
pub mod error;
pub mod events;
mod http;
pub mod metalink;
pub mod naming;
pub mod options;
mod pieces;
mod plan;
mod ratelimit;
pub mod resume;
mod retry;
mod sample;
pub mod segments;
mod source;
pub mod storage;
pub mod stream;
mod swarm;
mod tally;
mod transfer;
pub mod urllist;
mod verify;

pub use error::{DownloadError, ErrorKind, Missing};
pub use events::{Event, EventSender, Progress, SourceUsage, Summary};
pub use options::{
    parse_bytes, Connections, Digests, DownloadOptions, Endgame, Existing, HttpOptions, MinSplit,
    OptionError, OriginUse, Output, PeerSource, PublishedDigests, Rate, Resume, SwarmOptions,
    BLOCK,
};
pub use stream::Window;
pub use tokio_util::sync::CancellationToken;
pub use url::Url;

pub use http::{FetchError, UrlVersion};
pub use ratelimit::SharedRate;
pub use tally::Tally;

/// Learns the size and validators of what `url` serves now with a one-byte range request, so
/// a caller can name that version (to find it in a swarm) before downloading it.
pub async fn url_version(url: &Url, http: &HttpOptions) -> Result<UrlVersion, DownloadError> {
    let client = http::client(http).map_err(|e| DownloadError::fetch(url, e, 1))?;
    http::version(&client, url)
        .await
        .map_err(|e| DownloadError::fetch(url, e, 1))
}

/// Fetches exactly `range` of the version `version` of `url` names (sent as `If-Range`, so
/// another version is an error, not other bytes) into memory, reading no more than `range`
/// holds: a sample of the origin to check another source's copy against, so `range` is a
/// piece, not a file.
pub async fn fetch_sample(
    url: &Url,
    version: &UrlVersion,
    range: shoal_core::ByteRange,
    http: &HttpOptions,
) -> Result<Vec<u8>, DownloadError> {
    let fail = |e| DownloadError::fetch(url, e, 1);
    let client = http::client(http).map_err(fail)?;
    let source = http::RangeSource {
        client: client.owned_by(url),
        url: url.clone().into(),
        size: version.size,
        validator: version.validator.clone(),
    };
    let mut response = source.fetch(range).await.map_err(fail)?;
    let mut bytes = Vec::with_capacity(range.len() as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| fail(http::transport_error(e)))?
    {
        if (bytes.len() + chunk.len()) as u64 > range.len() {
            return Err(fail(FetchError::Protocol(format!(
                "sent more than the {} bytes of {}",
                range.len(),
                range.http_header()
            ))));
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.len() as u64 != range.len() {
        return Err(fail(FetchError::CutShort(format!(
            "{} of the {} bytes of {} arrived",
            bytes.len(),
            range.len(),
            range.http_header()
        ))));
    }
    Ok(bytes)
}

/// Downloads one file as `options` say, sending progress to `events` until it is complete and
/// in place, fails, or `cancel` fires.
pub async fn download(
    options: DownloadOptions,
    events: EventSender,
    cancel: CancellationToken,
) -> Result<Summary, DownloadError> {
    download::run(options, events, cancel).await
}
