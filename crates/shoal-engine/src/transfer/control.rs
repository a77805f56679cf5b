//! The connection controller: how many connections are worth keeping, and which ones lose
//! their work. Pure: it sees made-up or measured samples and returns decisions, which the loop
//! carries out, so every rule here is unit-tested without a network.
//!
//! The policy: open every connection at once (the common case is servers that cap each
//! connection), then, on downloads long enough for a trial to be cheap, pause half the
//! connections and see whether throughput drops. If it does, the paused ones read on and
//! nothing was lost. If it does not, the link is full and the extra connections only cost CPU
//! and fairness: they are closed, and the remaining half is tried the same way. Meanwhile a
//! connection far below the median speed loses its work, so one bad route cannot hold up the
//! file.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::segments::WorkerId;

/// All connections stream this long before their worth is judged: slow start and servers
/// that burst a second's worth of data at first (nginx `limit_rate`) make earlier numbers lie.
const WARMUP: Duration = Duration::from_millis(1500);
/// How long a trial with half the connections paused runs before its throughput is compared.
const TRIAL: Duration = Duration::from_millis(1500);
/// Trials compare exact averages over these windows: the second before a trial, and the end
/// of the trial, once the connections still reading have taken up the paused ones' share.
const BASELINE_WINDOW: Duration = Duration::from_secs(1);
const TRIAL_WINDOW: Duration = Duration::from_millis(1200);
/// Trials only run when the download has at least this long to go, so one that costs
/// throughput costs at most a few percent of the time.
const TRIAL_MIN_ETA: Duration = Duration::from_secs(8);
/// Fewer connections are enough if they reach this share of what all of them did (measuring
/// over about a second is noisy by several percent, so this is not closer to 1).
const HALF_IS_ENOUGH: f64 = 0.85;
/// Below `HALF_IS_ENOUGH` but above this share, a trial is inconclusive: a busy machine
/// stalling reads for a few hundred milliseconds looks like that, while connections that each
/// bring their own share fall to about a half. An inconclusive trial is run once more after a
/// fresh warm-up.
const CLEARLY_NEEDED: f64 = 0.6;
/// A connection this many times slower than the median (after `SLOW_GRACE` of streaming)
/// loses its work.
const SLOW_FACTOR: f64 = 10.0;
const SLOW_GRACE: Duration = Duration::from_secs(2);
/// ... and only once it has been that slow for this long: servers that pace in bursts (nginx
/// sends a second's worth at the start of every request) make connections look slow for a
/// moment, and closing one throws away what it has in flight.
const SLOW_FOR: Duration = Duration::from_secs(3);

/// What the controller sees of one connection at a tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub id: WorkerId,
    /// Bytes per second, smoothed.
    pub speed: f64,
    /// How long it has streamed since its first byte (or since it was last resumed).
    pub streamed_for: Duration,
    pub paused: bool,
    /// Told to stop already.
    pub cancelled: bool,
    /// A response is streaming (a connection to a peer may wait for work between pieces).
    pub streaming: bool,
}

/// What the loop should do after a tick.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Decisions {
    /// Stop reading, for a trial.
    pub pause: Vec<WorkerId>,
    /// Read again, judged afresh: a trial showed they were needed.
    pub resume: Vec<WorkerId>,
    /// Close: a trial showed they add nothing.
    pub close: Vec<WorkerId>,
    /// Far below the median for too long: their work goes to others.
    pub retire: Vec<WorkerId>,
    /// Keep at most this many connections from now on.
    pub target: Option<u32>,
    /// Tell the user the connection count was lowered to this.
    pub lowered: Option<u32>,
}

enum Phase {
    /// Every connection streams; nothing is judged yet.
    Warmup {
        until: Instant,
    },
    /// The `paused` connections stop reading; `baseline` is what all achieved before.
    Trial {
        baseline: f64,
        paused: Vec<WorkerId>,
        until: Instant,
    },
    Settled,
}

/// What a download tells the controller at each tick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tick {
    pub now: Instant,
    /// Bytes received so far.
    pub fetched: u64,
    /// Bytes still missing.
    pub left: u64,
    /// Connections the user allows (`-c`).
    pub allowed: u32,
}

pub(crate) struct Controller {
    phase: Phase,
    history: History,
    /// Under `--limit-rate` the shared budget, not the route, decides each connection's
    /// speed: a slow one is not a bad one, and none is retired.
    limited: bool,
    /// Since when each connection has been far below the median.
    slow_since: HashMap<WorkerId, Instant>,
    /// An inconclusive trial was already run again.
    retried: bool,
}

