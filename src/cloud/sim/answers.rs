//! The simulated cloud's answers: the [`Cloud`] trait, call by call, with
//! the pages, token buckets and errors AWS would give.

use crate::model::TagMap;
use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;

use crate::cloud::limit::{Bucket, TokenBucket};
use crate::cloud::{
    Api, ApiCalls, Cloud, CloudError, ErrorKind, ImageFilter, ImageRequest, Probe, Scope,
};
use crate::config::LandingZone;
use crate::model::rollback::{RootTask, RootTaskRequest, RootTaskState};
use crate::model::{
    AmiId, Image, ImageState, Instance, InstanceId, InstanceState, SsmInfo, StateChange,
    StatusChecks, Tags, Target, tag,
};

use super::world::{SimImage, SimInstance, SimRootTask};
use super::*;

/// Page sizes of the real APIs, for counting calls as AWS would.
const EC2_PAGE: usize = 1000;
const SSM_PAGE: usize = 50;
const ROOT_TASKS_PAGE: usize = 50;

/// Takes a call's tokens from every bucket it draws on, or none.
pub(super) fn take_tokens(world: &mut World, api: Api, instances: usize) -> bool {
    let needs = Bucket::for_call(api, instances);
    let mut taken = Vec::new();
    for (bucket, n) in needs {
        let b = world
            .buckets
            .entry(bucket)
            .or_insert_with(|| TokenBucket::full(bucket.rate()));
        if b.try_take(n) {
            taken.push((bucket, n));
        } else {
            for (bucket, n) in taken {
                if let Some(b) = world.buckets.get_mut(&bucket) {
                    b.give_back(n);
                }
            }
            return false;
        }
    }
    true
}

fn not_found(api: Api, id: &str) -> CloudError {
    CloudError::new(
        api,
        ErrorKind::Api,
        "InvalidInstanceID.NotFound",
        format!("The instance ID '{id}' does not exist"),
    )
}

#[async_trait]
impl Cloud for SimCloud {
    async fn assume_role(&self, lz: &LandingZone, _session: &str) -> Result<String, CloudError> {
        let denied = self.has_fault(
            |f| matches!(f, Fault::AssumeRoleDenied { landing_zone } if *landing_zone == lz.name),
        );
        let result = if denied {
            Err(CloudError::new(
                Api::AssumeRole,
                ErrorKind::Denied,
                "AccessDenied",
                format!(
                    "User: arn:aws:iam::123456789012:user/operator is not authorized to perform: sts:AssumeRole on resource: {}",
                    lz.role_arn
                ),
            ))
        } else {
            Ok(lz
                .role_arn
                .replace(":iam::", ":sts::")
                .replace(":role/", ":assumed-role/")
                + "/prepatch")
        };
        self.calls.record(Api::AssumeRole, &result);
        result
    }

    async fn describe_instances_page(
        &self,
        t: &Target,
        scope: Scope,
        token: Option<String>,
    ) -> Result<Page<Instance>, CloudError> {
        let wanted = move |i: &&SimInstance| scope == Scope::All || !i.instance.state.is_gone();
        self.read_page(t, Api::DescribeInstances, EC2_PAGE, token, |w, _| {
            w.instances
                .values()
                .filter(wanted)
                .map(|i| i.instance.clone())
                .collect()
        })
    }

    async fn ssm_info_page(
        &self,
        t: &Target,
        only: Option<&[InstanceId]>,
        token: Option<String>,
    ) -> Result<Page<(InstanceId, SsmInfo)>, CloudError> {
        let never_online = self.fault_ids(FaultKind::SsmNeverOnline);
        let asked: Option<HashSet<&InstanceId>> = only.map(|ids| ids.iter().collect());
        self.read_page(
            t,
            Api::DescribeInstanceInformation,
            SSM_PAGE,
            token,
            |w, now| {
                w.instances
                    .values()
                    .filter(|i| asked.as_ref().is_none_or(|a| a.contains(&i.instance.id)))
                    .filter_map(|i| {
                        let info = i.ssm(now, never_online.contains(&i.instance.id))?;
                        Some((i.instance.id.clone(), info))
                    })
                    .collect()
            },
        )
    }

