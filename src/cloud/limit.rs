//! EC2's request rate limits, kept in one table, and the pacing that keeps
//! prepatch inside them.
//!
//! EC2 throttles per account and region with token buckets: each request
//! takes a token from its action's bucket, buckets refill at a fixed rate,
//! and an empty bucket answers `RequestLimitExceeded`. prepatch keeps a copy
//! of each bucket on the client side ([`Paced`]) and waits for a token
//! before it sends, so it runs at the rate AWS allows instead of being
//! throttled and backing off below it. A throttle that happens anyway (other
//! tools share the account's buckets) is retried with exponential backoff
//! and full jitter, and so is a request AWS did not answer.
//!
//! Retries are made here, not in the SDK (which makes one attempt per
//! request): each page of a listing is paced and retried on its own, a
//! request sleeping before its next try holds none of the
//! `aws.max_concurrency` permits, and the retries of one account-region
//! draw on no budget that another shares.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Api, ApiCalls, Cloud, CloudError, ImageFilter, ImageRequest, Page, Probe, Scope};
use crate::config::LandingZone;
use crate::model::rollback::{RootTask, RootTaskRequest};
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
    /// SSM's `DescribeInstanceInformation`. Systems Manager publishes no
    /// figure for it; this is a cautious one (SSM's documented rates for
    /// its busiest reads are higher), and a throttle is retried anyway.
    SsmDescribe,
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
            Bucket::SsmDescribe => (20.0, 5.0),
        };
        Rate {
            capacity,
            refill_per_sec,
        }
    }

    /// The buckets a call draws from, with how many tokens each. STS is
    /// not paced: one call per landing zone.
    pub fn for_call(api: Api, instances: usize) -> Vec<(Bucket, f64)> {
        match api {
            Api::DescribeInstances
            | Api::DescribeImages
            | Api::DescribeInstanceStatus
            | Api::DescribeSnapshots
            | Api::DescribeReplaceRootVolumeTasks => {
                vec![(Bucket::NonMutating, 1.0)]
            }
            Api::CreateImage | Api::EnableImageDeprecation | Api::CreateReplaceRootVolumeTask => {
                vec![(Bucket::Mutating, 1.0)]
            }
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
            Api::DescribeInstanceInformation => vec![(Bucket::SsmDescribe, 1.0)],
            // STS and Organizations: not EC2's buckets.
            Api::AssumeRole
            | Api::ListAccounts
            | Api::ListAccountsForParent
            | Api::ListOrganizationalUnitsForParent
            | Api::ListTagsForResource => vec![],
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

/// How failed requests are tried again: a throttle up to `attempts`
/// times, a request without an answer (or AWS's own failure) up to
/// `transient_attempts` times, as the SDK's standard retry would. Before
/// try n+1 the request sleeps a random time up to
/// min(`max`, `first` x 2^(n-1)): "full jitter", so that callers throttled
/// together do not come back together. The first ceiling is short (100 ms:
/// the client-side buckets keep prepatch's own rate, so a throttle means
/// another client spent the account's tokens, and a retry paced by the
/// same buckets costs little), and 10 tries wait 45.5 s at the most in
/// all. Ten, not eight: a throttled `CreateImage` that gives up costs the
/// instance its backup (and so its start); on the stage's 30%-throttle
/// storm one CreateImage of 24 gave up after 8 throttles in a row once in
/// about nine runs.
/// On the stage with 30% of requests throttled, a 500 ms first ceiling
/// made a run 1.39 times as long as a calm one; 100 ms, 1.27 times.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub attempts: u32,
    pub transient_attempts: u32,
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            attempts: 10,
            transient_attempts: 3,
            first: Duration::from_millis(100),
            max: Duration::from_secs(20),
        }
    }
}

impl Backoff {
    /// The longest sleep before try `tries + 1`.
    fn ceiling(&self, tries: u32) -> Duration {
        self.first
            .saturating_mul(1 << tries.saturating_sub(1).min(20))
            .min(self.max)
    }
}

/// A small random source for jitter (splitmix64): not for secrets.
#[derive(Debug)]
struct Jitter(std::sync::atomic::AtomicU64);

impl Jitter {
    fn seeded() -> Jitter {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Jitter(std::sync::atomic::AtomicU64::new(seed))
    }

    /// A uniform share of `ceiling`.
    fn up_to(&self, ceiling: Duration) -> Duration {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ceiling.mul_f64((z >> 11) as f64 / (1u64 << 53) as f64)
    }
}

/// Wraps a [`Cloud`] with client-side copies of EC2's buckets, per account
/// and region, and retries throttled calls with exponential backoff.
pub struct Paced<C> {
    inner: C,
    buckets: Mutex<HashMap<(AccountId, Region, Bucket), TokenBucket>>,
    backoff: Backoff,
    jitter: Jitter,
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
            jitter: Jitter::seeded(),
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

