//! The vocabulary shared by the cloud, the workflow and the reports.
//!
//! Nothing here knows the AWS SDK: `cloud::aws` converts SDK shapes into
//! these types at the edge, and `report` reads only these types.
//!
//! - this file: ids, instances, images, per-instance records.
//! - [`run`]: a run's record (phases, targets, events), what the workflow
//!   fills in and the journal and the reports read.
//! - [`api`]: the AWS actions, their call counts, and a failed call.
//! - [`format`]: the report formats.
//! - [`ready`]: what makes an instance ready, for validation and rollback.
//! - [`restore`], [`rollback`]: what those commands find and do.
//!
//! Everything else depends on this module, and it on nothing of the crate.

pub mod api;
pub mod format;
pub mod ready;
pub mod restore;
pub mod rollback;
pub mod run;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use api::{Api, CallCount, CloudError, ErrorKind, Failure};
pub use format::Format;
pub use run::{
    Event, LandingZoneFailure, PermissionCheck, Phase, PhaseSummary, Plan, Run, TargetRun,
};

/// A string newtype with `Display`, `AsRef<str>` and ordering.
///
/// The text is shared: an id is cloned into every record, journal step,
/// map key and report row that names it (a large run clones each a dozen
/// times), and a clone is a reference count, not a copy.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(std::sync::Arc<str>);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, shared: a reference count, not a copy.
            pub fn shared(&self) -> std::sync::Arc<str> {
                std::sync::Arc::clone(&self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A 12-digit AWS account id, checked on construction.
    AccountId
);
string_id!(
    /// An EC2 instance id as AWS returned it (`i-0123456789abcdef0`).
    InstanceId
);
string_id!(
    /// An AMI id (`ami-...`).
    AmiId
);
string_id!(
    /// An AWS region name (`eu-west-1`), checked for shape on construction.
    Region
);

impl FromStr for AccountId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(s.into()))
        } else {
            Err(())
        }
    }
}

impl FromStr for Region {
    type Err = ();
    /// Shape only (`xx-name-N`, `xx-gov-name-N`): the list of regions grows,
    /// and AWS itself is the authority on which exist.
    fn from_str(s: &str) -> Result<Self, ()> {
        let parts: Vec<&str> = s.split('-').collect();
        let shaped = parts.len() >= 3
            && parts.iter().all(|p| !p.is_empty())
            && parts[0].len() == 2
            && parts[0].bytes().all(|b| b.is_ascii_lowercase())
            && parts[1..parts.len() - 1]
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_lowercase()))
            && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit());
        if shaped {
            Ok(Region(s.into()))
        } else {
            Err(())
        }
    }
}

impl InstanceId {
    pub fn new(id: impl AsRef<str>) -> Self {
        InstanceId(id.as_ref().into())
    }
}

impl AmiId {
    pub fn new(id: impl AsRef<str>) -> Self {
        AmiId(id.as_ref().into())
    }
}

impl Region {
    pub(crate) fn from_trusted(s: impl AsRef<str>) -> Self {
        Region(s.as_ref().into())
    }

    /// The AWS partition the region is in, as ARNs name it: `aws-cn` for
    /// the China regions, `aws-us-gov` for GovCloud (US), `aws` for the
    /// rest (IAM user guide, "IAM identifiers": ARNs).
    pub fn partition(&self) -> &'static str {
        let r = self.as_str();
        if r.starts_with("cn-") {
            "aws-cn"
        } else if r.starts_with("us-gov-") {
            "aws-us-gov"
        } else if r.starts_with("us-iso-") {
            "aws-iso"
        } else if r.starts_with("us-isob-") {
            "aws-iso-b"
        } else {
            "aws"
        }
    }

    /// The region STS is asked in when none of a landing zone's regions
    /// has it activated: the partition's first region (STS is always on
    /// there; IAM user guide, "Manage AWS STS in an AWS Region").
    pub fn partition_home(&self) -> Region {
        Region::from_trusted(match self.partition() {
            "aws-cn" => "cn-north-1",
            "aws-us-gov" => "us-gov-west-1",
            "aws-iso" => "us-iso-east-1",
            "aws-iso-b" => "us-isob-east-1",
            _ => "us-east-1",
        })
    }
}

/// An account of an AWS Organization, as discovery reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgAccount {
    pub id: String,
    pub name: String,
    /// `ACTIVE`, `SUSPENDED`, `PENDING_CLOSURE`, `CLOSED`... (`Account.State`).
    pub state: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

