//! EC2's request rate limits, kept in one table, and the pacing that keeps
//! prepatch inside them.
//!
//! EC2 throttles per account and region with token buckets: each request
//! takes a token from its action's bucket, buckets refill at a fixed rate,
//! and an empty bucket answers `RequestLimitExceeded`. prepatch keeps a copy
//! of each bucket on the client side ([`Paced`]) and waits for a token
//! before it sends, so it runs at the rate AWS allows instead of being
//! throttled and backing off below it. A throttle that happens anyway (other
//! tools share the account's buckets) is retried with exponential backoff.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Api, ApiCalls, Cloud, CloudError, ImageFilter, ImageRequest, Probe, Scope};
use crate::config::LandingZone;
use crate::model::{
    AccountId, AmiId, Image, Instance, InstanceId, Region, Snapshot, SsmInfo, StateChange,
    StatusChecks, Tags, Target,
};

/// The size and refill rate of one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub capacity: f64,
    pub refill_per_sec: f64,
}

/// EC2's buckets. Source: Amazon EC2 API throttling, "Request token bucket
/// sizes and refill rates" and "Resource token bucket sizes and refill
/// rates", <https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html>.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// Paginated or filtered Describe* calls.
    NonMutating,
    /// Unfiltered and unpaginated DescribeInstances / DescribeInstanceStatus.
    /// prepatch always paginates, so it never draws from this one.
    UnfilteredNonMutating,
    /// General mutating actions, CreateImage among them.
    Mutating,
    CreateTags,
    DeregisterImage,
    DeleteSnapshot,
    StartInstancesRequests,
    /// Instances started: one token per instance id in the request.
    StartInstancesResources,
    StopInstancesResources,
}

impl Bucket {
    pub fn rate(self) -> Rate {
        let (capacity, refill_per_sec) = match self {
            Bucket::NonMutating => (100.0, 20.0),
            Bucket::UnfilteredNonMutating => (50.0, 10.0),
            Bucket::Mutating => (50.0, 5.0),
            Bucket::CreateTags => (100.0, 10.0),
            Bucket::DeregisterImage => (100.0, 5.0),
            Bucket::DeleteSnapshot => (100.0, 5.0),
            Bucket::StartInstancesRequests => (5.0, 2.0),
            Bucket::StartInstancesResources => (1000.0, 2.0),
            Bucket::StopInstancesResources => (1000.0, 20.0),
        };
        Rate {
            capacity,
            refill_per_sec,
        }
    }

    /// The EC2 buckets a call draws from, with how many tokens each.
    /// Calls to STS and SSM are not paced here: they are not EC2's.
    pub fn for_call(api: Api, instances: usize) -> Vec<(Bucket, f64)> {
        match api {
            Api::DescribeInstances
            | Api::DescribeImages
            | Api::DescribeInstanceStatus
            | Api::DescribeSnapshots => {
                vec![(Bucket::NonMutating, 1.0)]
            }
            Api::CreateImage | Api::EnableImageDeprecation => vec![(Bucket::Mutating, 1.0)],
            Api::CreateTags | Api::DeleteTags => vec![(Bucket::CreateTags, 1.0)],
            Api::DeregisterImage => vec![(Bucket::DeregisterImage, 1.0)],
            Api::DeleteSnapshot => vec![(Bucket::DeleteSnapshot, 1.0)],
            Api::StopInstances => vec![
                (Bucket::Mutating, 1.0),
                (Bucket::StopInstancesResources, instances as f64),
            ],
            Api::StartInstances => vec![
                (Bucket::StartInstancesRequests, 1.0),
                (Bucket::StartInstancesResources, instances as f64),
            ],
            Api::AssumeRole | Api::DescribeInstanceInformation => vec![],
        }
    }
}

/// A token bucket on tokio time. Tokens may go negative: a caller reserves
/// its tokens at once and sleeps off the debt, so waiters are served in
/// order and the bucket is never asked twice for the same refill.
#[derive(Debug)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn full(rate: Rate) -> Self {
        TokenBucket {
            rate,
            tokens: rate.capacity,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.refill_per_sec).min(self.rate.capacity);
        self.at = now;
    }

    /// Server side: take `n` tokens if there are, else refuse.
    pub fn try_take(&mut self, n: f64) -> bool {
        self.refill(Instant::now());
        // A hair of tolerance: the client computes its wait with the same
        // floats, and a refill that lands one ulp short is not a throttle.
        if self.tokens + 1e-6 >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Returns tokens taken by a request that was refused elsewhere.
    pub fn give_back(&mut self, n: f64) {
        self.tokens = (self.tokens + n).min(self.rate.capacity);
    }

    /// Client side: reserve `n` tokens, returning how long to wait before
    /// the request may go.
    pub fn reserve(&mut self, n: f64) -> Duration {
        self.refill(Instant::now());
        self.tokens -= n.min(self.rate.capacity);
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate.refill_per_sec)
        }
    }
}

