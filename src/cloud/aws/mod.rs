//! The real cloud: the AWS SDK for Rust. SDK types stop in this folder.
//!
//! Credentials come from the standard chain (environment, profile, SSO,
//! instance role). Each landing zone gets one STS session per run, renewed
//! before it expires (`session`); its clients are made once per region
//! and reused. Endpoints follow the SDK's
//! own `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` handling, or the
//! config's `aws.endpoint_url`.
//!
//! - this file: [`AwsCloud`] and its [`Cloud`] impl, call by call.
//! - `session`: a landing zone's STS role session and its renewal.
//! - `convert`: SDK shapes into the model's, SDK errors into
//!   [`CloudError`]s, and the interceptor that counts every HTTP attempt.

mod convert;
mod organizations;
mod session;

use convert::*;
use session::RoleSession;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::{self as creds};
use aws_sdk_ec2 as ec2;
use aws_sdk_ssm as ssm;
use aws_sdk_sts as sts;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};

use super::{
    Api, ApiCalls, Cloud, CloudError, ErrorKind, ImageFilter, ImageRequest, Page, Probe, Scope,
};
use crate::config::LandingZone;
use crate::model::rollback::{RootTask, RootTaskRequest};
use crate::model::{
    AmiId, Image, Instance, InstanceId, InstanceState, Snapshot, SsmInfo, SsmPing, StateChange,
    StatusChecks, Tags, Target,
};

/// `DescribeInstances`, `DescribeInstanceStatus`: the API's page maximum.
const EC2_PAGE: i32 = 1000;
/// `DescribeImages` page maximum.
const IMAGES_PAGE: i32 = 1000;
/// `DescribeSnapshots` page maximum.
const SNAPSHOTS_PAGE: i32 = 1000;
/// `DescribeInstanceInformation` page maximum.
const SSM_PAGE: i32 = 50;
/// `DescribeReplaceRootVolumeTasks` page maximum.
const ROOT_TASKS_PAGE: i32 = 50;

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

impl AwsCloud {
    /// Loads the shared SDK configuration (credential chain, profile,
    /// endpoints). Makes no call yet.
    pub async fn connect(options: AwsOptions) -> AwsCloud {
        // Fail fast on an unreachable endpoint. The SDK makes one attempt
        // per request: `limit::Paced` retries throttles and requests
        // without an answer itself, per page and per account-region,
        // without holding a concurrency permit while it sleeps. STS keeps
        // the SDK's standard retry (below): a session's renewal is made
        // by the SDK's identity cache, outside `Paced`.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(60))
            .operation_timeout(Duration::from_secs(180))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .timeout_config(timeouts);
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let loaded = loader.load().await;
        // The runner's own secrets, too, never reach a log.
        let base = match loaded.credentials_provider() {
            Some(chain) => loaded
                .to_builder()
                .credentials_provider(creds::SharedCredentialsProvider::new(session::NeverLogged(
                    chain,
                )))
                .build(),
            None => loaded,
        };
        AwsCloud {
            base,
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

    /// An STS client in `region` (else the SDK's own choice), with the
    /// SDK's standard retry: a session's renewal is made by the SDK's
    /// identity cache, outside `limit::Paced`.
    fn sts_client(&self, region: Option<&crate::model::Region>) -> sts::Client {
        let mut conf = sts::config::Builder::from(&self.base)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(100)),
            )
            .interceptor(CountAttempts(Arc::clone(&self.calls)));
        if let Some(region) = region {
            conf = conf.region(sts::config::Region::new(region.as_str().to_owned()));
        }
        sts::Client::from_conf(conf.build())
    }
}

impl AwsCloud {
    /// One request's answer, counted: AWS's error in the model's words.
    fn answer<O, E>(
        &self,
        api: Api,
        result: Result<O, ec2::error::SdkError<E, HttpResponse>>,
    ) -> Result<O, CloudError>
    where
        E: ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        ec2::error::SdkError<E, HttpResponse>: ec2::operation::RequestId,
    {
        let result = result.map_err(|e| api_error(api, e));
        self.calls.record(api, &result);
        result
    }
}