string_id!(
    /// A landing zone's environment, named as the team names it (`nonprod`,
    /// `preprod`, `prod`, `dr`...): letters, digits, `-` and `_`, checked on
    /// construction. Whether its changes need confirmation, and how long its
    /// backups live, is the config's to say (`environments:`); by default
    /// only `prod` needs confirmation.
    Environment
);

impl Environment {
    /// `prod`: the one environment that needs confirmation by default.
    pub fn is_prod(&self) -> bool {
        self.as_str() == "prod"
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Environment(s.into()))
        } else {
            Err(format!(
                "{s:?} is not an environment name: use letters, digits, '-' and '_' (at most 32), like nonprod, preprod or prod"
            ))
        }
    }
}

/// EC2's instance lifecycle states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
    Unknown,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            _ => InstanceState::Unknown,
        }
    }

    /// Gone for good: nothing to back up, start or validate.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Linux,
    Windows,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Linux => "linux",
            Platform::Windows => "windows",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SSM agent's ping status, as `DescribeInstanceInformation` reports it,
/// plus `NotRegistered` (absent from the answer) and `Unknown` (the call failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SsmPing {
    Online,
    ConnectionLost,
    Inactive,
    NotRegistered,
    Unknown,
}

impl SsmPing {
    pub fn as_str(self) -> &'static str {
        match self {
            SsmPing::Online => "Online",
            SsmPing::ConnectionLost => "ConnectionLost",
            SsmPing::Inactive => "Inactive",
            SsmPing::NotRegistered => "NotRegistered",
            SsmPing::Unknown => "Unknown",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "Online" => SsmPing::Online,
            "ConnectionLost" => SsmPing::ConnectionLost,
            "Inactive" => SsmPing::Inactive,
            _ => SsmPing::Unknown,
        }
    }
}

impl fmt::Display for SsmPing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance as EC2 describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: InstanceId,
    pub state: InstanceState,
    pub platform: Platform,
    pub instance_type: String,
    pub private_ip: Option<String>,
    pub launch_time: Option<DateTime<Utc>>,
    pub tags: TagMap,
}

impl Instance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    pub fn name(&self) -> Option<&str> {
        self.tag("Name")
    }

    /// The EC2 Auto Scaling group the instance belongs to, if any.
    pub fn auto_scaling_group(&self) -> Option<&str> {
        self.tag(tag::AUTO_SCALING_GROUP)
    }
}

/// One answer of SSM `DescribeInstanceInformation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsmInfo {
    pub ping: SsmPing,
    pub agent_version: Option<String>,
}

impl SsmInfo {
    pub fn unregistered() -> Self {
        SsmInfo {
            ping: SsmPing::NotRegistered,
            agent_version: None,
        }
    }

    pub fn unknown() -> Self {
        SsmInfo {
            ping: SsmPing::Unknown,
            agent_version: None,
        }
    }
}

/// The state of an AMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    Pending,
    Available,
    Failed,
    /// Invalid, deregistered, error, ...: final and not usable.
    Unusable,
}

impl ImageState {
    pub fn parse(s: &str) -> Self {
        match s {
            "pending" => ImageState::Pending,
            "available" => ImageState::Available,
            "failed" => ImageState::Failed,
            _ => ImageState::Unusable,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ImageState::Pending => "pending",
            ImageState::Available => "available",
            ImageState::Failed => "failed",
            ImageState::Unusable => "unusable",
        }
    }

    pub fn is_final(self) -> bool {
        self != ImageState::Pending
    }
}

impl fmt::Display for ImageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One AMI as `DescribeImages` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub id: AmiId,
    /// Shared, as the tags and the snapshot ids: a run polls each of its
    /// AMIs a dozen times, and the simulated cloud answers with copies.
    pub name: std::sync::Arc<str>,
    pub state: ImageState,
    pub state_reason: Option<String>,
    pub tags: TagMap,
    /// Read from the block device mappings, the root volume's first; empty
    /// while AWS is still making them.
    pub snapshot_ids: std::sync::Arc<[String]>,
    /// AWS's own record of where the AMI came from: the instance, for an
    /// AMI made by `CreateImage` (`SourceInstanceId`, set by `CreateImage`
    /// alone: a copy has none). This is what makes an AMI a backup.
    pub source_instance: Option<InstanceId>,
    /// The AMI's ancestry (`SourceImageId`): for a `CreateImage` AMI, the
    /// AMI the instance was launched from; for a `CopyImage` copy, the AMI
    /// copied. AWS sets it on both, so it says nothing about which one
    /// this is (EC2 API reference, `Image`).
    pub source_image: Option<AmiId>,
    /// The account that owns the AMI (`OwnerId`).
    pub owner: Option<String>,
    /// When AWS began making it (`CreationDate`).
    pub created_at: Option<DateTime<Utc>>,
}