    /// Requests that were tried again, by action.
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

    /// Paces, calls, and retries with jittered exponential backoff: one
    /// request (one page), each try paced anew.
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
            let result = self.in_flight(f()).await;
            if result.as_ref().is_err_and(CloudError::is_throttle) {
                self.refund(t, api, instances);
            }
            result
        })
        .await
    }

    /// Gives back a throttled request's tokens: EC2 served it no token (its
    /// bucket was empty, spent by another client of the account), so the
    /// copy of the bucket kept here charges only what EC2 charges. The
    /// backoff before the retry is what gives EC2's bucket time to refill;
    /// charging the throttled try too made each retry wait for a refill as
    /// well (on the stage with 30% of requests throttled, a backup phase
    /// 2.2 times as long as a calm one, against 1.x once refunded).
    fn refund(&self, t: &Target, api: Api, instances: usize) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for (bucket, n) in Bucket::for_call(api, instances) {
            if let Some(b) = buckets.get_mut(&(t.account.clone(), t.region.clone(), bucket)) {
                b.give_back(n.min(bucket.rate().capacity));
            }
        }
    }

    /// One request, holding one of the `max_in_flight` permits while it is
    /// in flight (and not while it waits for its tokens or to retry).
    async fn in_flight<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        // Never closed, so acquiring cannot fail; if it did, the request
        // would simply go unbounded.
        let _permit = self.in_flight.acquire().await.ok();
        request.await
    }

    /// Makes `attempt` until it is answered, backing off with full jitter
    /// between tries (see [`Backoff`]). Sleeping holds no permit.
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
        let mut tries = 1;
        loop {
            let result = attempt().await;
            let again = match &result {
                Err(e) if e.is_throttle() => tries < self.backoff.attempts,
                Err(e) if e.is_transient() => tries < self.backoff.transient_attempts,
                _ => false,
            };
            if !again {
                return result;
            }
            *self
                .retries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(api)
                .or_default() += 1;
            tracing::debug!(%scope, %api, attempt = tries, "no answer or throttled, trying again");
            tokio::time::sleep(self.jitter.up_to(self.backoff.ceiling(tries))).await;
            tries += 1;
        }
    }
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

    async fn describe_instances_page(
        &self,
        t: &Target,
        scope: Scope,
        token: Option<String>,
    ) -> Result<Page<Instance>, CloudError> {
        self.call(t, Api::DescribeInstances, 0, || {
            self.inner.describe_instances_page(t, scope, token.clone())
        })
        .await
    }

    async fn ssm_info_page(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
        token: Option<String>,
    ) -> Result<Page<(InstanceId, SsmInfo)>, CloudError> {
        self.call(t, Api::DescribeInstanceInformation, 0, || {
            self.inner.ssm_info_page(t, only, token.clone())
        })
        .await
    }

    async fn create_image(&self, t: &Target, req: &ImageRequest) -> Result<AmiId, CloudError> {
        self.call(t, Api::CreateImage, 0, || self.inner.create_image(t, req))
            .await
    }

    async fn describe_images_page(
        &self,
        t: &Target,
        filter: &ImageFilter,
        token: Option<String>,
    ) -> Result<Page<Image>, CloudError> {
        self.call(t, Api::DescribeImages, 0, || {
            self.inner.describe_images_page(t, filter, token.clone())
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

    async fn instance_status_page(
        &self,
        t: &Target,
        token: Option<String>,
    ) -> Result<Page<StatusChecks>, CloudError> {
        self.call(t, Api::DescribeInstanceStatus, 0, || {
            self.inner.instance_status_page(t, token.clone())
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

    async fn describe_snapshots_page(
        &self,
        t: &Target,
        key: &str,
        value: &str,
        token: Option<String>,
    ) -> Result<Page<Snapshot>, CloudError> {
        self.call(t, Api::DescribeSnapshots, 0, || {
            self.inner
                .describe_snapshots_page(t, key, value, token.clone())
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

    async fn replace_root_volume(
        &self,
        t: &Target,
        req: &RootTaskRequest,
    ) -> Result<RootTask, CloudError> {
        // Retried like any call: its client token makes a second try
        // return the task the first one made.
        self.call(t, Api::CreateReplaceRootVolumeTask, 0, || {
            self.inner.replace_root_volume(t, req)
        })
        .await
    }

    async fn root_tasks_page(
        &self,
        t: &Target,
        instances: &[InstanceId],
        token: Option<String>,
    ) -> Result<Page<RootTask>, CloudError> {
        self.call(t, Api::DescribeReplaceRootVolumeTasks, 0, || {
            self.inner.root_tasks_page(t, instances, token.clone())
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
    use crate::cloud::ErrorKind;
    use crate::model::InstanceState;

    fn target() -> Target {
        Target {
            landing_zone: "lz".into(),
            account: "111111111111".parse().unwrap(),
            region: "eu-west-1".parse().unwrap(),
        }
    }

    fn error(code: &str) -> CloudError {
        CloudError::new(
            Api::DescribeInstances,
            CloudError::kind_of(code),
            code,
            "scripted",
        )
    }

    /// A cloud whose `DescribeInstances` has three pages of one instance
    /// (tokens "1" and "2"), and which gives the scripted errors first: an
    /// entry (token, error) answers the next request for that token.
    #[derive(Default)]
    struct Scripted {
        asked: Mutex<Vec<Option<String>>>,
        errors: Mutex<Vec<(Option<String>, CloudError)>>,
        calls: ApiCalls,
    }

    impl Scripted {
        fn failing(errors: Vec<(Option<&str>, CloudError)>) -> Scripted {
            Scripted {
                errors: Mutex::new(
                    errors
                        .into_iter()
                        .map(|(t, e)| (t.map(str::to_owned), e))
                        .collect(),
                ),
                ..Scripted::default()
            }
        }

        fn asked(&self) -> Vec<Option<String>> {
            self.asked.lock().unwrap().clone()
        }
    }

    fn not_scripted<T>(api: Api) -> Result<T, CloudError> {
        Err(CloudError::new(
            api,
            ErrorKind::Api,
            "NotScripted",
            "not in this test",
        ))
    }

    #[async_trait]
    impl Cloud for Scripted {
        async fn assume_role(&self, _: &LandingZone, _: &str) -> Result<String, CloudError> {
            not_scripted(Api::AssumeRole)
        }
        async fn describe_instances_page(
            &self,
            _: &Target,
            _: Scope,
            token: Option<String>,
        ) -> Result<Page<Instance>, CloudError> {
            self.asked.lock().unwrap().push(token.clone());
            {
                let mut errors = self.errors.lock().unwrap();
                if let Some(i) = errors.iter().position(|(t, _)| *t == token) {
                    return Err(errors.remove(i).1);
                }
            }
            let n: usize = token.as_deref().map_or(0, |t| t.parse().unwrap());
            Ok(Page {
                items: vec![Instance {
                    id: InstanceId::new(format!("i-{n}")),
                    state: InstanceState::Running,
                    platform: crate::model::Platform::Linux,
                    instance_type: "t3.micro".into(),
                    private_ip: None,
                    launch_time: None,
                    tags: Default::default(),
                }],
                next: (n < 2).then(|| (n + 1).to_string()),
            })
        }
        async fn ssm_info_page(
            &self,
            _: &Target,
            _: Option<&[InstanceId]>,
            _: Option<String>,
        ) -> Result<Page<(InstanceId, SsmInfo)>, CloudError> {
            not_scripted(Api::DescribeInstanceInformation)
        }
        async fn create_image(&self, _: &Target, _: &ImageRequest) -> Result<AmiId, CloudError> {
            not_scripted(Api::CreateImage)
        }
        async fn describe_images_page(
            &self,
            _: &Target,
            _: &ImageFilter,
            _: Option<String>,
        ) -> Result<Page<Image>, CloudError> {
            not_scripted(Api::DescribeImages)
        }
        async fn create_tags(&self, _: &Target, _: &[String], _: &Tags) -> Result<(), CloudError> {
            not_scripted(Api::CreateTags)
        }
        async fn start_instances(
            &self,
            _: &Target,
            _: &[InstanceId],
        ) -> Result<Vec<StateChange>, CloudError> {
            not_scripted(Api::StartInstances)
        }
        async fn instance_status_page(
            &self,
            _: &Target,
            _: Option<String>,
        ) -> Result<Page<StatusChecks>, CloudError> {
            not_scripted(Api::DescribeInstanceStatus)
        }
        async fn permitted(&self, _: &Target, probe: &Probe) -> Result<(), CloudError> {
            not_scripted(probe.api())
        }
        async fn stop_instances(
            &self,
            _: &Target,
            _: &[InstanceId],
        ) -> Result<Vec<StateChange>, CloudError> {
            not_scripted(Api::StopInstances)
        }
        async fn deregister_image(&self, _: &Target, _: &AmiId) -> Result<(), CloudError> {
            not_scripted(Api::DeregisterImage)
        }
        async fn describe_snapshots_page(
            &self,
            _: &Target,
            _: &str,
            _: &str,
            _: Option<String>,
        ) -> Result<Page<Snapshot>, CloudError> {
            not_scripted(Api::DescribeSnapshots)
        }
        async fn delete_snapshot(&self, _: &Target, _: &str) -> Result<(), CloudError> {
            not_scripted(Api::DeleteSnapshot)
        }
        async fn delete_tags(&self, _: &Target, _: &[String], _: &Tags) -> Result<(), CloudError> {
            not_scripted(Api::DeleteTags)
        }
        async fn enable_image_deprecation(
            &self,
            _: &Target,
            _: &AmiId,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<(), CloudError> {
            not_scripted(Api::EnableImageDeprecation)
        }

        async fn replace_root_volume(
            &self,
            _: &Target,
            _: &RootTaskRequest,
        ) -> Result<RootTask, CloudError> {
            not_scripted(Api::CreateReplaceRootVolumeTask)
        }

        async fn root_tasks_page(
            &self,
            _: &Target,
            _: &[InstanceId],
            _: Option<String>,
        ) -> Result<Page<RootTask>, CloudError> {
            not_scripted(Api::DescribeReplaceRootVolumeTasks)
        }
        fn api_calls(&self) -> &ApiCalls {
            &self.calls
        }
    }

    fn some(t: &str) -> Option<String> {
        Some(t.to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_page_is_asked_again_not_the_whole_listing() {
        let throttle = error("RequestLimitExceeded");
        let paced = Paced::new(Scripted::failing(vec![(Some("2"), throttle)]));
        let all = paced
            .describe_instances(&target(), Scope::All)
            .await
            .expect("the listing ends");
        assert_eq!(all.len(), 3);
        assert_eq!(
            paced.inner().asked(),
            [None, some("1"), some("2"), some("2")]
        );
        assert_eq!(paced.retries()[&Api::DescribeInstances], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_is_tried_10_times_and_no_answer_3_times() {
        let throttles = (0..12)
            .map(|_| (None, error("RequestLimitExceeded")))
            .collect();
        let paced = Paced::new(Scripted::failing(throttles));
        let e = paced.describe_instances(&target(), Scope::All).await;
        assert!(e.expect_err("throttled throughout").is_throttle());
        assert_eq!(paced.inner().asked().len(), 10);

        let failures = (0..10).map(|_| (None, error("InternalError"))).collect();
        let paced = Paced::new(Scripted::failing(failures));
        let e = paced.describe_instances(&target(), Scope::All).await;
        assert_eq!(e.expect_err("failing throughout").code, "InternalError");
        assert_eq!(paced.inner().asked().len(), 3);

        let refused = vec![(None, error("UnauthorizedOperation"))];
        let paced = Paced::new(Scripted::failing(refused));
        assert!(
            paced
                .describe_instances(&target(), Scope::All)
                .await
                .is_err()
        );
        assert_eq!(paced.inner().asked().len(), 1, "a refusal is final");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_to_retry_holds_no_permit() {
        // One permit. A is throttled first and sleeps before its retry; B,
        // sent meanwhile, is answered at once rather than after A's sleep.
        let throttle = error("RequestLimitExceeded");
        let mut paced = Paced::new(Scripted::failing(vec![(None, throttle)])).with_max_in_flight(1);
        paced.backoff.first = Duration::from_secs(10);
        paced.jitter = Jitter(std::sync::atomic::AtomicU64::new(7));
        let t = target();
        let began = Instant::now();
        let a = async {
            let r = paced.describe_instances_page(&t, Scope::All, None).await;
            (r.is_ok(), began.elapsed())
        };
        let b = async {
            tokio::task::yield_now().await;
            let r = paced
                .describe_instances_page(&t, Scope::All, some("1"))
                .await;
            (r.is_ok(), began.elapsed())
        };
        let ((a_ok, a_took), (b_ok, b_took)) = tokio::join!(a, b);
        assert!(a_ok && b_ok);
        assert!(a_took > Duration::from_millis(100), "A slept: {a_took:?}");
        assert_eq!(b_took, Duration::ZERO, "B waited for A's sleep");
    }

    #[test]
    fn full_jitter_spreads_below_a_doubling_ceiling() {
        let b = Backoff::default();
        let ceilings: Vec<u64> = (1..=8).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 6400, 12800]);
        let jitter = Jitter::seeded();
        let waits: Vec<f64> = (0..2000)
            .map(|_| jitter.up_to(Duration::from_secs(1)).as_secs_f64())
            .collect();
        let mean = waits.iter().sum::<f64>() / waits.len() as f64;
        assert!(waits.iter().all(|w| (0.0..1.0).contains(w)));
        assert!((0.45..0.55).contains(&mean), "mean {mean}");
        assert!(waits.iter().any(|w| *w < 0.05) && waits.iter().any(|w| *w > 0.95));
    }

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
