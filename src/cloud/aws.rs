//! The real cloud: the AWS SDK for Rust. SDK types stop in this file.
//!
//! Credentials come from the standard chain (environment, profile, SSO,
//! instance role). Each landing zone gets one STS session per run, renewed
//! before it expires ([`RoleSession`]); its clients are made once per region
//! and reused. Endpoints follow the SDK's
//! own `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` handling, or the
//! config's `aws.endpoint_url`.

use crate::model::TagMap;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::{self as creds, ProvideCredentials};
use aws_sdk_ec2 as ec2;
use aws_sdk_ssm as ssm;
use aws_sdk_sts as sts;
use chrono::{DateTime, Utc};
use ec2::error::{ProvideErrorMetadata, SdkError};
use ec2::operation::RequestId;

use super::{Api, ApiCalls, Cloud, CloudError, ErrorKind, ImageFilter, ImageRequest, Probe, Scope};
use crate::config::LandingZone;
use crate::model::{
    AmiId, Image, ImageState, Instance, InstanceId, InstanceState, Platform, Snapshot, SsmInfo,
    SsmPing, StateChange, StatusChecks, Tags, Target,
};

/// `DescribeInstances`, `DescribeInstanceStatus`: the API's page maximum.
const EC2_PAGE: i32 = 1000;
/// `DescribeImages` page maximum.
const IMAGES_PAGE: i32 = 1000;
/// `DescribeSnapshots` page maximum.
const SNAPSHOTS_PAGE: i32 = 1000;
/// `DescribeInstanceInformation` page maximum.
const SSM_PAGE: i32 = 50;

/// Settings for reaching AWS.
#[derive(Clone, Debug, Default)]
pub struct AwsOptions {
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    pub session_duration: Duration,
}

pub struct AwsCloud {
    base: SdkConfig,
    session_duration: Duration,
    sessions: Mutex<HashMap<String, creds::SharedCredentialsProvider>>,
    clients: Mutex<HashMap<Target, (ec2::Client, ssm::Client)>>,
    calls: Arc<ApiCalls>,
}

/// Renew a session when less than this is left of it.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The longest session STS gives a role assumed with credentials that are
/// themselves a role's (role chaining), and the default `MaxSessionDuration`
/// of a role.
const CHAINED_SESSION_MAX: Duration = Duration::from_secs(3600);

/// A landing zone's STS session, handed to its clients as their credentials
/// provider. The credentials it hands out say they expire
/// [`RENEW_BEFORE`] before they really do: the SDK's identity cache asks
/// its provider again only seconds before the expiry it is told, so this
/// is what makes the session renew five minutes early, and a run longer
/// than `aws.session_duration` (a long AMI wait) keeps working without a
/// request ever carrying credentials about to lapse.
#[derive(Debug)]
struct RoleSession {
    sts: sts::Client,
    role_arn: String,
    session_name: String,
    /// The session length STS accepted (see [`RoleSession::assume`]).
    duration: Duration,
    calls: Arc<ApiCalls>,
    /// The credentials with their real expiry.
    current: tokio::sync::Mutex<ec2::config::Credentials>,
}

/// Whether STS refused a session length: longer than the role's
/// `MaxSessionDuration`, or than the hour that role chaining allows.
fn duration_refused(e: &CloudError) -> bool {
    e.code == "ValidationException" && e.message.contains("DurationSeconds")
}