/// The AMI name of a run's backup of an instance: unique per instance and
/// run, in AMI name characters.
pub fn ami_name(instance: &str, run_id: &str) -> String {
    let name = format!("prepatch-{instance}-{run_id}");
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "()[]./-'@_ ".contains(*c))
        .take(128)
        .collect()
}

/// What a run's journal says of its `CreateImage` for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Witness {
    /// This journal does not have the run (another machine's run, a lost
    /// journal): AWS's own fields decide alone.
    NoRecord,
    /// The journal has the run, and no `CreateImage` for this instance.
    NotAttempted,
    /// A `CreateImage` was sent, and its answer is not known (a crash
    /// before the outcome was written, or an error).
    Attempted,
    /// A `CreateImage` of the run made this AMI.
    Made(AmiId),
}

/// What a journal says of one run, for the checks that must not rest on
/// tags alone: its `CreateImage` calls by instance id (the witness
/// [`Image::backup_of`] asks), and the instances its `StartInstances`
/// found stopped. Empty and not `known` when the journal does not have the
/// run, or there is no journal.
#[derive(Clone, Debug, Default)]
pub struct Witnesses {
    pub known: bool,
    /// How many days the run meant each landing zone's backups to live,
    /// where it recorded it.
    pub retention: std::collections::BTreeMap<String, u32>,
    pub by_instance: std::collections::HashMap<String, Witness>,
    pub started: std::collections::HashSet<String>,
}

impl Witnesses {
    /// How long the run meant the backups of `landing_zone` to live.
    pub fn retention_for(&self, landing_zone: &str) -> Option<u32> {
        self.retention.get(landing_zone).copied()
    }

    /// The journal has a start of this instance by the run.
    pub fn started(&self, instance: &InstanceId) -> bool {
        self.started.contains(instance.as_str())
    }

    pub fn of(&self, instance: &InstanceId) -> Witness {
        match self.by_instance.get(instance.as_str()) {
            Some(w) => w.clone(),
            None if self.known => Witness::NotAttempted,
            None => Witness::NoRecord,
        }
    }
}

impl Image {
    /// Whether this AMI is a backup that prepatch made with `CreateImage`
    /// for `run_id` in `account`, and of which instance; or why not. Tags
    /// only say which instance and run to check against, as anyone can
    /// copy them (`CopyImage` carries them when asked): what decides is
    /// AWS's own record, `SourceInstanceId` (set by `CreateImage` alone;
    /// `SourceImageId` is ancestry, set on backups and copies alike), the
    /// owner, the name prepatch gives, and the journal's `CreateImage`
    /// outcome where the journal has the run.
    pub fn backup_of(
        &self,
        account: &AccountId,
        run_id: &str,
        witness: impl Fn(&InstanceId) -> Witness,
    ) -> Result<InstanceId, String> {
        let tagged = |k: &str| self.tags.get(k).map(String::as_str);
        if tagged(tag::CREATED_BY) != Some(tag::CREATED_BY_VALUE)
            || tagged(tag::RUN_ID) != Some(run_id)
        {
            return Err(format!("not tagged as a backup of run {run_id}"));
        }
        let Some(instance) = tagged(tag::INSTANCE_ID).map(InstanceId::new) else {
            return Err(format!("no {} tag", tag::INSTANCE_ID));
        };
        match (&self.source_instance, &self.source_image) {
            (Some(source), _) if *source != instance => {
                return Err(format!(
                    "AWS says it was made from {source}, not from {instance}"
                ));
            }
            (Some(_), _) => {}
            (None, Some(source)) => {
                return Err(format!(
                    "a copy of {source} (CopyImage: AWS names no source instance), not a backup that prepatch made"
                ));
            }
            (None, None) => {
                return Err("AWS names no source instance for it: not made by CreateImage".into());
            }
        }
        if let Some(owner) = self.owner.as_deref().filter(|o| *o != account.as_str()) {
            return Err(format!("it is owned by {owner}, not by {account}"));
        }
        let name = ami_name(instance.as_str(), run_id);
        if *self.name != *name {
            return Err(format!("its name {:?} is not {name:?}", self.name));
        }
        match witness(&instance) {
            Witness::Made(ami) if ami == self.id => Ok(instance),
            Witness::Made(ami) => Err(format!(
                "the journal has {ami} as this run's backup of {instance}"
            )),
            Witness::NotAttempted => Err(format!(
                "the journal has run {run_id} and no CreateImage of {instance} in it"
            )),
            Witness::NoRecord | Witness::Attempted => Ok(instance),
        }
    }
}

