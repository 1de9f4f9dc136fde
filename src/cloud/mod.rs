//! The cloud prepatch works on, behind one trait.
//!
//! [`Cloud`] is what the workflow calls. Two implementations:
//! - [`aws::AwsCloud`]: the AWS SDK for Rust. SDK types stop there.
//! - [`sim::SimCloud`]: an in-memory fleet on tokio time, for `demo`, fault
//!   tests and benchmarks.
//!
//! [`limit::Paced`] wraps either one with EC2's request buckets, so prepatch
//! spends its rate limit evenly instead of being throttled, and retries the
//! throttles that still happen.

pub mod aws;
pub mod limit;
pub mod sim;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::config::LandingZone;
/// The trait's vocabulary of calls and failures lives in the model, where
/// the reports and the journal read it too.
pub use crate::model::api::{
    Api, CallCount, CloudError, ErrorKind, calls_since, request_id_suffix,
};
use crate::model::rollback::{RootTask, RootTaskRequest};
use crate::model::{
    AmiId, Image, Instance, InstanceId, Phase, Snapshot, SsmInfo, StateChange, StatusChecks,
    TagMap, Tags, Target,
};

/// How much of a target's fleet `describe_instances` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Without terminated and shutting-down instances (the scan).
    Active,
    /// Every instance, so that a poll sees one terminated under it.
    All,
}

/// Which AMIs `describe_images` returns (always owned by the account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageFilter {
    /// AMIs carrying this tag with this value.
    Tag(String, String),
    /// AMIs with this exact name.
    Name(String),
    /// Every AMI the account owns (retention cleanup: which snapshots
    /// other AMIs still use).
    Owned,
}

/// One `CreateImage` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRequest {
    pub instance: InstanceId,
    pub name: String,
    pub description: String,
    pub no_reboot: bool,
    /// Applied to the image in the same call. A shared map: the simulated
    /// cloud keeps it as the image's tags without copying it.
    pub tags: TagMap,
    /// Applied to the AMI's snapshots in the same call (a snapshot
    /// `TagSpecification`): each snapshot is tagged the moment it exists,
    /// whatever happens to the run next.
    pub snapshot_tags: TagMap,
}

/// Values in one EC2 filter (EC2 refuses more than 200).
pub const FILTER_VALUES: usize = 200;

/// Instance ids in one `DescribeInstanceInformation` `InstanceIds` filter
/// (the documented bound of SSM's sibling instance filters: 40 values).
pub const SSM_FILTER_IDS: usize = 40;

/// A change asked of EC2 with its `DryRun` parameter: AWS checks the
/// caller's permission for it and changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
///
/// Each carries the same parameters as the real call it stands for (the
/// tag specifications too): a role that may create an image but not tag
/// it on creation fails the dry run, not the run.
pub enum Probe {
    CreateImage(ImageRequest),
    CreateTags(InstanceId, Tags),
    StartInstances(Vec<InstanceId>),
    ReplaceRootVolume(RootTaskRequest),
}

impl Probe {
    pub fn api(&self) -> Api {
        match self {
            Probe::CreateImage(_) => Api::CreateImage,
            Probe::CreateTags(..) => Api::CreateTags,
            Probe::StartInstances(_) => Api::StartInstances,
            Probe::ReplaceRootVolume(_) => Api::CreateReplaceRootVolumeTask,
        }
    }
}

/// One page of a listing, and the token that asks for the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// `None` on the last page.
    pub next: Option<String>,
}

/// Every page of a listing, asked one at a time: `page(token)` is one
/// request, so whatever paces and retries requests does it per page.
pub async fn all_pages<T, F, Fut>(api: Api, mut page: F) -> Result<Vec<T>, CloudError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, CloudError>>,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    // Every token handed out so far: a service that hands one back again
    // (at once, or after others: A, B, A) would page forever.
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let p = page(token.clone()).await?;
        out.extend(p.items);
        match p.next.filter(|n| !n.is_empty()) {
            Some(next) if !seen.insert(next.clone()) => {
                return Err(CloudError::new(
                    api,
                    ErrorKind::Api,
                    "PaginationLoop",
                    format!(
                        "page {} gave back a page token it had given before: \
                         the listing would never end",
                        seen.len() + 1
                    ),
                ));
            }
            Some(next) => token = Some(next),
            None => return Ok(out),
        }
    }
}

