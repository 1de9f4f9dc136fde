//! [`Journaled`]: a [`Cloud`] whose every mutating call is journaled, so
//! the workflow's phases need no journal code of their own.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::cloud::{
    Api, ApiCalls, Cloud, CloudError, ErrorKind, ImageFilter, ImageRequest, Page, Probe, Scope,
};
use crate::config::LandingZone;
use crate::model::rollback::{RootTask, RootTaskRequest};
use crate::model::{
    AmiId, Image, Instance, InstanceId, Snapshot, SsmInfo, StateChange, StatusChecks, Tags, Target,
};

use super::{Intent, Journal, JournalError};

/// A [`Cloud`] whose mutating calls are journaled: the intent before the
/// call, the outcome after. A `CreateImage` that the journal says an earlier
/// attempt of this run made, and whose AMI still exists (looked up by its
/// name), is not sent again: its AMI is returned.
pub struct Journaled<'a> {
    inner: &'a dyn Cloud,
    journal: &'a Journal,
    run_id: String,
    /// The AMIs earlier attempts of this run made, by instance: read once,
    /// at the first `CreateImage`, not once per instance.
    earlier: std::sync::OnceLock<HashMap<String, String>>,
}

impl<'a> Journaled<'a> {
    pub fn new(inner: &'a dyn Cloud, journal: &'a Journal, run_id: impl Into<String>) -> Self {
        Journaled {
            inner,
            journal,
            run_id: run_id.into(),
            earlier: std::sync::OnceLock::new(),
        }
    }

    /// The AMI an earlier attempt of this run made for `instance`.
    fn earlier_image(&self, instance: &InstanceId) -> Result<Option<String>, JournalError> {
        if self.earlier.get().is_none() {
            let made = self.journal.created_images(&self.run_id)?;
            let _ = self.earlier.set(made);
        }
        Ok(self
            .earlier
            .get()
            .and_then(|m| m.get(instance.as_str()).cloned()))
    }

    fn intent(
        &self,
        api: Api,
        t: &Target,
        resources: &[String],
        detail: Option<&str>,
    ) -> Result<Intent, CloudError> {
        self.journal
            .intent(&self.run_id, api.name(), t, resources, detail)
            .map_err(|e| journal_error(api, &e))
    }

    /// A mutating call, journaled: the intent, the call, its outcome.
    async fn journaled<T>(
        &self,
        api: Api,
        t: &Target,
        resources: &[String],
        detail: Option<&str>,
        call: impl std::future::Future<Output = Result<T, CloudError>>,
    ) -> Result<T, CloudError> {
        let seq = self.intent(api, t, resources, detail)?;
        let result = call.await;
        self.outcome(seq, &result, None);
        result
    }

    fn outcome<T>(&self, seq: Intent, result: &Result<T, CloudError>, value: Option<&str>) {
        let r = match result {
            Ok(_) => Ok(value),
            Err(e) => Err(e.to_string()),
        };
        let r = match &r {
            Ok(v) => Ok(*v),
            Err(e) => Err(e.as_str()),
        };
        if let Err(e) = self.journal.outcome(seq, r) {
            tracing::error!(error = %e, "cannot journal an outcome; resume will find it by tag");
        }
    }
}

/// A journal that cannot take an intent stops the call: nothing is changed
/// off the record.
fn journal_error(api: Api, e: &JournalError) -> CloudError {
    CloudError::new(api, ErrorKind::Api, "JournalWriteFailed", e.to_string())
}

/// What a `StartInstances` answer says, as journaled: the instances this
/// call started (`stopped` before it), then every instance's change.
/// `started: i-a i-b; i-a stopped->pending, i-b stopped->pending, i-c
/// running->running`. Only the ids before the `;` were started by the run.
pub(super) fn start_result(changes: &[StateChange]) -> String {
    let started: Vec<&str> = changes
        .iter()
        .filter(|c| c.previous == crate::model::InstanceState::Stopped)
        .map(|c| c.id.as_str())
        .collect();
    format!("started: {}; {}", started.join(" "), changes_text(changes))
}