/// One instance in a `StartInstances` or `StopInstances` answer: the state
/// it was in when AWS took the request, and the state it is going to.
/// `previous` is what tells prepatch whether it started (or stopped) the
/// instance, or whether someone else did a moment before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    pub id: InstanceId,
    pub previous: InstanceState,
    pub current: InstanceState,
}

/// `DescribeInstanceStatus` for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusChecks {
    pub id: InstanceId,
    pub state: InstanceState,
    /// `ok`, `impaired`, `initializing`, `insufficient-data`, `not-applicable`.
    pub instance_status: String,
    pub system_status: String,
}

/// An EBS snapshot and its tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub tags: TagMap,
    /// EC2's description: for a snapshot `CreateImage` made, EC2 writes
    /// `Created by CreateImage(<instance>) for <ami>` (what
    /// [`Snapshot::made_for`] reads). `None` where the cloud gives none.
    pub description: Option<String>,
    /// When EC2 began it (`StartTime`): its age by AWS's clock.
    pub started_at: Option<DateTime<Utc>>,
}

impl Snapshot {
    /// The instance and AMI whose `CreateImage` made this snapshot, as
    /// EC2's own description of it says.
    pub fn made_for(&self) -> Option<(InstanceId, AmiId)> {
        let rest = self
            .description
            .as_deref()?
            .strip_prefix("Created by CreateImage(")?;
        let (instance, rest) = rest.split_once(") for ")?;
        let ami = rest.split_whitespace().next()?;
        let id_like = |s: &str, prefix: &str| {
            s.strip_prefix(prefix)
                .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric()))
        };
        (id_like(instance, "i-") && id_like(ami, "ami-"))
            .then(|| (InstanceId::new(instance), AmiId::new(ami)))
    }
}

/// A key-value tag.
pub type Tags = Vec<(String, String)>;

/// An AWS resource's tags, by key. A sorted vector, not a `BTreeMap`: a
/// handful of tags each on 100,000 instances and AMIs, and a B-tree's
/// smallest node holds eleven (it tripled the memory of a large run).
///
/// Shared, copied on write: a resource's tags are read far more often than
/// changed, and every answer of a `Describe*` call (the simulated cloud's
/// too) and every report row hands them on. A clone is a reference count,
/// not a dozen strings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagMap(std::sync::Arc<litemap::LiteMap<String, String>>);

impl TagMap {
    pub fn new() -> Self {
        TagMap::default()
    }
}

impl std::ops::Deref for TagMap {
    type Target = litemap::LiteMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for TagMap {
    fn deref_mut(&mut self) -> &mut Self::Target {
        std::sync::Arc::make_mut(&mut self.0)
    }
}

impl FromIterator<(String, String)> for TagMap {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        TagMap(std::sync::Arc::new(iter.into_iter().collect()))
    }
}

impl Extend<(String, String)> for TagMap {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        let map = std::sync::Arc::make_mut(&mut self.0);
        for (k, v) in iter {
            map.insert(k, v);
        }
    }
}

/// Always a JSON object, even when empty (`LiteMap` writes an empty map
/// as `[]`).
impl Serialize for TagMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter())
    }
}

impl<'de> Deserialize<'de> for TagMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        Ok(map.into_iter().collect())
    }
}