/// A call on many instances at once (`StartInstances`, `StopInstances`),
/// with the instances that make it fail set apart: EC2 fails the whole
/// call for one instance it cannot act on (`IncorrectInstanceState`; EC2
/// API reference, "Error codes"). When a call fails, the instances the
/// error names fail alone and the rest are asked again; an error naming
/// none is narrowed down by halving. A throttle or no answer fails the
/// batch as it is (it says nothing of any one instance). Returns what the
/// calls answered and each instance's failure.
pub async fn isolating<T, F, Fut>(
    ids: Vec<InstanceId>,
    mut call: F,
) -> (Vec<T>, Vec<(InstanceId, CloudError)>)
where
    F: FnMut(Vec<InstanceId>) -> Fut,
    Fut: Future<Output = Result<Vec<T>, CloudError>>,
{
    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut queue = vec![ids];
    while let Some(batch) = queue.pop() {
        if batch.is_empty() {
            continue;
        }
        match call(batch.clone()).await {
            Ok(answer) => done.extend(answer),
            Err(e) if batch.len() == 1 || e.is_throttle() || e.kind == ErrorKind::Unreachable => {
                failed.extend(batch.into_iter().map(|id| (id, e.clone())));
            }
            Err(e) => {
                let (named, rest): (Vec<_>, Vec<_>) = batch
                    .into_iter()
                    .partition(|id| e.message.contains(id.as_str()));
                if named.is_empty() {
                    let half = rest.len() / 2;
                    let (a, b) = rest.split_at(half);
                    queue.push(a.to_vec());
                    queue.push(b.to_vec());
                } else {
                    failed.extend(named.into_iter().map(|id| (id, e.clone())));
                    queue.push(rest);
                }
            }
        }
    }
    (done, failed)
}

/// The AWS API, as prepatch uses it. Every method is one conversation with
/// AWS for one account-region ([`Target`]); none is called per instance
/// except `create_image`, which AWS offers only so.
///
/// Listings come a page a request (the `*_page` methods); the provided
/// methods beside them ask for every page in turn, so that a wrapper
/// ([`limit::Paced`]) paces and retries each page, not the listing.
#[async_trait]
pub trait Cloud: Send + Sync {
    /// Assumes the landing zone's role (STS) and keeps the session for the
    /// calls to its targets. Returns the assumed role's ARN (the actor).
    async fn assume_role(&self, lz: &LandingZone, session_name: &str)
    -> Result<String, CloudError>;

    /// One page of `DescribeInstances`, at the API's maximum page size.
    async fn describe_instances_page(
        &self,
        t: &Target,
        scope: Scope,
        token: Option<String>,
    ) -> Result<Page<Instance>, CloudError>;

    /// `DescribeInstances`, every page.
    async fn describe_instances(
        &self,
        t: &Target,
        scope: Scope,
    ) -> Result<Vec<Instance>, CloudError> {
        all_pages(Api::DescribeInstances, |token| {
            self.describe_instances_page(t, scope, token)
        })
        .await
    }

    /// One page of SSM `DescribeInstanceInformation`: the whole
    /// account-region, or `only` these instances (an `InstanceIds` filter
    /// of at most [`SSM_FILTER_IDS`]).
    async fn ssm_info_page(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
        token: Option<String>,
    ) -> Result<Page<(InstanceId, SsmInfo)>, CloudError>;

    /// SSM `DescribeInstanceInformation`, every page, keyed by instance id:
    /// the whole account-region, or `only` these instances
    /// ([`SSM_FILTER_IDS`] a request). Instances absent from the map are
    /// not registered with SSM.
    async fn ssm_info(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
    ) -> Result<BTreeMap<InstanceId, SsmInfo>, CloudError> {
        let requests: Vec<Option<&[InstanceId]>> = match only {
            None => vec![None],
            Some(ids) => ids.chunks(SSM_FILTER_IDS).map(Some).collect(),
        };
        let mut all = BTreeMap::new();
        for ids in requests {
            all.extend(
                all_pages(Api::DescribeInstanceInformation, |token| {
                    self.ssm_info_page(t, ids, token)
                })
                .await?,
            );
        }
        Ok(all)
    }

    /// `CreateImage` with the image's tags.
    async fn create_image(&self, t: &Target, req: &ImageRequest) -> Result<AmiId, CloudError>;

    /// One page of `DescribeImages` owned by the account, disabled AMIs
    /// included (`IncludeDisabled`): a run's own AMIs must be found
    /// whatever someone did to them since.
    async fn describe_images_page(
        &self,
        t: &Target,
        filter: &ImageFilter,
        token: Option<String>,
    ) -> Result<Page<Image>, CloudError>;

