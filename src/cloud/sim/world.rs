//! One account-region of the simulated cloud: its instances and AMIs,
//! what is due to change and when, its EC2 token buckets.

use crate::model::TagMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::cloud::limit::{Bucket, TokenBucket};
use crate::model::rollback::{RootTask, RootTaskState};
use crate::model::{
    AmiId, Image, ImageState, Instance, InstanceId, InstanceState, SsmInfo, SsmPing, tag,
};

/// A small, fast, reproducible generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The SSM agent on an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    /// Registers and reports Online a little after boot.
    Healthy,
    /// Registered, but lost its connection.
    Lost,
    /// Not installed: never registered.
    Missing,
}

#[derive(Clone, Debug)]
pub(super) struct SimInstance {
    pub(super) instance: Instance,
    pub(super) volume_gb: u32,
    pub(super) agent: Agent,
    /// When the current transition (pending, stopping) completes.
    pub(super) settles_at: Instant,
    /// When it last became running (for SSM and status checks).
    pub(super) running_since: Option<Instant>,
    pub(super) ssm_delay: Duration,
}

impl SimInstance {
    /// Applies transitions that are due.
    pub(super) fn tick(&mut self, now: Instant) {
        let state = &mut self.instance.state;
        if now >= self.settles_at {
            match *state {
                InstanceState::Pending => {
                    *state = InstanceState::Running;
                    self.running_since = Some(self.settles_at);
                }
                InstanceState::Stopping => *state = InstanceState::Stopped,
                InstanceState::ShuttingDown => *state = InstanceState::Terminated,
                _ => {}
            }
        }
    }

    pub(super) fn ssm(&self, now: Instant, never_online: bool) -> Option<SsmInfo> {
        let version = Some("3.3.1142.0".to_owned());
        let ping = match self.agent {
            Agent::Missing => return None,
            Agent::Lost => SsmPing::ConnectionLost,
            Agent::Healthy => match (self.instance.state, self.running_since) {
                (InstanceState::Running, Some(since))
                    if now >= since + self.ssm_delay && !never_online =>
                {
                    SsmPing::Online
                }
                (InstanceState::Running, _) if never_online => SsmPing::ConnectionLost,
                (InstanceState::Running, _) => return None,
                _ => SsmPing::ConnectionLost,
            },
        };
        Some(SsmInfo {
            ping,
            agent_version: version,
        })
    }
}

#[derive(Clone, Debug)]
pub(super) struct SimImage {
    pub(super) image: Image,
    pub(super) available_at: Instant,
    /// Where it ends when `available_at` comes.
    pub(super) fate: ImageState,
}

/// A replace-root-volume task: `pending`, `in-progress` a moment later,
/// then its fate at `done_at`.
#[derive(Clone, Debug)]
pub(super) struct SimRootTask {
    pub(super) task: RootTask,
    pub(super) done_at: Instant,
    /// `done_at` as the task's `completed_at` will say it.
    pub(super) done_text: String,
    pub(super) fate: RootTaskState,
}

/// Something in a world that changes state at a given time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Due {
    Instance(InstanceId),
    /// An AMI, by its slot in [`Images`].
    Image(usize),
    /// A replace-root-volume task, by its place in `World::root_tasks`.
    RootTask(usize),
}

/// A world's AMIs, each in a slot of its own in the order they were made
/// (emptied when deregistered), found by id through an index. Answers that
/// list AMIs list them in that order; the run-id index holds slots, so a
/// run's poll walks its AMIs in memory order instead of looking each up.
#[derive(Debug, Default)]
pub(super) struct Images {
    pub(super) slots: Vec<Option<SimImage>>,
    pub(super) by_id: HashMap<AmiId, usize>,
}

impl Images {
    pub(super) fn slot(&self, id: &AmiId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    pub(super) fn at(&self, slot: usize) -> Option<&SimImage> {
        self.slots.get(slot)?.as_ref()
    }

    pub(super) fn at_mut(&mut self, slot: usize) -> Option<&mut SimImage> {
        self.slots.get_mut(slot)?.as_mut()
    }

    pub(super) fn contains(&self, id: &AmiId) -> bool {
        self.by_id.contains_key(id)
    }

    /// Files a new AMI; returns its slot.
    pub(super) fn insert(&mut self, image: SimImage) -> usize {
        let slot = self.slots.len();
        self.by_id.insert(image.image.id.clone(), slot);
        self.slots.push(Some(image));
        slot
    }

    pub(super) fn remove(&mut self, id: &AmiId) -> Option<(usize, SimImage)> {
        let slot = self.by_id.remove(id)?;
        Some((slot, self.slots.get_mut(slot)?.take()?))
    }

    /// Every AMI, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &SimImage> {
        self.slots.iter().flatten()
    }
}