impl Controller {
    /// `trials`: whether connection counts are tried at all (a swarm's connections go to
    /// many links, and a trial judges one).
    pub(super) fn new(now: Instant, trials: bool, limited: bool) -> Self {
        Self {
            phase: if trials {
                Phase::Warmup {
                    until: now + WARMUP,
                }
            } else {
                Phase::Settled
            },
            history: History::default(),
            limited,
            slow_since: HashMap::new(),
            retried: false,
        }
    }

    /// One tick: the connections as they are now, and what to do about them.
    pub(super) fn tick(&mut self, tick: Tick, samples: &[Sample]) -> Decisions {
        let mut decisions = Decisions {
            retire: self.retire_slow(tick.now, samples),
            ..Decisions::default()
        };
        let samples: Vec<Sample> = samples
            .iter()
            .map(|s| Sample {
                cancelled: s.cancelled || decisions.retire.contains(&s.id),
                ..*s
            })
            .collect();
        self.history.record(tick.now, tick.fetched);
        self.steer(tick, &samples, &mut decisions);
        decisions
    }

    fn retire_slow(&mut self, now: Instant, samples: &[Sample]) -> Vec<WorkerId> {
        if self.limited {
            return Vec::new();
        }
        let judged = |s: &Sample| s.streamed_for >= SLOW_GRACE && !s.paused && s.streaming;
        let mut speeds: Vec<f64> = samples
            .iter()
            .filter(|s| judged(s))
            .map(|s| s.speed)
            .collect();
        self.slow_since
            .retain(|id, _| samples.iter().any(|s| s.id == *id));
        if speeds.len() < 3 {
            return Vec::new();
        }
        speeds.sort_by(f64::total_cmp);
        let median = speeds[speeds.len() / 2];
        let mut retire = Vec::new();
        for s in samples {
            if !(judged(s) && s.speed * SLOW_FACTOR < median) {
                self.slow_since.remove(&s.id);
                continue;
            }
            let since = *self.slow_since.entry(s.id).or_insert(now);
            if now.duration_since(since) >= SLOW_FOR && !s.cancelled {
                debug!(
                    connection = s.id,
                    speed = s.speed,
                    median,
                    "far below the median"
                );
                retire.push(s.id);
            }
        }
        retire.sort_unstable();
        retire
    }

    fn steer(&mut self, tick: Tick, samples: &[Sample], out: &mut Decisions) {
        let now = tick.now;
        let worth_a_trial = |speed: f64| {
            speed > 0.0 && Duration::from_secs_f64(tick.left as f64 / speed) > TRIAL_MIN_ETA
        };
        let active = |skip: &[WorkerId]| {
            let mut ids: Vec<WorkerId> = samples
                .iter()
                .filter(|s| !s.cancelled && !skip.contains(&s.id))
                .map(|s| s.id)
                .collect();
            ids.sort_unstable();
            ids
        };
        let pause_half = |active: &[WorkerId], baseline: f64, out: &mut Decisions| {
            let paused = active[active.len().div_ceil(2)..].to_vec();
            debug!(
                speed = baseline,
                active = active.len(),
                paused = paused.len(),
                "trial"
            );
            out.pause.extend_from_slice(&paused);
            Phase::Trial {
                baseline,
                paused,
                until: now + TRIAL,
            }
        };
        let phase = std::mem::replace(&mut self.phase, Phase::Settled);
        self.phase = match phase {
            Phase::Warmup { until } if now < until => phase,
            Phase::Trial { until, .. } if now < until => phase,
            Phase::Warmup { .. } => {
                let speed = self.history.rate(BASELINE_WINDOW);
                let active = active(&[]);
                if active.len() < 2 || !worth_a_trial(speed) {
                    Phase::Settled
                } else {
                    pause_half(&active, speed, out)
                }
            }
            Phase::Trial {
                baseline, paused, ..
            } => {
                let speed = self.history.rate(TRIAL_WINDOW);
                if speed < HALF_IS_ENOUGH * baseline {
                    debug!(
                        speed,
                        baseline, "half the connections were slower; resuming the rest"
                    );
                    out.resume.extend(
                        paused
                            .iter()
                            .filter(|id| samples.iter().any(|s| s.id == **id)),
                    );
                    if speed >= CLEARLY_NEEDED * baseline && !self.retried {
                        self.retried = true;
                        Phase::Warmup {
                            until: now + WARMUP,
                        }
                    } else {
                        let kept = samples.len() as u32;
                        if kept < tick.allowed {
                            out.lowered = Some(kept);
                        }
                        Phase::Settled
                    }
                } else {
                    out.close.extend(
                        paused
                            .iter()
                            .filter(|id| samples.iter().any(|s| s.id == **id)),
                    );
                    let active = active(&paused);
                    out.target = Some(active.len().max(1) as u32);
                    if active.len() >= 2 && worth_a_trial(speed) {
                        // Every trial is measured against all connections, so small losses do
                        // not add up.
                        pause_half(&active, baseline, out)
                    } else {
                        out.lowered = Some(active.len().max(1) as u32);
                        Phase::Settled
                    }
                }
            }
            Phase::Settled => Phase::Settled,
        };
    }
}