#[async_trait]
impl Cloud for AwsCloud {
    async fn assume_role(
        &self,
        lz: &LandingZone,
        session_name: &str,
    ) -> Result<String, CloudError> {
        // STS in the landing zone's own regions first, then its
        // partition's first region: an account administrator may have
        // deactivated STS in a region (`RegionDisabledException`; IAM user
        // guide, "Manage AWS STS in an AWS Region"), which must not cost
        // the whole landing zone.
        let mut regions: Vec<crate::model::Region> = lz.regions.clone();
        if let Some(home) = lz.regions.first().map(|r| r.partition_home())
            && !regions.contains(&home)
        {
            regions.push(home);
        }
        let mut disabled = Vec::new();
        let (sts, (credentials, arn, duration)) = loop {
            let region = regions.get(disabled.len()).cloned();
            let sts = self.sts_client(region.as_ref());
            match RoleSession::assume(
                &sts,
                &lz.role_arn,
                session_name,
                lz.external_id.as_deref(),
                self.session_duration,
                &self.calls,
            )
            .await
            {
                Ok(done) => break (sts, done),
                Err(e) if e.code == "RegionDisabledException" && region.is_some() => {
                    let Some(region) = region else { return Err(e) };
                    tracing::warn!(
                        landing_zone = %lz.name,
                        %region,
                        "STS is not activated in this region for the account; asking STS in the next region"
                    );
                    disabled.push(region);
                    if disabled.len() == regions.len() {
                        let names: Vec<String> = disabled.iter().map(ToString::to_string).collect();
                        let mut e = e;
                        e.message = format!(
                            "{} (STS is deactivated in every region tried: {})",
                            e.message,
                            names.join(", ")
                        );
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let session = RoleSession {
            sts,
            role_arn: lz.role_arn.clone(),
            session_name: session_name.to_owned(),
            external_id: lz.external_id.clone(),
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

    async fn describe_instances_page(
        &self,
        t: &Target,
        scope: Scope,
        token: Option<String>,
    ) -> Result<Page<Instance>, CloudError> {
        let mut req = self
            .ec2(t)?
            .describe_instances()
            .max_results(EC2_PAGE)
            .set_next_token(token);
        if scope == Scope::Active {
            req = req.filters(filter(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped"],
            ));
        }
        let out = self.answer(Api::DescribeInstances, req.send().await)?;
        Ok(Page {
            items: out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(to_instance)
                .collect(),
            next: out.next_token().map(str::to_owned),
        })
    }

    async fn ssm_info_page(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
        token: Option<String>,
    ) -> Result<Page<(InstanceId, SsmInfo)>, CloudError> {
        let (_, ssm) = self.clients(t)?;
        let mut req = ssm
            .describe_instance_information()
            .max_results(SSM_PAGE)
            .set_next_token(token);
        if let Some(ids) = only {
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
        let out = self.answer(Api::DescribeInstanceInformation, req.send().await)?;
        Ok(Page {
            items: out
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
                .collect(),
            next: out.next_token().map(str::to_owned),
        })
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

    async fn describe_images_page(
        &self,
        t: &Target,
        f: &ImageFilter,
        token: Option<String>,
    ) -> Result<Page<Image>, CloudError> {
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
            .max_results(IMAGES_PAGE)
            .set_next_token(token);
        let out = self.answer(Api::DescribeImages, req.send().await)?;
        Ok(Page {
            items: out.images().iter().filter_map(to_image).collect(),
            next: out.next_token().map(str::to_owned),
        })
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

    async fn instance_status_page(
        &self,
        t: &Target,
        token: Option<String>,
    ) -> Result<Page<StatusChecks>, CloudError> {
        let req = self
            .ec2(t)?
            .describe_instance_status()
            .include_all_instances(true)
            .max_results(EC2_PAGE)
            .set_next_token(token);
        let out = self.answer(Api::DescribeInstanceStatus, req.send().await)?;
        Ok(Page {
            next: out.next_token().map(str::to_owned),
            items: out
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
                .collect(),
        })
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
            Probe::ReplaceRootVolume(req) => root_task_request(&ec2, req)
                .dry_run(true)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| api_error(Api::CreateReplaceRootVolumeTask, e)),
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

    async fn describe_snapshots_page(
        &self,
        t: &Target,
        key: &str,
        value: &str,
        token: Option<String>,
    ) -> Result<Page<Snapshot>, CloudError> {
        let req = self
            .ec2(t)?
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter(&format!("tag:{key}"), &[value]))
            .max_results(SNAPSHOTS_PAGE)
            .set_next_token(token);
        let out = self.answer(Api::DescribeSnapshots, req.send().await)?;
        Ok(Page {
            items: out
                .snapshots()
                .iter()
                .filter_map(|s| {
                    Some(Snapshot {
                        id: s.snapshot_id()?.to_owned(),
                        tags: tags_of(s.tags()),
                        description: s.description().map(str::to_owned),
                        started_at: time(s.start_time()),
                    })
                })
                .collect(),
            next: out.next_token().map(str::to_owned),
        })
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

    async fn replace_root_volume(
        &self,
        t: &Target,
        req: &RootTaskRequest,
    ) -> Result<RootTask, CloudError> {
        let api = Api::CreateReplaceRootVolumeTask;
        let out = self.answer(api, root_task_request(&self.ec2(t)?, req).send().await)?;
        out.replace_root_volume_task()
            .and_then(to_root_task)
            .ok_or_else(|| {
                CloudError::new(api, ErrorKind::Api, "NoTask", "the answer names no task")
            })
    }

    async fn root_tasks_page(
        &self,
        t: &Target,
        instances: &[InstanceId],
        token: Option<String>,
    ) -> Result<Page<RootTask>, CloudError> {
        let ids: Vec<&str> = instances.iter().map(InstanceId::as_str).collect();
        let req = self
            .ec2(t)?
            .describe_replace_root_volume_tasks()
            .filters(filter("instance-id", &ids))
            .max_results(ROOT_TASKS_PAGE)
            .set_next_token(token);
        let out = self.answer(Api::DescribeReplaceRootVolumeTasks, req.send().await)?;
        Ok(Page {
            items: out
                .replace_root_volume_tasks()
                .iter()
                .filter_map(to_root_task)
                .collect(),
            next: out.next_token().map(str::to_owned),
        })
    }

    fn api_calls(&self) -> &ApiCalls {
        &self.calls
    }
}

/// A `CreateReplaceRootVolumeTask` request, as sent and as probed with `DryRun`.
fn root_task_request(
    ec2: &ec2::Client,
    req: &RootTaskRequest,
) -> ec2::operation::create_replace_root_volume_task::builders::CreateReplaceRootVolumeTaskFluentBuilder
{
    ec2.create_replace_root_volume_task()
        .instance_id(req.instance.as_str())
        .image_id(req.image.as_str())
        .client_token(&req.client_token)
        .delete_replaced_root_volume(req.delete_replaced)
        .set_tag_specifications(Some(root_task_tag_specs(req)))
}
