//! From the SDK to the model: shapes, errors, and the count of every HTTP
//! attempt (STS's retries by the SDK included; EC2 and SSM requests are
//! made once by the SDK and retried by `limit::Paced`).

use crate::model::TagMap;
use std::sync::Arc;

use aws_sdk_ec2 as ec2;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use chrono::{DateTime, Utc};
use ec2::error::{ProvideErrorMetadata, SdkError};
use ec2::operation::RequestId;

use super::{Api, ApiCalls, CloudError, ErrorKind, ImageRequest};
use crate::model::rollback::{RootTask, RootTaskRequest, RootTaskState};
use crate::model::{
    AmiId, Image, ImageState, Instance, InstanceId, InstanceState, Platform, StateChange,
};

/// Counts every HTTP attempt the SDK makes, by action, and the throttles
/// among them: each one spent the rate limit, whoever retried it.
#[derive(Debug)]
pub(super) struct CountAttempts(pub(super) Arc<ApiCalls>);

/// Error codes that mean "slow down", found in an error body.
pub(super) const THROTTLE_CODES: [&str; 4] = [
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
pub(super) fn api_error<E>(api: Api, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    SdkError<E, HttpResponse>: RequestId,
{
    // The SDK's whole story, for --verbose: the warning says it in words.
    tracing::debug!(%api, detail = %ec2::error::DisplayErrorContext(&err), "AWS call failed");
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
                "UnreadableAnswer".to_owned(),
                unreadable(&err),
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

/// An answer without AWS's error code: say what came back, in words. An
/// HTML page is a proxy's, a captive portal's or a wrong endpoint's.
fn unreadable<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: std::error::Error + Send + Sync + 'static,
{
    let Some(response) = err.raw_response() else {
        return one_line(&ec2::error::DisplayErrorContext(err).to_string());
    };
    let status = response.status().as_u16();
    let body = response
        .body()
        .bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let head = body.trim_start().to_ascii_lowercase();
    if head.starts_with("<!doctype html") || head.starts_with("<html") || head.contains("<body") {
        return format!(
            "HTTP {status} and an HTML page, not AWS's answer (a proxy, a firewall or a wrong endpoint?)"
        );
    }
    match body.trim().is_empty() {
        true => format!("HTTP {status} and an empty body, not AWS's answer"),
        false => format!(
            "HTTP {status}, not AWS's answer: {}",
            one_line(body.trim()).chars().take(100).collect::<String>()
        ),
    }
}

/// Error chains can carry an HTML body: keep the first line, bounded.
pub(super) fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(300).collect()
}

pub(super) fn time(t: Option<&aws_smithy_types_dt::DateTime>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// The SDK's DateTime, by a short name.
pub(super) mod aws_smithy_types_dt {
    pub(crate) use aws_sdk_ec2::primitives::DateTime;
}

pub(super) fn tags_of(tags: &[ec2::types::Tag]) -> TagMap {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

pub(super) fn sdk_tags<'a>(
    tags: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<ec2::types::Tag> {
    tags.into_iter()
        .map(|(k, v)| ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

pub(super) fn to_instance(i: &ec2::types::Instance) -> Option<Instance> {
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

pub(super) fn to_image(i: &ec2::types::Image) -> Option<Image> {
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
        // The root volume's first: the rest are what a rollback, which
        // replaces the root volume only, does not restore.
        snapshot_ids: {
            let root = i.root_device_name();
            let mut devices: Vec<(bool, &str)> = i
                .block_device_mappings()
                .iter()
                .filter_map(|m| Some((m.device_name() != root, m.ebs()?.snapshot_id()?)))
                .collect();
            devices.sort_by_key(|(not_root, _)| *not_root);
            devices.into_iter().map(|(_, s)| s.to_owned()).collect()
        },
        source_instance: i.source_instance_id().map(InstanceId::new),
        source_image: i.source_image_id().map(AmiId::new),
        owner: i.owner_id().map(str::to_owned),
        created_at: i
            .creation_date()
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&Utc)),
    })
}

/// The instances of a `StartInstances` / `StopInstances` answer.
pub(super) fn state_changes(changes: &[ec2::types::InstanceStateChange]) -> Vec<StateChange> {
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
pub(super) fn image_tag_specs(req: &ImageRequest) -> Vec<ec2::types::TagSpecification> {
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

/// The replace-root-volume task's tag specification.
pub(super) fn root_task_tag_specs(req: &RootTaskRequest) -> Vec<ec2::types::TagSpecification> {
    vec![
        ec2::types::TagSpecification::builder()
            .resource_type(ec2::types::ResourceType::ReplaceRootVolumeTask)
            .set_tags(Some(sdk_tags(req.tags.iter())))
            .build(),
    ]
}

pub(super) fn to_root_task(t: &ec2::types::ReplaceRootVolumeTask) -> Option<RootTask> {
    Some(RootTask {
        id: t.replace_root_volume_task_id()?.to_owned(),
        instance: InstanceId::new(t.instance_id()?),
        image: t.image_id().map(AmiId::new),
        state: t
            .task_state()
            .map_or(RootTaskState::Other(String::new()), |s| {
                RootTaskState::parse(s.as_str())
            }),
        started_at: t.start_time().map(str::to_owned),
        completed_at: t.complete_time().map(str::to_owned),
        tags: tags_of(t.tags()),
    })
}

pub(super) fn filter(name: &str, values: &[&str]) -> ec2::types::Filter {
    ec2::types::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

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