impl RoleSession {
    /// `AssumeRole`: the credentials, the assumed role's ARN, and the
    /// session length used. A length STS refuses for this caller (role
    /// chaining caps it at an hour, a role's `MaxSessionDuration` may too)
    /// is asked again at one hour, with a warning, rather than failing the
    /// landing zone: renewal keeps a long run going either way.
    async fn assume(
        sts: &sts::Client,
        role_arn: &str,
        session_name: &str,
        duration: Duration,
        calls: &ApiCalls,
    ) -> Result<(ec2::config::Credentials, Option<String>, Duration), CloudError> {
        let ask = |duration: Duration| {
            sts.assume_role()
                .role_arn(role_arn)
                .role_session_name(session_name)
                .duration_seconds(duration.as_secs().try_into().unwrap_or(3600))
                .send()
        };
        let mut duration = duration;
        let mut result = ask(duration)
            .await
            .map_err(|e| api_error(Api::AssumeRole, e));
        calls.record(Api::AssumeRole, &result);
        if let Err(e) = &result {
            if duration > CHAINED_SESSION_MAX && duration_refused(e) {
                tracing::warn!(
                    role = role_arn,
                    asked = duration.as_secs(),
                    error = %e,
                    "STS refused aws.session_duration for this caller; using 3600 s (sessions are renewed before they expire)"
                );
                duration = CHAINED_SESSION_MAX;
                result = ask(duration)
                    .await
                    .map_err(|e| api_error(Api::AssumeRole, e));
                calls.record(Api::AssumeRole, &result);
            }
        }
        let out = result?;
        let Some(c) = out.credentials() else {
            return Err(CloudError::new(
                Api::AssumeRole,
                ErrorKind::Api,
                "NoCredentials",
                "STS returned no credentials",
            ));
        };
        let credentials = ec2::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            SystemTime::try_from(*c.expiration()).ok(),
            "prepatch-assume-role",
        );
        let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
        Ok((credentials, arn, duration))
    }

    /// The current credentials, renewed first if they expire soon, as the
    /// SDK is to see them: expiring [`RENEW_BEFORE`] early.
    async fn credentials(&self) -> Result<ec2::config::Credentials, CloudError> {
        let mut current = self.current.lock().await;
        if expires_soon(current.expiry(), SystemTime::now()) {
            let (fresh, _, _) = Self::assume(
                &self.sts,
                &self.role_arn,
                &self.session_name,
                self.duration,
                &self.calls,
            )
            .await?;
            tracing::info!(role = %self.role_arn, "STS session renewed");
            *current = fresh;
        }
        Ok(renew_early(&current))
    }
}

/// Less than [`RENEW_BEFORE`] is left, with a minute's slack for the
/// identity cache, which asks a few seconds before the expiry it was told.
fn expires_soon(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    expiry.is_some_and(|e| e <= now + RENEW_BEFORE + Duration::from_secs(60))
}

/// The same credentials, saying they expire [`RENEW_BEFORE`] early.
fn renew_early(c: &ec2::config::Credentials) -> ec2::config::Credentials {
    ec2::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        c.session_token().map(str::to_owned),
        c.expiry().map(|e| e - RENEW_BEFORE),
        "prepatch-assume-role",
    )
}

impl ProvideCredentials for RoleSession {
    fn provide_credentials<'a>(&'a self) -> creds::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        creds::future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(creds::error::CredentialsError::provider_error)
        })
    }
}

impl AwsCloud {
    /// Loads the shared SDK configuration (credential chain, profile,
    /// endpoints). Makes no call yet.
    pub async fn connect(options: AwsOptions) -> AwsCloud {
        // Fail fast on an unreachable endpoint; the SDK's standard retry
        // (3 attempts, backoff) covers transient errors and throttles
        // before `limit::Paced` sees them.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .operation_timeout(Duration::from_secs(180))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(timeouts);
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        AwsCloud {
            base: loader.load().await,
            session_duration: options.session_duration,
            sessions: Mutex::default(),
            clients: Mutex::default(),
            calls: Arc::new(ApiCalls::per_attempt()),
        }
    }

    fn clients(&self, t: &Target) -> Result<(ec2::Client, ssm::Client), CloudError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(t) {
            return Ok(c.clone());
        }
        let creds = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&t.landing_zone)
            .cloned()
            .ok_or_else(|| {
                CloudError::new(
                    Api::AssumeRole,
                    ErrorKind::Denied,
                    "NoSession",
                    "the landing zone's role was not assumed",
                )
            })?;
        let region = ec2::config::Region::new(t.region.as_str().to_owned());
        let ec2 = ec2::Client::from_conf(
            ec2::config::Builder::from(&self.base)
                .region(region.clone())
                .credentials_provider(creds.clone())
                .interceptor(CountAttempts(Arc::clone(&self.calls)))
                .build(),
        );
        let ssm = ssm::Client::from_conf(
            ssm::config::Builder::from(&self.base)
                .region(region)
                .credentials_provider(creds)
                .interceptor(CountAttempts(Arc::clone(&self.calls)))
                .build(),
        );
        clients.insert(t.clone(), (ec2.clone(), ssm.clone()));
        Ok((ec2, ssm))
    }

    fn ec2(&self, t: &Target) -> Result<ec2::Client, CloudError> {
        self.clients(t).map(|c| c.0)
    }
}