/// `i-a stopped->pending, i-b running->running`.
fn changes_text(changes: &[StateChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{} {}->{}", c.id, c.previous, c.current))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The instances a journaled `StartInstances` started: those its answer
/// names as `stopped` before the call. `None` for a step journaled before
/// answers were recorded (no `started:` result).
pub(super) fn started_in(result: Option<&str>) -> Option<Vec<&str>> {
    let list = result?.strip_prefix("started:")?;
    let list = list.split(';').next().unwrap_or_default();
    Some(list.split_whitespace().collect())
}

fn tags_detail(tags: &Tags) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait]
impl Cloud for Journaled<'_> {
    async fn assume_role(
        &self,
        lz: &LandingZone,
        session_name: &str,
    ) -> Result<String, CloudError> {
        self.inner.assume_role(lz, session_name).await
    }

    async fn describe_instances_page(
        &self,
        t: &Target,
        scope: Scope,
        token: Option<String>,
    ) -> Result<Page<Instance>, CloudError> {
        self.inner.describe_instances_page(t, scope, token).await
    }

    async fn ssm_info_page(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
        token: Option<String>,
    ) -> Result<Page<(InstanceId, SsmInfo)>, CloudError> {
        self.inner.ssm_info_page(t, only, token).await
    }

    async fn create_image(&self, t: &Target, req: &ImageRequest) -> Result<AmiId, CloudError> {
        let known = self
            .earlier_image(&req.instance)
            .map_err(|e| journal_error(Api::CreateImage, &e))?;
        if let Some(ami) = known {
            // The journal says it was made (its tag lookup missed it): check
            // that it still exists, by its name, before not making it again.
            let found = self
                .inner
                .describe_images(t, &ImageFilter::Name(req.name.clone()))
                .await?;
            if found.iter().any(|i| i.id.as_str() == ami) {
                tracing::info!(instance = %req.instance, %ami, "the journal has this run's AMI: not created again");
                return Ok(AmiId::new(ami));
            }
            tracing::warn!(instance = %req.instance, %ami, "the journal's AMI is gone: creating it again");
        }
        let seq = self.intent(
            Api::CreateImage,
            t,
            &[req.instance.as_str().to_owned()],
            Some(&req.name),
        )?;
        let result = self.inner.create_image(t, req).await;
        let ami = result.as_ref().ok().map(|a| a.as_str().to_owned());
        self.outcome(seq, &result, ami.as_deref());
        result
    }

    async fn describe_images_page(
        &self,
        t: &Target,
        filter: &ImageFilter,
        token: Option<String>,
    ) -> Result<Page<Image>, CloudError> {
        self.inner.describe_images_page(t, filter, token).await
    }

    async fn create_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.journaled(
            Api::CreateTags,
            t,
            resources,
            Some(&tags_detail(tags)),
            self.inner.create_tags(t, resources, tags),
        )
        .await
    }

    async fn start_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        let list: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        let seq = self.intent(Api::StartInstances, t, &list, None)?;
        let result = self.inner.start_instances(t, ids).await;
        let started = result.as_ref().ok().map(|changes| start_result(changes));
        self.outcome(seq, &result, started.as_deref());
        result
    }

    async fn instance_status_page(
        &self,
        t: &Target,
        token: Option<String>,
    ) -> Result<Page<StatusChecks>, CloudError> {
        self.inner.instance_status_page(t, token).await
    }

    async fn permitted(&self, t: &Target, probe: &Probe) -> Result<(), CloudError> {
        self.inner.permitted(t, probe).await
    }

    async fn stop_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        let list: Vec<String> = ids.iter().map(|i| i.as_str().to_owned()).collect();
        let seq = self.intent(Api::StopInstances, t, &list, None)?;
        let result = self.inner.stop_instances(t, ids).await;
        let answer = result.as_ref().ok().map(|changes| changes_text(changes));
        self.outcome(seq, &result, answer.as_deref());
        result
    }

    async fn deregister_image(&self, t: &Target, ami: &AmiId) -> Result<(), CloudError> {
        self.journaled(
            Api::DeregisterImage,
            t,
            &[ami.as_str().to_owned()],
            None,
            self.inner.deregister_image(t, ami),
        )
        .await
    }

    async fn describe_snapshots_page(
        &self,
        t: &Target,
        key: &str,
        value: &str,
        token: Option<String>,
    ) -> Result<Page<Snapshot>, CloudError> {
        self.inner
            .describe_snapshots_page(t, key, value, token)
            .await
    }

    async fn delete_snapshot(&self, t: &Target, snapshot: &str) -> Result<(), CloudError> {
        self.journaled(
            Api::DeleteSnapshot,
            t,
            &[snapshot.to_owned()],
            None,
            self.inner.delete_snapshot(t, snapshot),
        )
        .await
    }

    async fn delete_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.journaled(
            Api::DeleteTags,
            t,
            resources,
            Some(&tags_detail(tags)),
            self.inner.delete_tags(t, resources, tags),
        )
        .await
    }

    async fn enable_image_deprecation(
        &self,
        t: &Target,
        ami: &AmiId,
        at: DateTime<Utc>,
    ) -> Result<(), CloudError> {
        let when = at.to_rfc3339_opts(SecondsFormat::Secs, true);
        self.journaled(
            Api::EnableImageDeprecation,
            t,
            &[ami.as_str().to_owned()],
            Some(&when),
            self.inner.enable_image_deprecation(t, ami, at),
        )
        .await
    }

    async fn replace_root_volume(
        &self,
        t: &Target,
        req: &RootTaskRequest,
    ) -> Result<RootTask, CloudError> {
        // The intent names the AMI and the client token: a resume finds
        // the task by either; the outcome is the task's id.
        let detail = format!(
            "image {} client-token {}{}",
            req.image,
            req.client_token,
            if req.delete_replaced {
                " delete-replaced-root-volume"
            } else {
                ""
            }
        );
        let seq = self.intent(
            Api::CreateReplaceRootVolumeTask,
            t,
            &[req.instance.as_str().to_owned()],
            Some(&detail),
        )?;
        let result = self.inner.replace_root_volume(t, req).await;
        let id = result.as_ref().map(|task| task.id.clone()).ok();
        self.outcome(seq, &result, id.as_deref());
        result
    }

    async fn root_tasks_page(
        &self,
        t: &Target,
        instances: &[InstanceId],
        token: Option<String>,
    ) -> Result<Page<RootTask>, CloudError> {
        self.inner.root_tasks_page(t, instances, token).await
    }

    fn api_calls(&self) -> &ApiCalls {
        self.inner.api_calls()
    }

    fn is_simulated(&self) -> bool {
        self.inner.is_simulated()
    }
}