    /// `DescribeImages`, every page.
    async fn describe_images(
        &self,
        t: &Target,
        filter: &ImageFilter,
    ) -> Result<Vec<Image>, CloudError> {
        all_pages(Api::DescribeImages, |token| {
            self.describe_images_page(t, filter, token)
        })
        .await
    }

    /// `CreateTags` on many resources at once.
    async fn create_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError>;

    /// `StartInstances` for many instances at once: each instance's
    /// previous and current state, as AWS answered. An error fails the call
    /// for all of them; the workflow isolates the culprit.
    async fn start_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError>;

    /// One page of `DescribeInstanceStatus` with `IncludeAllInstances`.
    async fn instance_status_page(
        &self,
        t: &Target,
        token: Option<String>,
    ) -> Result<Page<StatusChecks>, CloudError>;

    /// `DescribeInstanceStatus`, every page.
    async fn instance_status(&self, t: &Target) -> Result<Vec<StatusChecks>, CloudError> {
        all_pages(Api::DescribeInstanceStatus, |token| {
            self.instance_status_page(t, token)
        })
        .await
    }

    /// Sends `probe` with `DryRun=true`: `Ok` when AWS answers that the
    /// request would have succeeded (`DryRunOperation`), the refusal
    /// otherwise (`UnauthorizedOperation` is [`ErrorKind::Denied`]).
    async fn permitted(&self, t: &Target, probe: &Probe) -> Result<(), CloudError>;

    /// `StopInstances` for many instances at once (restore only): each
    /// instance's previous and current state, as AWS answered.
    async fn stop_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError>;

    /// `DeregisterImage` (retention cleanup only). Leaves the snapshots.
    async fn deregister_image(&self, t: &Target, ami: &AmiId) -> Result<(), CloudError>;

    /// One page of `DescribeSnapshots` owned by the account carrying tag
    /// `key=value`.
    async fn describe_snapshots_page(
        &self,
        t: &Target,
        key: &str,
        value: &str,
        token: Option<String>,
    ) -> Result<Page<Snapshot>, CloudError>;

    /// `DescribeSnapshots`, every page.
    async fn describe_snapshots(
        &self,
        t: &Target,
        key: &str,
        value: &str,
    ) -> Result<Vec<Snapshot>, CloudError> {
        all_pages(Api::DescribeSnapshots, |token| {
            self.describe_snapshots_page(t, key, value, token)
        })
        .await
    }

    /// `DeleteSnapshot` (retention cleanup only).
    async fn delete_snapshot(&self, t: &Target, snapshot: &str) -> Result<(), CloudError>;

    /// `DeleteTags` on many resources: each tag is removed only where it
    /// has the given value.
    async fn delete_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError>;

    /// `EnableImageDeprecation`: the AMI shows as deprecated from `at`.
    async fn enable_image_deprecation(
        &self,
        t: &Target,
        ami: &AmiId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), CloudError>;

    /// `CreateReplaceRootVolumeTask` from an AMI: the instance's root
    /// volume is replaced by one restored from the AMI (the instance keeps
    /// its id, addresses and data volumes). Idempotent by its client token.
    async fn replace_root_volume(
        &self,
        t: &Target,
        req: &RootTaskRequest,
    ) -> Result<RootTask, CloudError>;

    /// One page of `DescribeReplaceRootVolumeTasks` for these instances
    /// (an `instance-id` filter: every task of theirs, prepatch's or not).
    async fn root_tasks_page(
        &self,
        t: &Target,
        instances: &[InstanceId],
        token: Option<String>,
    ) -> Result<Page<RootTask>, CloudError>;

    /// Every replace-root-volume task of these instances: a listing per
    /// [`FILTER_VALUES`] instances.
    async fn root_tasks(
        &self,
        t: &Target,
        instances: &[InstanceId],
    ) -> Result<Vec<RootTask>, CloudError> {
        let mut tasks = Vec::new();
        for ids in instances.chunks(FILTER_VALUES) {
            tasks.extend(
                all_pages(Api::DescribeReplaceRootVolumeTasks, |token| {
                    self.root_tasks_page(t, ids, token)
                })
                .await?,
            );
        }
        Ok(tasks)
    }

    /// The calls made so far, by action.
    fn api_calls(&self) -> &ApiCalls;

    /// True for the in-memory simulator: every output says so.
    fn is_simulated(&self) -> bool {
        false
    }
}