/// Counts every HTTP attempt the SDK makes, by action, and the throttles
/// among them: the SDK retries a throttle by itself, and those retries are
/// requests that spent the rate limit too.
#[derive(Debug)]
struct CountAttempts(Arc<ApiCalls>);

/// Error codes that mean "slow down", found in an error body.
const THROTTLE_CODES: [&str; 4] = [
    "RequestLimitExceeded",
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
];

impl aws_smithy_runtime_api::client::interceptors::Intercept for CountAttempts {
    fn name(&self) -> &'static str {
        "prepatch::CountAttempts"
    }

    fn read_after_attempt(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut ec2::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let Some(api) = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .and_then(|m| Api::from_name(m.name()))
        else {
            return Ok(());
        };
        let throttled = context.response().is_some_and(|r| {
            let status = r.status().as_u16();
            status == 429
                || (status >= 400
                    && r.body().bytes().is_some_and(|b| {
                        let text = String::from_utf8_lossy(b);
                        THROTTLE_CODES.iter().any(|c| text.contains(c))
                    }))
        });
        self.0.attempt(api, throttled);
        Ok(())
    }
}

/// Converts any SDK error: AWS's code and message, the request id, and
/// whether it was a throttle, a refusal or no answer at all.
fn api_error<E, R>(api: Api, err: SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
    SdkError<E, R>: RequestId,
{
    let request_id = err.request_id().map(str::to_owned);
    let (kind, code, message) = match &err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (
            ErrorKind::Unreachable,
            "Unreachable".to_owned(),
            format!(
                "no answer from AWS: {}",
                ec2::error::DisplayErrorContext(&err)
            ),
        ),
        _ => match err.code() {
            Some(code) => (
                CloudError::kind_of(code),
                code.to_owned(),
                err.message().unwrap_or("(no message)").to_owned(),
            ),
            None => (
                ErrorKind::Api,
                "Unhandled".to_owned(),
                one_line(&ec2::error::DisplayErrorContext(&err).to_string()),
            ),
        },
    };
    CloudError {
        api,
        kind,
        code,
        message,
        request_id,
    }
}

/// Error chains can carry an HTML body: keep the first line, bounded.
fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(300).collect()
}

