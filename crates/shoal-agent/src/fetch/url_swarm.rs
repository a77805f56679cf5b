//! A URL fetched in the part this agent plays (see `role`): leading its swarm, following it,
//! fetching alone, or, when the origin is down, fetching the version the swarm holds. Each
//! ends in [`Job::finish`], which turns the bytes into a content and publishes it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_core::manifest::PieceDigest;
use shoal_core::wire::{AnnounceRequest, CreateSwarmRequest, PublishUrlRequest, SwarmInfo, UrlKey};
use shoal_core::{ContentId, Layout, Manifest};
use shoal_engine::{DownloadError, OriginUse, Summary};
use tracing::{debug, info, warn};
use url::Url;

use super::digests::{Following, LeaderAsk};
use super::downloads::Part;
use super::role::{self, AfterLookup, Alone, Role};
use super::swarm::SwarmRun;
use super::{part_path, AgentFetchError, Fetched, Job, OriginUrl};
use crate::catalog::{Entry, Provenance};
use crate::exchange::Exchange;
use crate::objects::{ObjectsError, Pin};
use crate::piece_size;

impl Job<'_> {
    /// Fetches a URL in the part the origin's and the tracker's answers give this agent.
    pub(super) async fn url(&self, url: Url) -> Result<Fetched, AgentFetchError> {
        let version = match shoal_engine::url_version(&url, &self.http).await {
            Ok(version) => version,
            Err(e) => return self.origin_down(url, e).await,
        };
        let key = self.key(&version);
        if let Some(held) = self.held_from(&key).await {
            return Ok(held);
        }
        let origin = OriginUrl { url, version };
        match self.role(&key).await? {
            Role::Mapped(content) => self.mapped(content, origin).await,
            Role::Lead(swarm) | Role::Follow(swarm) => match self.member(&origin, &swarm).await {
                Ok(fetched) => Ok(fetched),
                Err(error) => {
                    let e = role::fall_back_after_follow(error)?;
                    warn!(
                        swarm = %swarm.id,
                        "the swarm for {} did not finish ({e}); fetching from the origin",
                        swarm.key.url
                    );
                    let wait = role::fallback_wait(&e, self.f.options.max_wait);
                    match self.alone(origin, wait).await {
                        Err(fallback) if role::swarm_error_stands(&e) => {
                            warn!(
                                "fetching {} from the origin alone failed too: {fallback}",
                                swarm.key.url
                            );
                            Err(e.into())
                        }
                        fetched => fetched,
                    }
                }
            },
            Role::Alone(why) => {
                if let Alone::TrackerDown(e) = why {
                    warn!("{e}; fetching {} from the origin alone", key.url);
                }
                self.alone(origin, Some(self.f.options.max_wait)).await
            }
        }
    }

    /// This agent's own copy of URL version `key`, when it fetched that version before and
    /// still holds it whole: served as it is, whether the tracker answers or not (its mapping
    /// lives on the tracker). Only a version named by a digest or a validator (`ETag`,
    /// `Last-Modified`): a URL and a size alone do not say the bytes are still the same.
    async fn held_from(&self, key: &UrlKey) -> Option<Fetched> {
        let named = self.sha256.is_some() || key.etag.is_some() || key.last_modified.is_some();
        if !named {
            return None;
        }
        let content = self.f.objects.fetched_from(key)?;
        let held = self.held(&content).await?;
        debug!(%content, url = %key.url, "held already: served from this agent's copy");
        Some(held)
    }

    /// Asks the tracker what part this agent plays for the URL version `key`.
    async fn role(&self, key: &UrlKey) -> Result<Role, AgentFetchError> {
        let Some(tracker) = &self.f.tracker else {
            return Ok(Role::Alone(Alone::NoTracker));
        };
        let lookup = tracker.lookup_url(key).await;
        if let Some(mapping) = lookup.as_ref().ok().filter(|m| !role::fits(key, m)) {
            warn!(
                content = %mapping.content,
                publisher = %mapping.publisher,
                "the tracker maps {} to a version other than the origin serves now \
                 (size {}, ETag {:?}, Last-Modified {:?}); ignoring the mapping",
                key.url, mapping.key.size, mapping.key.etag, mapping.key.last_modified
            );
        }
        Ok(match role::after_lookup(lookup, key)? {
            AfterLookup::Mapped(content) => Role::Mapped(content),
            AfterLookup::Alone(why) => Role::Alone(why),
            AfterLookup::CreateSwarm => {
                let size = key.size;
                let request = CreateSwarmRequest {
                    key: key.clone(),
                    layout: Layout::new(size, piece_size::for_size(size))?,
                    agent: self.f.id.clone(),
                };
                role::after_create(tracker.create_swarm(&request).await, &self.f.id)?
            }
        })
    }

    /// The origin did not say which version it serves: when it cannot be reached at all, the
    /// newest version the tracker knows for the URL is fetched from the swarm alone.
    async fn origin_down(
        &self,
        url: Url,
        error: DownloadError,
    ) -> Result<Fetched, AgentFetchError> {
        let (true, Some(tracker)) = (role::origin_is_down(&error), &self.f.tracker) else {
            return Err(error.into());
        };
        let bare = shoal_core::redact::without_credentials(&url);
        let mapping = match tracker.latest_url(bare.as_str()).await {
            Ok(mapping) => mapping,
            Err(e) => {
                debug!("no version of {bare} at the tracker either: {e}");
                return Err(error.into());
            }
        };
        warn!(
            "{error}; fetching the version of {} the swarm holds ({} bytes, published at unix time {}) from peers alone",
            mapping.key.url, mapping.key.size, mapping.published_at
        );
        self.content(mapping.content, None).await
    }

    /// Fetches from the origin without a swarm, hashing pieces as they complete (see
    /// [`Alone`], and a member whose swarm failed), waiting through the origin's outages up
    /// to `max_wait`. The manifest is published if a tracker answers.
    pub(super) async fn alone(
        &self,
        origin: OriginUrl,
        max_wait: Option<Duration>,
    ) -> Result<Fetched, AgentFetchError> {
        let size = origin.version.size;
        let layout = Layout::new(size, piece_size::for_size(size))?;
        let tmp = self.f.objects.dir().join(format!(
            "url-{}",
            &blake3::hash(origin.url.as_str().as_bytes()).to_hex()[..32]
        ));
        let (summary, digests) = self.fetch_origin(&origin, &tmp, layout, max_wait).await?;
        self.finish(origin, tmp, layout, digests, summary, None)
            .await
    }

    /// Puts a URL swarm's content in the catalog, to be served piece by piece under the
    /// swarm's id while it downloads; returns where it lands and a pin for it.
    fn join(&self, origin: &OriginUrl, swarm: &SwarmInfo, part: Part) -> (PathBuf, Pin) {
        let path = self.f.objects.path(&swarm.id);
        let name = shoal_engine::naming::file_name(None, &origin.url);
        self.start_entry(
            Entry::provisional(swarm.id, swarm.layout, name, part_path(&path)),
            part,
        );
        (path, self.f.objects.pin(swarm.id))
    }

    /// Takes part in a URL swarm in the part the tracker gives this agent, and switches as it
    /// changes: leading (fetching from the origin what no peer holds, publishing each piece's
    /// digest before offering the piece) or following (pieces from the leader and the other
    /// members, each checked against a published digest). A follower whose leader stalls or
    /// dies takes over when it is the first to ask (see [`Following::take_over_when_stalled`]);
    /// a leader that was taken over from (it stalled, and is back) stops fetching from the
    /// origin and follows the new one. Every part goes on from the pieces held: one `.part`,
    /// one resume state, and the digests published or learned so far.
    async fn member(
        &self,
        origin: &OriginUrl,
        swarm: &SwarmInfo,
    ) -> Result<Fetched, AgentFetchError> {
        let me = &self.f.id;
        let mut led = (swarm.leader == *me).then(|| swarm.clone());
        let part = if led.is_some() {
            info!(swarm = %swarm.id, url = %swarm.key.url, "leading the swarm: fetching from the origin");
            Part::Lead
        } else {
            info!(swarm = %swarm.id, leader = %swarm.leader, url = %swarm.key.url, "following the swarm");
            Part::Follow
        };
        let (path, _pin) = self.join(origin, swarm, part);
        let tracker = self.tracker("a swarm")?;
        let entry = self.f.catalog.get(&swarm.id).expect("joined just now");
        // While the tracker is down, digests are asked of the leader (the one followed now).
        let ask = LeaderAsk {
            entry: entry.clone(),
            exchange: Exchange::new(
                self.f.options.peer_token.clone(),
                self.f.options.http.ca.as_ref(),
            ),
        };
        let following = Following::start(tracker.clone(), swarm, ask, &self.cancel);
        let held = || entry.have().count_ones();
        let mut waiting = role::Waiting::new(self.f.options.max_wait, held());
        let result = loop {
            let stop = self.cancel.child_token();
            let part = self.part_run(origin, swarm, led.as_ref(), &following, waiting.left());
            let run = self.swarm(part, &stop);
            tokio::pin!(run);
            let next = match &led {
                Some(_) => tokio::select! {
                    result = &mut run => break result,
                    leader = following.deposed(me) => {
                        info!(
                            swarm = %swarm.id,
                            %leader,
                            "another member took over the swarm's lead while this agent stalled; \
                             following it: no more fetching from the origin"
                        );
                        None
                    }
                },
                None => tokio::select! {
                    result = &mut run => break result,
                    taken = following.take_over_when_stalled(tracker, me) => {
                        info!(
                            swarm = %swarm.id,
                            url = %swarm.key.url,
                            "the swarm's leader stalled or died; leading it now: fetching from the origin what no peer holds"
                        );
                        following.lead(me);
                        Some(taken)
                    }
                },
            };
            stop.cancel();
            match (&mut run).await {
                // It finished as the lead changed: it has every piece already.
                Ok(done) => break Ok(done),
                Err(_) => led = next,
            }
            waiting.held(held());
        };
        let published = following.stop().await;
        let (summary, learned) = result.map_err(|e| match e {
            AgentFetchError::Download(e) => AgentFetchError::Download(waiting.restate(e)),
            other => other,
        })?;
        // Digests learned in an earlier part (as the leader) are kept in the entry.
        let kept = entry
            .digests()
            .to_digests(swarm.layout.piece_count())
            .unwrap_or_default();
        let digests = published
            .into_iter()
            .zip(learned)
            .enumerate()
            .map(|(i, (published, learned))| {
                published
                    .or(learned)
                    .or_else(|| kept.get(i).copied().flatten())
            })
            .collect();
        self.finish(
            origin.clone(),
            path,
            swarm.layout,
            digests,
            summary,
            Some(swarm.id),
        )
        .await
    }

    /// One part of a URL swarm's download: as its leader (`led`), the origin trusted for the
    /// pieces no peer holds and every digest learned published; as a follower, peers only,
    /// the leader's upload kept for first copies. Either waits `max_wait` for pieces with
    /// nothing arriving.
    fn part_run(
        &self,
        origin: &OriginUrl,
        swarm: &SwarmInfo,
        led: Option<&SwarmInfo>,
        following: &Following,
        max_wait: Duration,
    ) -> SwarmRun {
        SwarmRun {
            id: swarm.id,
            url: origin.url.clone(),
            layout: swarm.layout,
            digests: following.digests(),
            origin: match led {
                Some(_) => OriginUse::Lead {
                    connections: self.f.options.origin_connections,
                    validator: origin.version.validator.clone(),
                },
                None => OriginUse::Never,
            },
            leader: led.is_none().then(|| following.leader()),
            led: led.cloned(),
            max_wait,
        }
    }

    /// Turns a finished download at `path` into a content: builds its manifest from the
    /// digests, moves the bytes to the content's place, seeds it (also under the swarm's id,
    /// for followers still fetching), and publishes the manifest and the URL mapping.
    async fn finish(
        &self,
        origin: OriginUrl,
        path: PathBuf,
        layout: Layout,
        digests: Vec<Option<PieceDigest>>,
        summary: Summary,
        swarm: Option<ContentId>,
    ) -> Result<Fetched, AgentFetchError> {
        let digests: Vec<PieceDigest> = digests
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                d.ok_or_else(|| {
                    AgentFetchError::Download(DownloadError::Network {
                        url: origin.url.clone().into(),
                        cause: shoal_engine::FetchError::Unserved(format!(
                            "piece {i} was never hashed"
                        )),
                        tries: 1,
                    })
                })
            })
            .collect::<Result<_, _>>()?;
        let manifest = Arc::new(Manifest::new(layout, digests).expect("one digest per piece"));
        let id = manifest.id();
        self.check_sha256(&path, id, swarm).await?;
        let name = shoal_engine::naming::file_name(None, &origin.url);
        let pin = self.f.objects.pin(id);
        let target = self.f.objects.path(&id);
        let to = target.clone();
        tokio::task::spawn_blocking(move || std::fs::rename(&path, &to))
            .await
            .expect("renaming does not panic")
            .map_err(|source| ObjectsError {
                path: target.clone(),
                op: "move into place",
                source,
            })?;
        if let Some(alias) = swarm.and_then(|s| self.f.catalog.get(&s)) {
            alias.set_path(target.clone());
            self.f
                .catalog
                .mark(&alias.id(), &layout.pieces().collect::<Vec<_>>());
        }
        let entry = Arc::new(Entry::complete(
            manifest.clone(),
            name.clone(),
            Provenance::Fetched,
            target.clone(),
        ));
        self.f.catalog.insert(entry.clone());
        let key = self.key(&origin.version);
        self.keep(&manifest, &name, Some(key.clone())).await?;
        if let Some(tracker) = &self.f.tracker {
            let published = async {
                tracker.put_manifest(&manifest).await?;
                // Held before mapped: an agent that finds the URL's content right after the
                // mapping finds this agent holding it, rather than no peer (the announcer
                // tells the tracker only within its next batch) and only the origin.
                let held = AnnounceRequest {
                    holdings: vec![entry.holding()],
                    ..AnnounceRequest::default()
                };
                if let Err(e) = tracker.announce(&self.f.id, &held).await {
                    debug!(content = %id, "announcing the content before mapping the URL: {e}");
                }
                tracker
                    .publish_url(&PublishUrlRequest {
                        key: key.clone(),
                        content: id,
                    })
                    .await
            };
            match published.await {
                Ok(mapping) if mapping.content != id => warn!(
                    "the tracker maps {} to {}, but its bytes here hash to {id}; \
                     the file may have changed on the origin",
                    key.url, mapping.content
                ),
                Ok(_) => info!(content = %id, url = %key.url, "published"),
                Err(e) => warn!(content = %id, "could not publish the manifest: {e}"),
            }
        }
        Ok(Fetched {
            content: id,
            name,
            path: target,
            size: layout.size(),
            summary: Some(summary),
            pin,
        })
    }
}