/// The tags prepatch writes. They are how it finds its own work again and
/// how it knows never to touch anything else.
pub mod tag {
    pub const RUN_ID: &str = "prepatch:run-id";
    pub const INSTANCE_ID: &str = "prepatch:instance-id";
    pub const LANDING_ZONE: &str = "prepatch:landing-zone";
    pub const CREATED_BY: &str = "prepatch:created-by";
    pub const CREATED_BY_VALUE: &str = "prepatch";
    pub const EXPIRES_AT: &str = "prepatch:expires-at";
    pub const STARTED_BY: &str = "prepatch:started-by";
    /// On a replace-root-volume task: the run whose backup it restores.
    pub const ROLLBACK_OF: &str = "prepatch:rollback-of";
    pub const PATCH_GROUP: &str = "Patch Group";
    /// Set by EC2 Auto Scaling on every instance of a group (the `aws:`
    /// prefix is AWS's own: no one else can write it; EC2 Auto Scaling
    /// user guide, "Tag Auto Scaling groups and instances").
    pub const AUTO_SCALING_GROUP: &str = "aws:autoscaling:groupName";
    pub const ENVIRONMENT: &str = "Environment";
}

/// Where calls go: one landing zone's account in one region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Target {
    pub landing_zone: String,
    pub account: AccountId,
    pub region: Region,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.landing_zone, self.region)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_twelve_digits() {
        assert!("123456789012".parse::<AccountId>().is_ok());
        assert!("12345".parse::<AccountId>().is_err());
        assert!("12345678901a".parse::<AccountId>().is_err());
    }

    #[test]
    fn regions_have_aws_shape() {
        for ok in ["us-east-1", "eu-west-2", "us-gov-west-1", "ap-southeast-4"] {
            assert!(ok.parse::<Region>().is_ok(), "{ok}");
        }
        for bad in ["useast1", "US-EAST-1", "us-east", "us--1", "us-east-x", ""] {
            assert!(bad.parse::<Region>().is_err(), "{bad}");
        }
    }

    fn backup(source_instance: Option<&str>, source_image: Option<&str>) -> Image {
        let run = "20261207T100000Z-abcd";
        Image {
            id: AmiId::new("ami-0b0b"),
            name: ami_name("i-0a0a", run).into(),
            state: ImageState::Available,
            state_reason: None,
            tags: [
                (tag::CREATED_BY, tag::CREATED_BY_VALUE),
                (tag::RUN_ID, run),
                (tag::INSTANCE_ID, "i-0a0a"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            snapshot_ids: std::sync::Arc::new([]),
            source_instance: source_instance.map(InstanceId::new),
            source_image: source_image.map(AmiId::new),
            owner: Some("111111111111".into()),
            created_at: None,
        }
    }

    #[test]
    fn a_backup_names_its_launch_ami_as_ancestry_and_is_still_a_backup() {
        let account: AccountId = "111111111111".parse().unwrap();
        let run = "20261207T100000Z-abcd";
        // What DescribeImages answers for a CreateImage AMI on AWS: the
        // instance, and the AMI the instance was launched from.
        let made = backup(Some("i-0a0a"), Some("ami-0launch"));
        assert_eq!(
            made.backup_of(&account, run, |_| Witness::NoRecord),
            Ok(InstanceId::new("i-0a0a"))
        );
        assert_eq!(
            made.backup_of(&account, run, |_| Witness::Made(AmiId::new("ami-0b0b"))),
            Ok(InstanceId::new("i-0a0a"))
        );
        // A copy (tags copied with CopyImageTags): no source instance.
        let copy = backup(None, Some("ami-0b0b"));
        let why = copy
            .backup_of(&account, run, |_| Witness::NoRecord)
            .unwrap_err();
        assert!(why.contains("a copy of ami-0b0b"), "{why}");
        let why = backup(None, None)
            .backup_of(&account, run, |_| Witness::NoRecord)
            .unwrap_err();
        assert!(why.contains("no source instance"), "{why}");
        let why = backup(Some("i-0c0c"), Some("ami-0launch"))
            .backup_of(&account, run, |_| Witness::NoRecord)
            .unwrap_err();
        assert!(why.contains("made from i-0c0c"), "{why}");
        let other: AccountId = "222222222222".parse().unwrap();
        let why = made
            .backup_of(&other, run, |_| Witness::NoRecord)
            .unwrap_err();
        assert!(why.contains("owned by 111111111111"), "{why}");
        let why = made
            .backup_of(&account, run, |_| Witness::Made(AmiId::new("ami-0other")))
            .unwrap_err();
        assert!(why.contains("the journal has ami-0other"), "{why}");
    }

    #[test]
    fn a_snapshot_names_the_create_image_that_made_it() {
        let s = |d: Option<&str>| Snapshot {
            id: "snap-1".into(),
            tags: TagMap::new(),
            description: d.map(str::to_owned),
            started_at: None,
        };
        assert_eq!(
            s(Some("Created by CreateImage(i-0a0a) for ami-0b0b")).made_for(),
            Some((InstanceId::new("i-0a0a"), AmiId::new("ami-0b0b")))
        );
        assert_eq!(
            s(Some(
                "Created by CreateImage(i-0a0a) for ami-0b0b from vol-1"
            ))
            .made_for(),
            Some((InstanceId::new("i-0a0a"), AmiId::new("ami-0b0b")))
        );
        assert_eq!(s(Some("Copied for DestinationAmi ami-1")).made_for(), None);
        assert_eq!(
            s(Some("Created by CreateImage(x) for ami-1")).made_for(),
            None
        );
        assert_eq!(s(None).made_for(), None);
    }

    #[test]
    fn regions_name_their_partition() {
        let r = |s: &str| s.parse::<Region>().unwrap();
        assert_eq!(r("eu-west-1").partition(), "aws");
        assert_eq!(r("cn-north-1").partition(), "aws-cn");
        assert_eq!(r("us-gov-west-1").partition(), "aws-us-gov");
        assert_eq!(r("cn-northwest-1").partition_home().as_str(), "cn-north-1");
        assert_eq!(r("ap-south-1").partition_home().as_str(), "us-east-1");
    }
}

/// A run's id: a UTC timestamp (sortable) and a random suffix (unique).
/// It names the report folder, the AMIs and the tags of everything the run did.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    pub fn generate(now: DateTime<Utc>) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        RunId(format!(
            "{}-{:04x}",
            now.format("%Y%m%dT%H%M%SZ"),
            random & 0xffff
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RunId {
    type Err = String;
    /// A given run id (`--run-id`, to continue a run) goes into AMI names,
    /// tags and paths: letters, digits, `-`, `_` and `.` only.
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(RunId(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a run id: use at most 64 letters, digits, '-', '_' or '.'"
            ))
        }
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Phase 2's result for one instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub ami: Option<AmiId>,
    /// `pending`, `available`, `failed`, `unusable`; `None` if no AMI exists.
    pub state: Option<ImageState>,
    pub created_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub snapshot_ids: Vec<String>,
    /// Found from an earlier attempt of the same run, not created now.
    pub reused: bool,
    pub error: Option<Failure>,
}