fn time(t: Option<&aws_smithy_types_dt::DateTime>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// The SDK's DateTime, by a short name.
mod aws_smithy_types_dt {
    pub(super) use aws_sdk_ec2::primitives::DateTime;
}

fn tags_of(tags: &[ec2::types::Tag]) -> TagMap {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn sdk_tags<'a>(tags: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<ec2::types::Tag> {
    tags.into_iter()
        .map(|(k, v)| ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

fn to_instance(i: &ec2::types::Instance) -> Option<Instance> {
    let id = i.instance_id()?;
    let windows = i.platform() == Some(&ec2::types::PlatformValues::Windows)
        || i.platform_details()
            .is_some_and(|d| d.to_ascii_lowercase().contains("windows"));
    Some(Instance {
        id: InstanceId::new(id),
        state: i
            .state()
            .and_then(|s| s.name())
            .map_or(InstanceState::Unknown, |n| InstanceState::parse(n.as_str())),
        platform: if windows {
            Platform::Windows
        } else {
            Platform::Linux
        },
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        private_ip: i.private_ip_address().map(str::to_owned),
        launch_time: time(i.launch_time()),
        tags: tags_of(i.tags()),
    })
}

fn to_image(i: &ec2::types::Image) -> Option<Image> {
    Some(Image {
        id: AmiId::new(i.image_id()?),
        name: i.name().unwrap_or_default().into(),
        state: i
            .state()
            .map_or(ImageState::Unusable, |s| ImageState::parse(s.as_str())),
        state_reason: i
            .state_reason()
            .and_then(|r| r.message())
            .map(str::to_owned),
        tags: tags_of(i.tags()),
        snapshot_ids: i
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs()?.snapshot_id())
            .map(str::to_owned)
            .collect(),
        source_instance: i.source_instance_id().map(InstanceId::new),
        source_image: i.source_image_id().map(AmiId::new),
    })
}

/// The instances of a `StartInstances` / `StopInstances` answer.
fn state_changes(changes: &[ec2::types::InstanceStateChange]) -> Vec<StateChange> {
    let state = |s: Option<&ec2::types::InstanceState>| {
        s.and_then(|s| s.name())
            .map_or(InstanceState::Unknown, |n| InstanceState::parse(n.as_str()))
    };
    changes
        .iter()
        .filter_map(|c| {
            Some(StateChange {
                id: InstanceId::new(c.instance_id()?),
                previous: state(c.previous_state()),
                current: state(c.current_state()),
            })
        })
        .collect()
}

/// The tag specifications of a `CreateImage`: the image's, and its
/// snapshots' when there are any.
fn image_tag_specs(req: &ImageRequest) -> Vec<ec2::types::TagSpecification> {
    let spec = |kind: ec2::types::ResourceType, tags: &crate::model::TagMap| {
        ec2::types::TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(sdk_tags(tags.iter())))
            .build()
    };
    let mut specs = vec![spec(ec2::types::ResourceType::Image, &req.tags)];
    if !req.snapshot_tags.is_empty() {
        specs.push(spec(ec2::types::ResourceType::Snapshot, &req.snapshot_tags));
    }
    specs
}

fn filter(name: &str, values: &[&str]) -> ec2::types::Filter {
    ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

/// Drains a paginator, counting every page as a call.
macro_rules! all_pages {
    ($self:ident, $api:expr, $stream:expr, |$page:ident| $body:expr) => {{
        let mut stream = $stream;
        let mut pages = 0u64;
        let mut out = Vec::new();
        loop {
            match stream.next().await {
                None => break,
                Some(Ok($page)) => {
                    pages += 1;
                    out.extend($body);
                }
                Some(Err(e)) => {
                    let e = api_error($api, e);
                    $self.calls.record_n($api, pages + 1, Some(&e));
                    return Err(e);
                }
            }
        }
        $self.calls.record_n($api, pages.max(1), None);
        out
    }};
}

impl AwsCloud {
    /// Every page of one `DescribeInstanceInformation` request.
    async fn ssm_pages(
        &self,
        req: ssm::operation::describe_instance_information::builders::DescribeInstanceInformationFluentBuilder,
    ) -> Result<Vec<(InstanceId, SsmInfo)>, CloudError> {
        let stream = req.into_paginator().send();
        let info = all_pages!(self, Api::DescribeInstanceInformation, stream, |page| page
            .instance_information_list()
            .iter()
            .filter_map(|i| {
                let ping = i
                    .ping_status()
                    .map_or(SsmPing::Unknown, |p| SsmPing::parse(p.as_str()));
                Some((
                    InstanceId::new(i.instance_id()?),
                    SsmInfo {
                        ping,
                        agent_version: i.agent_version().map(str::to_owned),
                    },
                ))
            })
            .collect::<Vec<_>>());
        Ok(info)
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    async fn assume_role(
        &self,
        lz: &LandingZone,
        session_name: &str,
    ) -> Result<String, CloudError> {
        let region = lz.regions.first().map(|r| r.as_str().to_owned());
        let mut conf = sts::config::Builder::from(&self.base)
            .interceptor(CountAttempts(Arc::clone(&self.calls)));
        if let Some(region) = region {
            conf = conf.region(sts::config::Region::new(region));
        }
        let sts = sts::Client::from_conf(conf.build());
        let (credentials, arn, duration) = RoleSession::assume(
            &sts,
            &lz.role_arn,
            session_name,
            self.session_duration,
            &self.calls,
        )
        .await?;
        let session = RoleSession {
            sts,
            role_arn: lz.role_arn.clone(),
            session_name: session_name.to_owned(),
            duration,
            calls: Arc::clone(&self.calls),
            current: tokio::sync::Mutex::new(credentials),
        };
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                lz.name.clone(),
                creds::SharedCredentialsProvider::new(session),
            );
        Ok(arn.unwrap_or_else(|| lz.role_arn.clone()))
    }

    async fn describe_instances(
        &self,
        t: &Target,
        scope: Scope,
    ) -> Result<Vec<Instance>, CloudError> {
        let mut req = self.ec2(t)?.describe_instances().max_results(EC2_PAGE);
        if scope == Scope::Active {
            req = req.filters(filter(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped"],
            ));
        }
        Ok(all_pages!(
            self,
            Api::DescribeInstances,
            req.into_paginator().send(),
            |page| page
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(to_instance)
                .collect::<Vec<_>>()
        ))
    }

    async fn ssm_info(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
    ) -> Result<BTreeMap<InstanceId, SsmInfo>, CloudError> {
        let (_, ssm) = self.clients(t)?;
        let requests: Vec<Option<&[InstanceId]>> = match only {
            None => vec![None],
            Some(ids) => ids.chunks(super::SSM_FILTER_IDS).map(Some).collect(),
        };
        let mut all = BTreeMap::new();
        for ids in requests {
            let mut req = ssm.describe_instance_information().max_results(SSM_PAGE);
            if let Some(ids) = ids {
                let filter = ssm::types::InstanceInformationStringFilter::builder()
                    .key("InstanceIds")
                    .set_values(Some(ids.iter().map(|i| i.as_str().to_owned()).collect()))
                    .build()
                    .map_err(|e| {
                        CloudError::new(
                            Api::DescribeInstanceInformation,
                            ErrorKind::Api,
                            "InvalidFilter",
                            e.to_string(),
                        )
                    })?;
                req = req.filters(filter);
            }
            all.extend(self.ssm_pages(req).await?);
        }
        Ok(all)
    }

    async fn create_image(&self, t: &Target, req: &ImageRequest) -> Result<AmiId, CloudError> {
        let result = self
            .ec2(t)?
            .create_image()
            .instance_id(req.instance.as_str())
            .name(&req.name)
            .description(&req.description)
            .no_reboot(req.no_reboot)
            .set_tag_specifications(Some(image_tag_specs(req)))
            .send()
            .await
            .map_err(|e| api_error(Api::CreateImage, e));
        self.calls.record(Api::CreateImage, &result);
        let out = result?;
        out.image_id().map(AmiId::new).ok_or_else(|| {
            CloudError::new(
                Api::CreateImage,
                ErrorKind::Api,
                "NoImageId",
                "CreateImage returned no image id",
            )
        })
    }

    async fn describe_images(&self, t: &Target, f: &ImageFilter) -> Result<Vec<Image>, CloudError> {
        let f = match f {
            ImageFilter::Tag(key, value) => Some(filter(&format!("tag:{key}"), &[value])),
            ImageFilter::Name(name) => Some(filter("name", &[name])),
            ImageFilter::Owned => None,
        };
        let req = self
            .ec2(t)?
            .describe_images()
            .owners("self")
            .include_disabled(true)
            .set_filters(f.map(|f| vec![f]))
            .max_results(IMAGES_PAGE);
        Ok(all_pages!(
            self,
            Api::DescribeImages,
            req.into_paginator().send(),
            |page| page
                .images()
                .iter()
                .filter_map(to_image)
                .collect::<Vec<_>>()
        ))
    }

    async fn create_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        let result = self
            .ec2(t)?
            .create_tags()
            .set_resources(Some(resources.to_vec()))
            .set_tags(Some(sdk_tags(tags.iter().map(|(k, v)| (k, v)))))
            .send()
            .await
            .map_err(|e| api_error(Api::CreateTags, e));
        self.calls.record(Api::CreateTags, &result);
        result.map(|_| ())
    }

    async fn start_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        let result = self
            .ec2(t)?
            .start_instances()
            .set_instance_ids(Some(ids.iter().map(|i| i.as_str().to_owned()).collect()))
            .send()
            .await
            .map_err(|e| api_error(Api::StartInstances, e));
        self.calls.record(Api::StartInstances, &result);
        result.map(|out| state_changes(out.starting_instances()))
    }

    async fn instance_status(&self, t: &Target) -> Result<Vec<StatusChecks>, CloudError> {
        let req = self
            .ec2(t)?
            .describe_instance_status()
            .include_all_instances(true)
            .max_results(EC2_PAGE);
        Ok(all_pages!(
            self,
            Api::DescribeInstanceStatus,
            req.into_paginator().send(),
            |page| page
                .instance_statuses()
                .iter()
                .filter_map(|s| {
                    let status = |summary: Option<&ec2::types::InstanceStatusSummary>| {
                        summary
                            .and_then(|s| s.status())
                            .map_or("unknown".to_owned(), |s| s.as_str().to_owned())
                    };
                    Some(StatusChecks {
                        id: InstanceId::new(s.instance_id()?),
                        state: s
                            .instance_state()
                            .and_then(|s| s.name())
                            .map_or(InstanceState::Unknown, |n| InstanceState::parse(n.as_str())),
                        instance_status: status(s.instance_status()),
                        system_status: status(s.system_status()),
                    })
                })
                .collect::<Vec<_>>()
        ))
    }

    async fn permitted(&self, t: &Target, probe: &Probe) -> Result<(), CloudError> {
        let ec2 = self.ec2(t)?;
        let ids = |ids: &[InstanceId]| ids.iter().map(|i| i.as_str().to_owned()).collect();
        let result = match probe {
            Probe::CreateImage(req) => ec2
                .create_image()
                .instance_id(req.instance.as_str())
                .name(&req.name)
                .description(&req.description)
                .no_reboot(req.no_reboot)
                .set_tag_specifications(Some(image_tag_specs(req)))
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_error(Api::CreateImage, e)),
            Probe::CreateTags(id, tags) => ec2
                .create_tags()
                .resources(id.as_str())
                .set_tags(Some(sdk_tags(tags.iter().map(|(k, v)| (k, v)))))
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_error(Api::CreateTags, e)),
            Probe::StartInstances(list) => ec2
                .start_instances()
                .set_instance_ids(Some(ids(list)))
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_error(Api::StartInstances, e)),
        };
        let result = match result {
            // "Request would have succeeded, but DryRun flag is set."
            Err(e) if e.code == "DryRunOperation" => Ok(()),
            Ok(()) => Err(CloudError::new(
                probe.api(),
                ErrorKind::Api,
                "DryRunIgnored",
                "the endpoint ignored DryRun and may have made the change",
            )),
            other => other,
        };
        self.calls.record(probe.api(), &result);
        result
    }

    async fn stop_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        let result = self
            .ec2(t)?
            .stop_instances()
            .set_instance_ids(Some(ids.iter().map(|i| i.as_str().to_owned()).collect()))
            .send()
            .await
            .map_err(|e| api_error(Api::StopInstances, e));
        self.calls.record(Api::StopInstances, &result);
        result.map(|out| state_changes(out.stopping_instances()))
    }

    async fn deregister_image(&self, t: &Target, ami: &AmiId) -> Result<(), CloudError> {
        let result = self
            .ec2(t)?
            .deregister_image()
            .image_id(ami.as_str())
            .send()
            .await
            .map_err(|e| api_error(Api::DeregisterImage, e));
        self.calls.record(Api::DeregisterImage, &result);
        result.map(|_| ())
    }

    async fn describe_snapshots(
        &self,
        t: &Target,
        key: &str,
        value: &str,
    ) -> Result<Vec<Snapshot>, CloudError> {
        let req = self
            .ec2(t)?
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter(&format!("tag:{key}"), &[value]))
            .max_results(SNAPSHOTS_PAGE);
        Ok(all_pages!(
            self,
            Api::DescribeSnapshots,
            req.into_paginator().send(),
            |page| page
                .snapshots()
                .iter()
                .filter_map(|s| Some(Snapshot {
                    id: s.snapshot_id()?.to_owned(),
                    tags: tags_of(s.tags()),
                }))
                .collect::<Vec<_>>()
        ))
    }

    async fn delete_snapshot(&self, t: &Target, snapshot: &str) -> Result<(), CloudError> {
        let result = self
            .ec2(t)?
            .delete_snapshot()
            .snapshot_id(snapshot)
            .send()
            .await
            .map_err(|e| api_error(Api::DeleteSnapshot, e));
        self.calls.record(Api::DeleteSnapshot, &result);
        result.map(|_| ())
    }

    async fn delete_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        let result = self
            .ec2(t)?
            .delete_tags()
            .set_resources(Some(resources.to_vec()))
            .set_tags(Some(sdk_tags(tags.iter().map(|(k, v)| (k, v)))))
            .send()
            .await
            .map_err(|e| api_error(Api::DeleteTags, e));
        self.calls.record(Api::DeleteTags, &result);
        result.map(|_| ())
    }

    async fn enable_image_deprecation(
        &self,
        t: &Target,
        ami: &AmiId,
        at: DateTime<Utc>,
    ) -> Result<(), CloudError> {
        let result = self
            .ec2(t)?
            .enable_image_deprecation()
            .image_id(ami.as_str())
            .deprecate_at(aws_smithy_types_dt::DateTime::from_secs(at.timestamp()))
            .send()
            .await
            .map_err(|e| api_error(Api::EnableImageDeprecation, e));
        self.calls.record(Api::EnableImageDeprecation, &result);
        result.map(|_| ())
    }

    fn api_calls(&self) -> &ApiCalls {
        &self.calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_in: Duration) -> RoleSession {
        // Nothing listens on port 9: a call to STS fails at once.
        let sts = sts::Client::from_conf(
            sts::Config::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(sts::config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .credentials_provider(ec2::config::Credentials::new("a", "b", None, None, "t"))
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        let expiry = SystemTime::now() + expires_in;
        RoleSession {
            sts,
            role_arn: "arn:aws:iam::111111111111:role/R".into(),
            session_name: "prepatch-test".into(),
            duration: Duration::from_secs(3600),
            calls: Arc::default(),
            current: tokio::sync::Mutex::new(ec2::config::Credentials::new(
                "AKID",
                "secret",
                Some("token".into()),
                Some(expiry),
                "t",
            )),
        }
    }

    #[tokio::test]
    async fn a_fresh_session_is_used_as_is() {
        let s = session(Duration::from_secs(3000));
        let real = s.current.lock().await.expiry().expect("an expiry");
        let c = s.credentials().await.expect("no call needed");
        assert_eq!(c.access_key_id(), "AKID");
        assert!(s.calls.snapshot().is_empty(), "no AssumeRole");
        // The SDK's cache refreshes a few seconds before the expiry it is
        // told: told five minutes early, it renews five minutes early.
        assert_eq!(c.expiry(), Some(real - RENEW_BEFORE));
    }

    #[tokio::test]
    async fn the_sdk_cache_asking_at_the_expiry_it_was_told_gets_a_renewal() {
        // Told expiry = real - 5 min; the cache asks ~10 s before that.
        let s = session(RENEW_BEFORE + Duration::from_secs(10));
        let e = s.credentials().await.expect_err("STS is unreachable here");
        assert_eq!(e.api, Api::AssumeRole, "it tried to renew");
    }

    #[test]
    fn only_a_refused_duration_is_asked_again_at_an_hour() {
        let chained = CloudError::new(
            Api::AssumeRole,
            ErrorKind::Api,
            "ValidationException",
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
        );
        assert!(duration_refused(&chained));
        let denied = CloudError::new(Api::AssumeRole, ErrorKind::Denied, "AccessDenied", "no");
        assert!(!duration_refused(&denied));
    }

    #[tokio::test]
    async fn a_session_about_to_expire_is_renewed_with_assume_role() {
        let s = session(Duration::from_secs(60));
        let e = s.credentials().await.expect_err("STS is unreachable here");
        assert_eq!(e.api, Api::AssumeRole);
        assert_eq!(s.calls.snapshot()[&Api::AssumeRole].calls, 1);
        assert!(expires_soon(
            Some(SystemTime::now()),
            SystemTime::now() - Duration::from_secs(1)
        ));
        assert!(
            !expires_soon(None, SystemTime::now()),
            "static keys never expire"
        );
    }

    #[test]
    fn platform_comes_from_either_platform_field() {
        let base = || ec2::types::Instance::builder().instance_id("i-0123");
        let windows = base().platform(ec2::types::PlatformValues::Windows).build();
        assert_eq!(to_instance(&windows).unwrap().platform, Platform::Windows);
        let details = base()
            .platform_details("Windows with SQL Server Standard")
            .build();
        assert_eq!(to_instance(&details).unwrap().platform, Platform::Windows);
        let linux = base().platform_details("Linux/UNIX").build();
        assert_eq!(to_instance(&linux).unwrap().platform, Platform::Linux);
        assert!(
            to_instance(&ec2::types::Instance::builder().build()).is_none(),
            "no id, no instance"
        );
    }
}