/// How throttles that get through are retried.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 8,
            first: Duration::from_millis(500),
            max: Duration::from_secs(20),
        }
    }
}

/// Wraps a [`Cloud`] with client-side copies of EC2's buckets, per account
/// and region, and retries throttled calls with exponential backoff.
pub struct Paced<C> {
    inner: C,
    buckets: Mutex<HashMap<(AccountId, Region, Bucket), TokenBucket>>,
    backoff: Backoff,
    retries: Mutex<BTreeMap<Api, u64>>,
    /// Requests in flight at once, over every account-region.
    in_flight: tokio::sync::Semaphore,
}

/// Requests in flight at once unless told otherwise (`aws.max_concurrency`).
pub const DEFAULT_IN_FLIGHT: usize = 16;

impl<C: Cloud> Paced<C> {
    pub fn new(inner: C) -> Self {
        Paced {
            inner,
            buckets: Mutex::default(),
            backoff: Backoff::default(),
            retries: Mutex::default(),
            in_flight: tokio::sync::Semaphore::new(DEFAULT_IN_FLIGHT),
        }
    }

    /// At most `n` requests in flight at once, whatever the number of
    /// account-regions being worked on. Waiting (polls, pacing) holds none.
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.in_flight = tokio::sync::Semaphore::new(n.max(1));
        self
    }

    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Throttled calls that were retried, by action.
    pub fn retries(&self) -> BTreeMap<Api, u64> {
        self.retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn pace(&self, t: &Target, api: Api, instances: usize) {
        let wait = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            Bucket::for_call(api, instances)
                .into_iter()
                .map(|(bucket, n)| {
                    buckets
                        .entry((t.account.clone(), t.region.clone(), bucket))
                        .or_insert_with(|| TokenBucket::full(bucket.rate()))
                        .reserve(n)
                })
                .max()
                .unwrap_or(Duration::ZERO)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Paces, calls, and retries throttles with jittered exponential backoff.
    async fn call<T, F, Fut>(
        &self,
        t: &Target,
        api: Api,
        instances: usize,
        f: F,
    ) -> Result<T, CloudError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        self.retried(api, t, || async {
            self.pace(t, api, instances).await;
            self.in_flight(f()).await
        })
        .await
    }

    /// One request, holding one of the `max_in_flight` permits while it is
    /// in flight (and not while it waits for its tokens or to retry).
    async fn in_flight<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        // Never closed, so acquiring cannot fail; if it did, the request
        // would simply go unbounded.
        let _permit = self.in_flight.acquire().await.ok();
        request.await
    }

    /// Makes `attempt` until it is not throttled, backing off with jitter
    /// between tries, `backoff.attempts` times at the most.
    async fn retried<T, F, Fut>(
        &self,
        api: Api,
        scope: &(dyn std::fmt::Display + Sync),
        attempt: F,
    ) -> Result<T, CloudError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, CloudError>>,
    {
        let mut delay = self.backoff.first;
        let mut tries = 1;
        loop {
            match attempt().await {
                Err(e) if e.is_throttle() && tries < self.backoff.attempts => {
                    *self
                        .retries
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(api)
                        .or_default() += 1;
                    tracing::debug!(%scope, %api, attempt = tries, "throttled, backing off");
                    tokio::time::sleep(jitter(delay, tries)).await;
                    delay = (delay * 2).min(self.backoff.max);
                    tries += 1;
                }
                other => return other,
            }
        }
    }
}