    async fn create_image(&self, t: &Target, req: &ImageRequest) -> Result<AmiId, CloudError> {
        let error = self.instance_fault(FaultKind::CreateImageError, &req.instance);
        let failed = self.instance_fault(FaultKind::AmiFailed, &req.instance);
        let stuck = self.instance_fault(FaultKind::AmiStuck, &req.instance);
        let ami = AmiId::new(self.next("ami"));
        let snaps: std::sync::Arc<[String]> = [self.next("snap")].into();
        let result = self.request(t, Api::CreateImage, 0, |w, now| {
            let Some(i) = w
                .instances
                .get(&req.instance)
                .filter(|i| !i.instance.state.is_gone())
            else {
                return Err(not_found(Api::CreateImage, req.instance.as_str()));
            };
            if error {
                return Err(CloudError::new(
                    Api::CreateImage,
                    ErrorKind::Api,
                    "InvalidParameterValue",
                    format!(
                        "Instance '{}' has an unsupported root device for imaging",
                        req.instance
                    ),
                ));
            }
            if w.image_names.contains(&req.name) {
                return Err(CloudError::new(
                    Api::CreateImage,
                    ErrorKind::Api,
                    "InvalidAMIName.Duplicate",
                    format!("AMI name {} is already in use by an AMI", req.name),
                ));
            }
            // Roughly what EBS snapshots take: a base plus time per GB.
            let takes = Duration::from_secs(90 + u64::from(i.volume_gb) * 2);
            let image = Image {
                id: ami.clone(),
                name: req.name.as_str().into(),
                state: ImageState::Pending,
                state_reason: None,
                tags: req.tags.clone(),
                snapshot_ids: snaps.clone(),
                source_instance: Some(req.instance.clone()),
                // AMI ancestry: the AMI the instance was launched from.
                source_image: Some(AmiId::new(super::fleet::LAUNCH_AMI)),
                owner: Some(t.account.to_string()),
                created_at: Some(self.wall(now)),
            };
            // The snapshot tag specification: tagged as they are made.
            if !req.snapshot_tags.is_empty() {
                for s in snaps.iter() {
                    w.snapshot_tags.insert(s.clone(), req.snapshot_tags.clone());
                }
            }
            let fate = if stuck {
                ImageState::Pending
            } else if failed {
                ImageState::Failed
            } else {
                ImageState::Available
            };
            w.image_names.insert(req.name.clone());
            let slot = w.images.insert(SimImage {
                image,
                available_at: now + takes,
                fate,
            });
            w.reindex(slot, None);
            w.schedule(now + takes, Due::Image(slot));
            Ok(ami.clone())
        });
        if result.is_ok() {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Api::CreateImage, req.instance.shared()));
        }
        result
    }

    async fn describe_images_page(
        &self,
        t: &Target,
        filter: &ImageFilter,
        token: Option<String>,
    ) -> Result<Page<Image>, CloudError> {
        // A scan, not a binary search: with a handful of tags, comparing
        // lengths first settles most keys without looking at their bytes.
        let matches = move |i: &&SimImage| match filter {
            ImageFilter::Tag(k, v) => i.image.tags.iter().any(|(key, val)| key == k && val == v),
            ImageFilter::Name(n) => *i.image.name == **n,
            ImageFilter::Owned => true,
        };
        self.read_page(
            t,
            Api::DescribeImages,
            EC2_PAGE,
            token,
            |w, _| match filter {
                ImageFilter::Tag(k, v) if k == tag::RUN_ID => w
                    .by_run_id
                    .get(v)
                    .into_iter()
                    .flatten()
                    .filter_map(|&slot| w.images.at(slot))
                    .map(|i| i.image.clone())
                    .collect(),
                _ => w
                    .images
                    .iter()
                    .filter(matches)
                    .map(|i| i.image.clone())
                    .collect(),
            },
        )
    }

    async fn create_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        self.request(t, Api::CreateTags, 0, |w, _| {
            let mut fresh: Option<TagMap> = None;
            for r in resources {
                if let Some(i) = w.instances.get_mut(&InstanceId::new(r.clone())) {
                    i.instance.tags.extend(tags.iter().cloned());
                } else if w.images.contains(&AmiId::new(r)) {
                    w.retag_image(&AmiId::new(r), |have| {
                        have.extend(tags.iter().cloned());
                    });
                } else if r.starts_with("snap-") {
                    // Snapshots tagged alike share one map: a run tags
                    // 100,000 of them, a thousand in a call.
                    let have = w.snapshot_tags.entry(r.clone()).or_default();
                    if have.is_empty() {
                        *have = fresh
                            .get_or_insert_with(|| tags.iter().cloned().collect())
                            .clone();
                    } else {
                        have.extend(tags.iter().cloned());
                    }
                } else {
                    return Err(CloudError::new(
                        Api::CreateTags,
                        ErrorKind::Api,
                        "InvalidID",
                        format!("The ID '{r}' is not valid"),
                    ));
                }
            }
            Ok(())
        })
    }

    async fn start_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        if let Some(e) = self.denied(t, Api::StartInstances) {
            self.calls.request(Api::StartInstances, Some(&e));
            return Err(e);
        }
        let capacity = ids
            .iter()
            .any(|id| self.instance_fault(FaultKind::InsufficientCapacity, id));
        let doomed: Vec<&InstanceId> = ids
            .iter()
            .filter(|id| self.instance_fault(FaultKind::TerminatedBeforeStart, id))
            .collect();
        let wall = |at| self.wall(at);
        let result = self.request(t, Api::StartInstances, ids.len(), |w, now| {
            // Terminated under us, between the scan and this call.
            for id in &doomed {
                if let Some(i) = w.instances.get_mut(*id) {
                    i.instance.state = InstanceState::Terminated;
                }
            }
            for id in ids {
                let Some(i) = w.instances.get(id) else {
                    return Err(not_found(Api::StartInstances, id.as_str()));
                };
                if !matches!(i.instance.state, InstanceState::Stopped | InstanceState::Running | InstanceState::Pending) {
                    return Err(CloudError::new(
                        Api::StartInstances,
                        ErrorKind::Api,
                        "IncorrectInstanceState",
                        format!("The instance '{id}' is not in a state from which it can be started."),
                    ));
                }
            }
            if capacity {
                return Err(CloudError::new(
                    Api::StartInstances,
                    ErrorKind::Api,
                    "InsufficientInstanceCapacity",
                    "We currently do not have sufficient capacity in the Availability Zone you requested.",
                ));
            }
            let mut changes = Vec::with_capacity(ids.len());
            for (n, id) in ids.iter().enumerate() {
                let previous = w.instances.get(id).map_or(InstanceState::Unknown, |i| i.instance.state);
                let mut current = previous;
                if previous == InstanceState::Stopped {
                    let at = now + Duration::from_secs(25 + (n as u64 * 7) % 30);
                    w.transition(id, InstanceState::Pending, at);
                    current = InstanceState::Pending;
                    // LaunchTime moves with every start (EC2 API reference,
                    // `Instance`: "the time the instance was launched").
                    if let Some(i) = w.instances.get_mut(id) {
                        i.instance.launch_time = Some(wall(now));
                    }
                }
                changes.push(StateChange { id: id.clone(), previous, current });
            }
            Ok(changes)
        });
        if result.is_ok() {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.extend(ids.iter().map(|id| (Api::StartInstances, id.shared())));
        }
        result
    }

    async fn instance_status_page(
        &self,
        t: &Target,
        token: Option<String>,
    ) -> Result<Page<StatusChecks>, CloudError> {
        let impaired_ids = self.fault_ids(FaultKind::Impaired);
        let impaired = |id: &InstanceId| impaired_ids.contains(id);
        self.read_page(t, Api::DescribeInstanceStatus, EC2_PAGE, token, |w, now| {
            w.instances
                .values()
                .map(|i| {
                    let status = match (i.instance.state, i.running_since) {
                        (InstanceState::Running, _) if impaired(&i.instance.id) => "impaired",
                        (InstanceState::Running, Some(since))
                            if now >= since + Duration::from_secs(120) =>
                        {
                            "ok"
                        }
                        (InstanceState::Running, _) => "initializing",
                        _ => "not-applicable",
                    };
                    StatusChecks {
                        id: i.instance.id.clone(),
                        state: i.instance.state,
                        instance_status: status.to_owned(),
                        system_status: if status == "impaired" {
                            "ok".into()
                        } else {
                            status.to_owned()
                        },
                    }
                })
                .collect()
        })
    }

    async fn permitted(&self, t: &Target, probe: &Probe) -> Result<(), CloudError> {
        let api = probe.api();
        if let Some(e) = self.denied(t, api) {
            self.calls.request(api, Some(&e));
            return Err(e);
        }
        // The request is checked and counted like any other, changing nothing.
        self.request(t, api, 0, |_, _| Ok(()))
    }

    async fn stop_instances(
        &self,
        t: &Target,
        ids: &[InstanceId],
    ) -> Result<Vec<StateChange>, CloudError> {
        let result = self.request(t, Api::StopInstances, ids.len(), |w, now| {
            for id in ids {
                if !w.instances.contains_key(id) {
                    return Err(not_found(Api::StopInstances, id.as_str()));
                }
            }
            let mut changes = Vec::with_capacity(ids.len());
            for (n, id) in ids.iter().enumerate() {
                let previous = w
                    .instances
                    .get(id)
                    .map_or(InstanceState::Unknown, |i| i.instance.state);
                let mut current = previous;
                if matches!(previous, InstanceState::Running | InstanceState::Pending) {
                    let at = now + Duration::from_secs(20 + (n as u64 * 5) % 40);
                    w.transition(id, InstanceState::Stopping, at);
                    current = InstanceState::Stopping;
                }
                changes.push(StateChange {
                    id: id.clone(),
                    previous,
                    current,
                });
            }
            Ok(changes)
        });
        if result.is_ok() {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.extend(ids.iter().map(|id| (Api::StopInstances, id.shared())));
        }
        result
    }

    async fn deregister_image(&self, t: &Target, ami: &AmiId) -> Result<(), CloudError> {
        self.request(t, Api::DeregisterImage, 0, |w, _| {
            let Some((slot, img)) = w.images.remove(ami) else {
                return Err(CloudError::new(
                    Api::DeregisterImage,
                    ErrorKind::Api,
                    "InvalidAMIID.NotFound",
                    format!("The image id '[{ami}]' does not exist"),
                ));
            };
            w.image_names.remove(&*img.image.name);
            w.reindex(slot, img.image.tags.get(tag::RUN_ID).map(String::as_str));
            Ok(())
        })
    }

    async fn describe_snapshots_page(
        &self,
        t: &Target,
        key: &str,
        value: &str,
        token: Option<String>,
    ) -> Result<Page<crate::model::Snapshot>, CloudError> {
        let found = |w: &World| -> Vec<crate::model::Snapshot> {
            w.snapshot_tags
                .iter()
                .filter(|(_, tags)| tags.get(key).map(String::as_str) == Some(value))
                .map(|(id, tags)| crate::model::Snapshot {
                    id: id.clone(),
                    tags: tags.clone(),
                    description: None,
                    started_at: None,
                })
                .collect()
        };
        self.read_page(t, Api::DescribeSnapshots, EC2_PAGE, token, |w, _| found(w))
    }

    async fn delete_snapshot(&self, t: &Target, snapshot: &str) -> Result<(), CloudError> {
        self.request(t, Api::DeleteSnapshot, 0, |w, _| {
            if let Some(img) = w
                .images
                .iter()
                .find(|i| i.image.snapshot_ids.iter().any(|s| s == snapshot))
            {
                return Err(CloudError::new(
                    Api::DeleteSnapshot,
                    ErrorKind::Api,
                    "InvalidSnapshot.InUse",
                    format!(
                        "The snapshot {snapshot} is currently in use by {}",
                        img.image.id
                    ),
                ));
            }
            if w.snapshot_tags.remove(snapshot).is_none() {
                return Err(CloudError::new(
                    Api::DeleteSnapshot,
                    ErrorKind::Api,
                    "InvalidSnapshot.NotFound",
                    format!("The snapshot '{snapshot}' does not exist."),
                ));
            }
            Ok(())
        })
    }

    async fn delete_tags(
        &self,
        t: &Target,
        resources: &[String],
        tags: &Tags,
    ) -> Result<(), CloudError> {
        let drop_from = |have: &mut TagMap| {
            for (k, v) in tags {
                if v.is_empty() || have.get(k) == Some(v) {
                    have.remove(k);
                }
            }
        };
        self.request(t, Api::DeleteTags, 0, |w, _| {
            for r in resources {
                if let Some(i) = w.instances.get_mut(&InstanceId::new(r.clone())) {
                    drop_from(&mut i.instance.tags);
                } else if w.images.contains(&AmiId::new(r)) {
                    w.retag_image(&AmiId::new(r), drop_from);
                } else if let Some(snap) = w.snapshot_tags.get_mut(r) {
                    drop_from(snap);
                }
            }
            Ok(())
        })
    }

    async fn enable_image_deprecation(
        &self,
        t: &Target,
        ami: &AmiId,
        _at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), CloudError> {
        let result = self.request(t, Api::EnableImageDeprecation, 0, |w, _| {
            if w.images.contains(ami) {
                Ok(())
            } else {
                Err(CloudError::new(
                    Api::EnableImageDeprecation,
                    ErrorKind::Api,
                    "InvalidAMIID.NotFound",
                    format!("The image id '[{ami}]' does not exist"),
                ))
            }
        });
        if result.is_ok() {
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Api::EnableImageDeprecation, ami.shared()));
        }
        result
    }

    async fn replace_root_volume(
        &self,
        t: &Target,
        req: &RootTaskRequest,
    ) -> Result<RootTask, CloudError> {
        let api = Api::CreateReplaceRootVolumeTask;
        let fails = self.instance_fault(FaultKind::RollbackFailed, &req.instance);
        let id = self.next("replacevol");
        let mut made = false;
        let result = self.request(t, api, 0, |w, now| {
            if let Some(&slot) = w.root_task_tokens.get(&req.client_token) {
                return Ok(w.root_tasks[slot].task.clone());
            }
            let image = w
                .images
                .slot(&req.image)
                .and_then(|s| w.images.at(s))
                .map(|i| i.image.state);
            match image {
                None => {
                    return Err(CloudError::new(
                        api,
                        ErrorKind::Api,
                        "InvalidAMIID.NotFound",
                        format!("The image id '[{}]' does not exist", req.image),
                    ));
                }
                Some(ImageState::Available) => {}
                Some(state) => {
                    return Err(CloudError::new(
                        api,
                        ErrorKind::Api,
                        "IncorrectState",
                        format!("The image '{}' is {state}, not available", req.image),
                    ));
                }
            }
            let Some(i) = w.instances.get_mut(&req.instance) else {
                return Err(not_found(api, req.instance.as_str()));
            };
            if i.instance.state != InstanceState::Running {
                return Err(CloudError::new(
                    api,
                    ErrorKind::Api,
                    "IncorrectInstanceState",
                    format!(
                        "The instance '{}' is not in a valid state for this operation.",
                        req.instance
                    ),
                ));
            }
            // A new volume from the AMI's snapshot, then a reboot onto it.
            let done_at = now + Duration::from_secs(45 + u64::from(i.volume_gb) / 4);
            if !fails {
                i.running_since = Some(done_at);
            }
            let task = RootTask {
                id: id.clone(),
                instance: req.instance.clone(),
                image: Some(req.image.clone()),
                state: RootTaskState::Pending,
                started_at: Some(self.utc(now)),
                completed_at: None,
                tags: req.tags.clone(),
            };
            let slot = w.root_tasks.len();
            w.root_tasks.push(SimRootTask {
                task: task.clone(),
                done_at,
                done_text: self.utc(done_at),
                fate: if fails {
                    RootTaskState::Failed
                } else {
                    RootTaskState::Succeeded
                },
            });
            w.root_task_tokens.insert(req.client_token.clone(), slot);
            w.schedule(now + Duration::from_secs(2), Due::RootTask(slot));
            w.schedule(done_at, Due::RootTask(slot));
            made = true;
            Ok(task)
        });
        if made {
            if !fails {
                self.repair(&req.instance);
            }
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((api, req.instance.shared()));
        }
        result
    }

    async fn root_tasks_page(
        &self,
        t: &Target,
        instances: &[InstanceId],
        token: Option<String>,
    ) -> Result<Page<RootTask>, CloudError> {
        let asked: HashSet<&InstanceId> = instances.iter().collect();
        self.read_page(
            t,
            Api::DescribeReplaceRootVolumeTasks,
            ROOT_TASKS_PAGE,
            token,
            |w, _| {
                w.root_tasks
                    .iter()
                    .filter(|r| asked.contains(&r.task.instance))
                    .map(|r| r.task.clone())
                    .collect()
            },
        )
    }

    fn api_calls(&self) -> &ApiCalls {
        &self.calls
    }

    fn is_simulated(&self) -> bool {
        true
    }
}
