//! The URL map in Redis: URL versions mapped to contents (`urls`, the first mapping of a version
//! winning across replicas) and each URL's most recently published version (`urls:latest`).

use std::sync::Arc;

use redis::AsyncCommands;
use shoal_core::clock::unix_now;
use shoal_core::wire::{UrlKey, UrlMapping};
use shoal_core::ContentId;

use super::codec::{damaged, url_field, MANIFESTS, URLS, URLS_LATEST};
use super::RedisStore;
use crate::store::StoreError;

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
}