/// Deterministic "equal jitter": half the delay plus a varying share of the
/// other half, so retries from many targets do not arrive together.
fn jitter(delay: Duration, attempt: u32) -> Duration {
    let spread = (u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as f64 / 1024.0;
    delay / 2 + delay.mul_f64(spread / 2.0)
}

#[async_trait]
impl<C: Cloud> Cloud for Paced<C> {
    async fn assume_role(
        &self,
        lz: &LandingZone,
        session_name: &str,
    ) -> Result<String, CloudError> {
        // STS throttles per account, as EC2 does: a landing zone is not
        // lost to a burst of them.
        self.retried(Api::AssumeRole, &lz.name, || {
            self.in_flight(self.inner.assume_role(lz, session_name))
        })
        .await
    }

    async fn describe_instances(
        &self,
        t: &Target,
        scope: Scope,
    ) -> Result<Vec<Instance>, CloudError> {
        self.call(t, Api::DescribeInstances, 0, || {
            self.inner.describe_instances(t, scope)
        })
        .await
    }

    async fn ssm_info(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
    ) -> Result<BTreeMap<InstanceId, SsmInfo>, CloudError> {
        self.call(t, Api::DescribeInstanceInformation, 0, || {
            self.inner.ssm_info(t, only)
        })
        .await
    }

    async fn create_image(&self, t: &Target, req: &ImageRequest) -> Result<AmiId, CloudError> {
        self.call(t, Api::CreateImage, 0, || self.inner.create_image(t, req))
            .await
    }

    async fn describe_images(
        &self,
        t: &Target,
        filter: &ImageFilter,
    ) -> Result<Vec<Image>, CloudError> {
        self.call(t, Api::DescribeImages, 0, || {
            self.inner.describe_images(t, filter)
        })
        .await
    }

    async fn create_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.call(t, Api::CreateTags, 0, || {
            self.inner.create_tags(t, resources, tags)
        })
        .await
    }

    async fn start_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.call(t, Api::StartInstances, ids.len(), || {
            self.inner.start_instances(t, ids)
        })
        .await
    }

    async fn instance_status(&self, t: &Target) -> Result<Vec<StatusChecks>, CloudError> {
        self.call(t, Api::DescribeInstanceStatus, 0, || {
            self.inner.instance_status(t)
        })
        .await
    }

    async fn permitted(&self, t: &Target, probe: &Probe) -> Result<(), CloudError> {
        self.call(t, probe.api(), 0, || self.inner.permitted(t, probe))
            .await
    }

    async fn stop_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        self.call(t, Api::StopInstances, ids.len(), || {
            self.inner.stop_instances(t, ids)
        })
        .await
    }

    async fn deregister_image(&self, t: &Target, ami: &AmiId) -> Result<(), CloudError> {
        self.call(t, Api::DeregisterImage, 0, || {
            self.inner.deregister_image(t, ami)
        })
        .await
    }

    async fn describe_snapshots(
        &self,
        t: &Target,
        key: &str,
        value: &str,
    ) -> Result<Vec<Snapshot>, CloudError> {
        self.call(t, Api::DescribeSnapshots, 0, || {
            self.inner.describe_snapshots(t, key, value)
        })
        .await
    }

    async fn delete_snapshot(&self, t: &Target, snapshot: &str) -> Result<(), CloudError> {
        self.call(t, Api::DeleteSnapshot, 0, || {
            self.inner.delete_snapshot(t, snapshot)
        })
        .await
    }

    async fn delete_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.call(t, Api::DeleteTags, 0, || {
            self.inner.delete_tags(t, resources, tags)
        })
        .await
    }

    async fn enable_image_deprecation(
        &self,
        t: &Target,
        ami: &AmiId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), CloudError> {
        self.call(t, Api::EnableImageDeprecation, 0, || {
            self.inner.enable_image_deprecation(t, ami, at)
        })
        .await
    }

    fn api_calls(&self) -> &ApiCalls {
        self.inner.api_calls()
    }

    fn is_simulated(&self) -> bool {
        self.inner.is_simulated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reservations_pace_at_the_refill_rate() {
        let mut b = TokenBucket::full(Bucket::Mutating.rate());
        let waits: Vec<Duration> = (0..52).map(|_| b.reserve(1.0)).collect();
        assert_eq!(waits[49], Duration::ZERO);
        assert_eq!(waits[50], Duration::from_millis(200));
        assert_eq!(waits[51], Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn server_bucket_refuses_when_empty_and_refills() {
        let mut b = TokenBucket::full(Rate {
            capacity: 2.0,
            refill_per_sec: 1.0,
        });
        assert!(b.try_take(1.0) && b.try_take(1.0));
        assert!(!b.try_take(1.0));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.try_take(1.0));
    }
}