tokio::task_local! {
    /// The phase a request is made for: account-regions go through the
    /// phases each at its own pace, so a phase's calls are told by this,
    /// not by when they were made.
    static PHASE: Phase;
}

/// Runs `work` with its requests counted for `phase` too.
pub async fn counted_for<F: Future>(phase: Phase, work: F) -> F::Output {
    PHASE.scope(phase, work).await
}

/// The tool counts its own calls: one entry per action, counted where the
/// request is sent, so throttled and failed calls count too; and again by
/// phase, for requests made inside [`counted_for`].
#[derive(Debug, Default)]
pub struct ApiCalls {
    counts: Mutex<BTreeMap<Api, CallCount>>,
    by_phase: Mutex<BTreeMap<(Phase, Api), CallCount>>,
    /// Requests and throttles are counted per HTTP attempt, by
    /// [`ApiCalls::attempt`] (the AWS SDK's interceptor), not per call.
    per_attempt: bool,
}

impl ApiCalls {
    /// Counts that [`ApiCalls::attempt`] feeds with every HTTP attempt.
    pub fn per_attempt() -> ApiCalls {
        ApiCalls {
            per_attempt: true,
            ..ApiCalls::default()
        }
    }

    /// One request (one page of a listing), and how it ended.
    pub fn record<T>(&self, api: Api, result: &Result<T, CloudError>) {
        self.request(api, result.as_ref().err());
    }

    /// One request that ended with `error`, or was answered.
    pub fn request(&self, api: Api, error: Option<&CloudError>) {
        let per_attempt = self.per_attempt;
        self.count(api, |c| {
            match (per_attempt, error) {
                (false, Some(e)) if e.is_throttle() => c.throttled += 1,
                (_, Some(e)) if !e.is_throttle() => c.errors += 1,
                _ => {}
            }
            if !per_attempt {
                c.calls += 1;
            }
        });
    }

    /// One HTTP attempt of `api`, and whether it was answered with a throttle.
    pub fn attempt(&self, api: Api, throttled: bool) {
        self.count(api, |c| {
            c.calls += 1;
            c.throttled += u64::from(throttled);
        });
    }

    /// Applies `change` to the action's count, and to its phase's.
    fn count(&self, api: Api, change: impl Fn(&mut CallCount)) {
        change(
            self.counts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(api)
                .or_default(),
        );
        if let Ok(phase) = PHASE.try_with(|p| *p) {
            change(
                self.by_phase
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry((phase, api))
                    .or_default(),
            );
        }
    }

    pub fn snapshot(&self) -> BTreeMap<Api, CallCount> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The requests made for `phase` (inside [`counted_for`]), by action.
    pub fn of_phase(&self, phase: Phase) -> BTreeMap<Api, CallCount> {
        self.by_phase
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|((p, _), _)| *p == phase)
            .map(|((_, api), c)| (*api, *c))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_request_id() {
        let mut e = CloudError::new(
            Api::CreateImage,
            ErrorKind::Api,
            "InvalidParameterValue",
            "bad root device",
        );
        assert_eq!(
            e.to_string(),
            "CreateImage: InvalidParameterValue: bad root device"
        );
        e.request_id = Some("59a1b8b6-2f4c-4c4e-9d1e-0c6d2b0f1a7e".into());
        let text = format!("backup: {e}");
        assert_eq!(
            text,
            "backup: CreateImage: InvalidParameterValue: bad root device \
             (request id 59a1b8b6-2f4c-4c4e-9d1e-0c6d2b0f1a7e)"
        );
    }

    #[tokio::test]
    async fn a_listing_that_gives_a_token_back_stops_with_an_error() {
        // A, B, A: each token differs from the one before, and the listing
        // still never ends.
        let tokens = ["A", "B", "A", "B"];
        let mut asked = 0;
        let result = all_pages(Api::DescribeImages, |_| {
            let next = tokens.get(asked).map(|t| t.to_string());
            asked += 1;
            async move {
                Ok(Page {
                    items: vec![1],
                    next,
                })
            }
        })
        .await;
        let e = result.expect_err("a cycle is an error");
        assert_eq!(e.code, "PaginationLoop");
        assert_eq!(asked, 3, "stops at the first token seen before");
        let pages = all_pages(Api::DescribeImages, |t: Option<String>| async move {
            let next = match t.as_deref() {
                None => Some("A".to_owned()),
                Some("A") => Some("B".to_owned()),
                _ => None,
            };
            Ok(Page {
                items: vec![1],
                next,
            })
        })
        .await
        .expect("three pages");
        assert_eq!(pages.len(), 3);
    }
}