impl Backup {
    /// No usable AMI: the create failed, or the AMI failed or timed out.
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || matches!(self.state, Some(ImageState::Failed | ImageState::Unusable))
    }

    /// Seconds from creation to completion.
    pub fn duration_secs(&self) -> Option<i64> {
        Some((self.completed_at? - self.created_at?).num_seconds())
    }

    /// The AMI exists (pending or available): the instance may be touched.
    pub fn exists(&self) -> bool {
        matches!(
            self.state,
            Some(ImageState::Pending | ImageState::Available)
        )
    }
}

/// Phase 3's result for one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub initial_state: InstanceState,
    pub final_state: InstanceState,
    /// This run started it (and tagged it `prepatch:started-by`).
    pub started_by_run: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub running_at: Option<DateTime<Utc>>,
    /// EC2's `LaunchTime` once this run's start made it run: AWS moves it
    /// with every start, so a later one is someone else's start.
    #[serde(default)]
    pub launched_at: Option<DateTime<Utc>>,
    pub error: Option<Failure>,
}

/// Phase 4's result for one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub ready: bool,
    /// Every reason it is not ready, e.g. `ssm: ConnectionLost`.
    pub reasons: Vec<String>,
}

impl Verdict {
    pub fn label(&self) -> &'static str {
        if self.ready { "READY" } else { "NOT READY" }
    }
}

/// Everything known about one instance in a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub landing_zone: String,
    pub account: AccountId,
    pub region: Region,
    pub environment: Environment,
    pub instance: Instance,
    pub ssm: SsmInfo,
    pub backup: Option<Backup>,
    pub start: Option<Start>,
    pub verdict: Option<Verdict>,
}

impl Record {
    /// The state now: after a start, its final state; else as scanned.
    pub fn current_state(&self) -> InstanceState {
        self.start
            .as_ref()
            .map_or(self.instance.state, |s| s.final_state)
    }
}