/// Bytes fetched over the last seconds, sampled every tick.
#[derive(Default)]
struct History {
    samples: VecDeque<(Instant, u64)>,
}

impl History {
    fn record(&mut self, now: Instant, fetched: u64) {
        self.samples.push_back((now, fetched));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > 2 * BASELINE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over about the last `window`; 0 without two samples.
    fn rate(&self, window: Duration) -> f64 {
        let Some(&(now, last)) = self.samples.back() else {
            return 0.0;
        };
        let Some(&(then, first)) = self
            .samples
            .iter()
            .find(|(at, _)| now.duration_since(*at) <= window)
        else {
            return 0.0;
        };
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        (last - first) as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(100);

    fn samples(speeds: &[f64], streamed: Duration) -> Vec<Sample> {
        speeds
            .iter()
            .enumerate()
            .map(|(i, &speed)| Sample {
                id: i as WorkerId,
                speed,
                streamed_for: streamed,
                paused: false,
                cancelled: false,
                streaming: true,
            })
            .collect()
    }

    /// Runs the controller for `duration` at `rate` bytes per second in all, with `left`
    /// bytes to go, and gathers every decision.
    fn run(
        c: &mut Controller,
        start: Instant,
        fetched: &mut u64,
        duration: Duration,
        rate: f64,
        conns: &mut Vec<Sample>,
    ) -> Vec<Decisions> {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t < duration {
            t += STEP;
            *fetched += (rate * STEP.as_secs_f64()) as u64;
            let tick = Tick {
                now: start + t,
                fetched: *fetched,
                left: 1 << 40,
                allowed: 16,
            };
            let d = c.tick(tick, conns);
            for s in conns.iter_mut() {
                if d.pause.contains(&s.id) {
                    s.paused = true;
                }
                if d.resume.contains(&s.id) {
                    s.paused = false;
                }
                if d.close.contains(&s.id) || d.retire.contains(&s.id) {
                    s.cancelled = true;
                }
            }
            conns.retain(|s| !s.cancelled);
            out.push(d);
        }
        out
    }

    #[test]
    fn a_full_link_halves_the_connections_until_halving_costs() {
        let start = Instant::now();
        let mut c = Controller::new(start, true, false);
        let mut conns = samples(&[1e6; 8], Duration::from_secs(5));
        let mut fetched = 0;
        // The link gives 8 MB/s whatever the number of connections: 8 → 4 → 2 → 1.
        let decisions = run(
            &mut c,
            start,
            &mut fetched,
            Duration::from_secs(8),
            8e6,
            &mut conns,
        );
        let paused: Vec<_> = decisions.iter().filter(|d| !d.pause.is_empty()).collect();
        assert_eq!(paused[0].pause, vec![4, 5, 6, 7]);
        assert_eq!(conns.len(), 1, "{conns:?}");
        assert!(decisions.iter().any(|d| d.lowered == Some(1)));
    }

    #[test]
    fn connections_that_add_throughput_are_kept() {
        let start = Instant::now();
        let mut c = Controller::new(start, true, false);
        let mut conns = samples(&[1e6; 4], Duration::from_secs(5));
        let mut fetched = 0;
        run(&mut c, start, &mut fetched, WARMUP, 4e6, &mut conns);
        let paused: Vec<WorkerId> = conns.iter().filter(|s| s.paused).map(|s| s.id).collect();
        assert_eq!(paused, vec![2, 3]);
        // Half the connections bring half the throughput: the trial ends with all reading.
        let decisions = run(&mut c, start + WARMUP, &mut fetched, TRIAL, 2e6, &mut conns);
        let resumed: Vec<_> = decisions.iter().flat_map(|d| d.resume.clone()).collect();
        assert_eq!(resumed, vec![2, 3]);
        // Four kept of the sixteen allowed is said, as before any trial.
        assert!(decisions
            .iter()
            .all(|d| d.close.is_empty() && d.lowered.is_none_or(|n| n == 4)));
        assert_eq!(conns.len(), 4);
        assert!(conns.iter().all(|s| !s.paused));
    }

    #[test]
    fn an_inconclusive_trial_is_run_once_more() {
        let start = Instant::now();
        let mut c = Controller::new(start, true, false);
        let mut conns = samples(&[1e6; 4], Duration::from_secs(5));
        let mut fetched = 0;
        let mut at = start;
        let mut step = |c: &mut Controller, d: Duration, rate: f64, conns: &mut Vec<Sample>| {
            let out = run(c, at, &mut fetched, d, rate, conns);
            at += d;
            out
        };
        step(&mut c, WARMUP, 4e6, &mut conns);
        // A stall: three quarters of the baseline, neither enough nor clearly needed.
        let first = step(&mut c, TRIAL, 3e6, &mut conns);
        assert_eq!(
            first
                .iter()
                .flat_map(|d| d.resume.clone())
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert!(first.iter().all(|d| d.lowered.is_none()));
        // After a fresh warm-up the same half is paused again; this time half is enough.
        let warm = step(&mut c, WARMUP, 4e6, &mut conns);
        assert_eq!(
            warm.iter()
                .flat_map(|d| d.pause.clone())
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        let second = step(&mut c, TRIAL, 4e6, &mut conns);
        assert_eq!(
            second
                .iter()
                .flat_map(|d| d.close.clone())
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
        // A second inconclusive trial settles: the run goes on with what it has.
        let mut c = Controller::new(start, true, false);
        let mut conns = samples(&[1e6; 4], Duration::from_secs(5));
        let mut fetched = 0;
        let mut t = start;
        for (d, rate) in [(WARMUP, 4e6), (TRIAL, 3e6), (WARMUP, 4e6), (TRIAL, 3e6)] {
            run(&mut c, t, &mut fetched, d, rate, &mut conns);
            t += d;
        }
        let after = run(&mut c, t, &mut fetched, 2 * WARMUP, 4e6, &mut conns);
        assert!(after.iter().all(|d| d.pause.is_empty()), "{after:?}");
        assert_eq!(conns.len(), 4);
    }

    #[test]
    fn short_downloads_are_not_tried() {
        let start = Instant::now();
        let mut c = Controller::new(start, true, false);
        let conns = samples(&[1e6; 4], Duration::from_secs(5));
        let d = c.tick(
            Tick {
                now: start + WARMUP + STEP,
                fetched: 4_000_000,
                left: 1_000_000,
                allowed: 16,
            },
            &conns,
        );
        assert_eq!(d, Decisions::default());
    }

    #[test]
    fn a_far_too_slow_connection_is_retired_after_a_while() {
        let start = Instant::now();
        let mut c = Controller::new(start, false, false);
        let conns = samples(&[1e6, 1e6, 1e6, 5e4], Duration::from_secs(3));
        let at = |t: Duration| Tick {
            now: start + t,
            fetched: 0,
            left: 1 << 30,
            allowed: 16,
        };
        assert!(c.tick(at(Duration::ZERO), &conns).retire.is_empty());
        assert!(c.tick(at(Duration::from_secs(2)), &conns).retire.is_empty());
        assert_eq!(c.tick(at(SLOW_FOR), &conns).retire, vec![3]);
        // One that recovers starts its clock over.
        let mut recovered = conns.clone();
        recovered[3].speed = 9e5;
        let mut c = Controller::new(start, false, false);
        c.tick(at(Duration::ZERO), &conns);
        c.tick(at(Duration::from_secs(1)), &recovered);
        assert!(c.tick(at(SLOW_FOR), &conns).retire.is_empty());
    }

    #[test]
    fn nothing_is_retired_under_a_rate_limit_or_before_its_grace() {
        let start = Instant::now();
        let slow = samples(&[1e6, 1e6, 1e6, 5e4], Duration::from_secs(3));
        let mut limited = Controller::new(start, false, true);
        let young = samples(&[1e6, 1e6, 1e6, 5e4], Duration::from_secs(1));
        let mut c = Controller::new(start, false, false);
        for t in [0, 2, 4, 6] {
            let tick = Tick {
                now: start + Duration::from_secs(t),
                fetched: 0,
                left: 1 << 30,
                allowed: 16,
            };
            assert!(limited.tick(tick, &slow).retire.is_empty());
            assert!(c.tick(tick, &young).retire.is_empty());
        }
    }

    #[test]
    fn history_rates_over_a_window() {
        let start = Instant::now();
        let mut h = History::default();
        assert_eq!(h.rate(BASELINE_WINDOW), 0.0);
        for i in 0..=30u64 {
            h.record(start + STEP * i as u32, i * 100_000);
        }
        let rate = h.rate(BASELINE_WINDOW);
        assert!((rate - 1e6).abs() < 1.0, "{rate}");
    }
}
