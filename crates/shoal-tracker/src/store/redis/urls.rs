//! The URL map in Redis: URL versions mapped to contents (`urls`, the first mapping of a version
//! winning across replicas) and each URL's most recently published version (`urls:latest`).
//! Reports that a mapping is wrong are `urlreports:{BLAKE3 of the version's field}:{content}`
//! sorted sets of reporting agents scored by when their report stops counting; the key expires
//! with its latest report.

use std::sync::Arc;

use redis::AsyncCommands;
use shoal_core::clock::unix_now;
use shoal_core::wire::{UrlKey, UrlMapping};
use shoal_core::ContentId;

use super::codec::{damaged, url_field, MANIFESTS, URLS, URLS_LATEST};
use super::RedisStore;
use crate::store::{Reporter, StoreError, UrlReport, REPORTS_TO_HIDE, REPORT_HOLD};

/// KEYS: `urls`, `urls:latest`, the reports. ARGV: the version's field, the mapping's JSON as
/// stored, the URL. Deletes the mapping, and the URL's latest version if it is that mapping,
/// only if the mapping is still the one reported (a publish after a withdrawal stays).
const WITHDRAW: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[2], ARGV[3]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[3]) end
redis.call('DEL', KEYS[3])
return 1
";

impl RedisStore {
    pub(super) async fn publish_url_in_redis(
        &self,
        key: UrlKey,
        content: ContentId,
        publisher: Arc<str>,
    ) -> Result<(UrlMapping, bool), StoreError> {
        let mut conn = self.conn.clone();
        let published: bool = conn
            .hexists(MANIFESTS, &content.as_bytes()[..])
            .await
            .map_err(|e| self.error(e))?;
        if !published {
            return Err(StoreError::NoManifest(content));
        }
        let field = url_field(&key);
        let mapping = UrlMapping {
            key,
            content,
            publisher: publisher.to_string(),
            published_at: unix_now(),
        };
        let json = serde_json::to_string(&mapping).map_err(|e| damaged(e.to_string()))?;
        let mut pipe = redis::pipe();
        pipe.hset_nx(URLS, &field, &json).hget(URLS, &field);
        let (created, stored): (bool, String) = self.query(&pipe).await?;
        let stored: UrlMapping =
            serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))?;
        if created {
            let mut latest = redis::pipe();
            latest.hset(URLS_LATEST, &stored.key.url, &json).ignore();
            self.query::<()>(&latest).await?;
        }
        Ok((stored, created))
    }

    pub(super) async fn lookup_url_in_redis(&self, key: UrlKey) -> Result<UrlMapping, StoreError> {
        let mut conn = self.conn.clone();
        let stored: Option<String> = conn
            .hget(URLS, url_field(&key))
            .await
            .map_err(|e| self.error(e))?;
        let stored = stored.ok_or(StoreError::UnknownUrl)?;
        serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))
    }

    pub(super) async fn latest_url_in_redis(&self, url: String) -> Result<UrlMapping, StoreError> {
        let mut conn = self.conn.clone();
        let stored: Option<String> = conn
            .hget(URLS_LATEST, &url)
            .await
            .map_err(|e| self.error(e))?;
        let stored = stored.ok_or(StoreError::UnknownUrl)?;
        serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))
    }

    pub(super) async fn report_url_in_redis(&self, report: UrlReport) -> Result<bool, StoreError> {
        let now = self.now();
        let field = url_field(&report.key);
        let mut conn = self.conn.clone();
        let stored: Option<String> = conn.hget(URLS, &field).await.map_err(|e| self.error(e))?;
        let Some(stored) = stored else {
            return Ok(false);
        };
        let mapping: UrlMapping =
            serde_json::from_str(&stored).map_err(|e| damaged(e.to_string()))?;
        if mapping.content != report.content {
            return Ok(false);
        }
        let reports = format!(
            "shoal:urlreports:{}:{}",
            blake3::hash(field.as_bytes()).to_hex(),
            report.content
        );
        if let Reporter::Agent(reporter) = &report.by {
            let hold_ms = REPORT_HOLD.as_millis() as u64;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .zrembyscore(&reports, "-inf", now)
                .ignore()
                .zadd(&reports, reporter.as_str(), now + hold_ms)
                .ignore()
                .pexpire(&reports, hold_ms as i64)
                .ignore()
                .zcount(&reports, format!("({now}"), "+inf");
            let (count,): (usize,) = self.query(&pipe).await?;
            if count < REPORTS_TO_HIDE {
                return Ok(false);
            }
        }
        let withdrawn: bool = redis::Script::new(WITHDRAW)
            .key(URLS)
            .key(URLS_LATEST)
            .key(&reports)
            .arg(&field)
            .arg(&stored)
            .arg(&mapping.key.url)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(e))?;
        Ok(withdrawn)
    }
}
