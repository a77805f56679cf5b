//! What a queued download is ([`Status`]) and what the RPC's WebSocket clients are told when
//! that changes ([`Notice`]), with aria2's names.

use serde::{Deserialize, Serialize};

use super::Gid;

/// A download's state, with aria2's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Running now.
    Active,
    /// Queued, to start when a slot is free.
    Waiting,
    /// Held until unpaused.
    Paused,
    /// Stopped by a failure.
    Error,
    /// Saved whole.
    Complete,
    /// Removed by a client.
    Removed,
}

impl Status {
    /// aria2's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Waiting => "waiting",
            Status::Paused => "paused",
            Status::Error => "error",
            Status::Complete => "complete",
            Status::Removed => "removed",
        }
    }

    pub(super) fn stopped(self) -> bool {
        matches!(self, Status::Error | Status::Complete | Status::Removed)
    }
}

/// A change of state, sent to the RPC's WebSocket clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The download.
    pub gid: Gid,
    /// What happened.
    pub kind: NoticeKind,
}

/// What happened to a download, as aria2's notifications name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// It started running.
    Start,
    /// It was paused.
    Pause,
    /// It was removed.
    Stop,
    /// It finished whole.
    Complete,
    /// It failed.
    Error,
}

impl Notice {
    /// The notification's method, e.g. `aria2.onDownloadStart`.
    pub fn method(&self) -> &'static str {
        match self.kind {
            NoticeKind::Start => "aria2.onDownloadStart",
            NoticeKind::Pause => "aria2.onDownloadPause",
            NoticeKind::Stop => "aria2.onDownloadStop",
            NoticeKind::Complete => "aria2.onDownloadComplete",
            NoticeKind::Error => "aria2.onDownloadError",
        }
    }
}