/// One account-region.
#[derive(Debug, Default)]
pub(super) struct World {
    pub(super) instances: BTreeMap<InstanceId, SimInstance>,
    pub(super) images: Images,
    /// AMI names in use: EC2 refuses a second AMI of the same name.
    pub(super) image_names: HashSet<String>,
    pub(super) snapshot_tags: BTreeMap<String, TagMap>,
    pub(super) buckets: HashMap<Bucket, TokenBucket>,
    /// Transitions to come, earliest first: a call applies only those that
    /// are due instead of looking at the whole world. An entry whose
    /// subject has moved on since is stale and skipped.
    pub(super) due: BinaryHeap<Reverse<(Instant, Due)>>,
    /// AMIs by their `prepatch:run-id` tag, kept exact by [`World::reindex`]
    /// after every change of an AMI's tags: a run polls its AMIs by that tag
    /// a dozen times per account-region, and reading every AMI's tags for it
    /// was an eighth of a large backup.
    pub(super) by_run_id: HashMap<String, BTreeSet<usize>>,
    /// Replace-root-volume tasks, oldest first.
    pub(super) root_tasks: Vec<SimRootTask>,
    /// The task each client token made: the same token gets the same task.
    pub(super) root_task_tokens: HashMap<String, usize>,
}

impl World {
    /// Files the AMI in `slot` under its `prepatch:run-id` tag as it is now
    /// (none if it is gone), after its tags changed or it went.
    pub(super) fn reindex(&mut self, slot: usize, was: Option<&str>) {
        let now = self
            .images
            .at(slot)
            .and_then(|i| i.image.tags.get(tag::RUN_ID));
        if was == now.map(String::as_str) {
            return;
        }
        if let Some(slots) = was.and_then(|w| self.by_run_id.get_mut(w)) {
            slots.remove(&slot);
        }
        if let Some(run) = now {
            match self.by_run_id.get_mut(run.as_str()) {
                Some(slots) => {
                    slots.insert(slot);
                }
                None => {
                    self.by_run_id.insert(run.clone(), BTreeSet::from([slot]));
                }
            }
        }
    }

    /// Changes an AMI's tags, and files it again.
    pub(super) fn retag_image(&mut self, id: &AmiId, change: impl FnOnce(&mut TagMap)) {
        let Some(slot) = self.images.slot(id) else {
            return;
        };
        let Some(img) = self.images.at_mut(slot) else {
            return;
        };
        let was = img.image.tags.get(tag::RUN_ID).cloned();
        change(&mut img.image.tags);
        self.reindex(slot, was.as_deref());
    }

    /// Applies the transitions that are due.
    pub(super) fn tick(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, what))) = self.due.pop() else {
                break;
            };
            match what {
                Due::Instance(id) => {
                    if let Some(i) = self.instances.get_mut(&id) {
                        i.tick(now);
                    }
                }
                Due::Image(slot) => {
                    let Some(img) = self.images.at_mut(slot) else {
                        continue;
                    };
                    if img.image.state != ImageState::Pending
                        || img.fate == ImageState::Pending
                        || now < img.available_at
                    {
                        continue;
                    }
                    img.image.state = img.fate;
                    if img.fate == ImageState::Failed {
                        img.image.state_reason =
                            Some("Client.InternalError: snapshot creation failed".into());
                    }
                }
                Due::RootTask(slot) => {
                    let Some(t) = self.root_tasks.get_mut(slot) else {
                        continue;
                    };
                    if t.task.state.is_final() {
                        continue;
                    }
                    if now >= t.done_at {
                        t.task.state = t.fate.clone();
                        t.task.completed_at = Some(t.done_text.clone());
                    } else {
                        t.task.state = RootTaskState::InProgress;
                    }
                }
            }
        }
    }

    /// `what` changes state at `at`.
    pub(super) fn schedule(&mut self, at: Instant, what: Due) {
        self.due.push(Reverse((at, what)));
    }

    /// An instance enters `state` (pending, stopping), settling at `at`.
    pub(super) fn transition(&mut self, id: &InstanceId, state: InstanceState, at: Instant) {
        if let Some(i) = self.instances.get_mut(id) {
            i.instance.state = state;
            i.settles_at = at;
            if state == InstanceState::Stopping {
                i.running_since = None;
            }
            self.schedule(at, Due::Instance(id.clone()));
        }
    }
}
