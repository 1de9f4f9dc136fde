//! What the simulated cloud can be made to get wrong, and where: each
//! fault kind, its victim, and the checks the calls make against them.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use crate::cloud::{Api, CloudError, ErrorKind};
use crate::config::LandingZone;
use crate::model::{InstanceId, InstanceState, Region, Target};

use super::SimCloud;
use super::world::{Rng, SimInstance};

/// A fault to inject, by kind; [`SimCloud::inject`] picks its victim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    AssumeRoleDenied,
    RegionUnreachable,
    CreateImageError,
    AmiFailed,
    AmiStuck,
    InsufficientCapacity,
    TerminatedBeforeStart,
    SsmNeverOnline,
    Impaired,
    StartDenied,
    RollbackFailed,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::AssumeRoleDenied,
        FaultKind::RegionUnreachable,
        FaultKind::CreateImageError,
        FaultKind::AmiFailed,
        FaultKind::AmiStuck,
        FaultKind::InsufficientCapacity,
        FaultKind::TerminatedBeforeStart,
        FaultKind::SsmNeverOnline,
        FaultKind::Impaired,
        FaultKind::StartDenied,
        FaultKind::RollbackFailed,
    ];

    /// The demo's default: a few instance faults, no landing zone lost.
    pub const DEMO: [FaultKind; 4] = [
        FaultKind::AmiFailed,
        FaultKind::InsufficientCapacity,
        FaultKind::SsmNeverOnline,
        FaultKind::Impaired,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::AssumeRoleDenied => "assume-role-denied",
            FaultKind::RegionUnreachable => "region-unreachable",
            FaultKind::CreateImageError => "create-image-error",
            FaultKind::AmiFailed => "ami-failed",
            FaultKind::AmiStuck => "ami-stuck",
            FaultKind::InsufficientCapacity => "insufficient-capacity",
            FaultKind::TerminatedBeforeStart => "terminated-before-start",
            FaultKind::SsmNeverOnline => "ssm-never-online",
            FaultKind::Impaired => "impaired",
            FaultKind::StartDenied => "start-denied",
            FaultKind::RollbackFailed => "rollback-failed",
        }
    }

    /// `none`, `all`, `default`, or a comma-separated list of names.
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        match s {
            "none" => return Ok(vec![]),
            "all" => return Ok(FaultKind::ALL.to_vec()),
            "default" => return Ok(FaultKind::DEMO.to_vec()),
            _ => {}
        }
        s.split(',').map(|n| n.trim().parse()).collect()
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown fault {s:?}: use none, all, default, or some of {}",
                    names.join(", ")
                )
            })
    }
}

/// An injected fault and where it strikes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    AssumeRoleDenied {
        landing_zone: String,
    },
    RegionUnreachable {
        landing_zone: String,
        region: Region,
    },
    CreateImageError(InstanceId),
    AmiFailed(InstanceId),
    AmiStuck(InstanceId),
    InsufficientCapacity(InstanceId),
    TerminatedBeforeStart(InstanceId),
    SsmNeverOnline(InstanceId),
    Impaired(InstanceId),
    /// The landing zone's role lacks `ec2:StartInstances`.
    StartDenied {
        landing_zone: String,
    },
    /// A replace-root-volume task of this instance ends `failed`.
    RollbackFailed(InstanceId),
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::AssumeRoleDenied { .. } => FaultKind::AssumeRoleDenied,
            Fault::RegionUnreachable { .. } => FaultKind::RegionUnreachable,
            Fault::CreateImageError(_) => FaultKind::CreateImageError,
            Fault::AmiFailed(_) => FaultKind::AmiFailed,
            Fault::AmiStuck(_) => FaultKind::AmiStuck,
            Fault::InsufficientCapacity(_) => FaultKind::InsufficientCapacity,
            Fault::TerminatedBeforeStart(_) => FaultKind::TerminatedBeforeStart,
            Fault::SsmNeverOnline(_) => FaultKind::SsmNeverOnline,
            Fault::Impaired(_) => FaultKind::Impaired,
            Fault::StartDenied { .. } => FaultKind::StartDenied,
            Fault::RollbackFailed(_) => FaultKind::RollbackFailed,
        }
    }

    /// The instance it strikes, if it strikes one.
    pub fn instance(&self) -> Option<&InstanceId> {
        match self {
            Fault::AssumeRoleDenied { .. }
            | Fault::RegionUnreachable { .. }
            | Fault::StartDenied { .. } => None,
            Fault::CreateImageError(i)
            | Fault::AmiFailed(i)
            | Fault::AmiStuck(i)
            | Fault::InsufficientCapacity(i)
            | Fault::TerminatedBeforeStart(i)
            | Fault::SsmNeverOnline(i)
            | Fault::Impaired(i)
            | Fault::RollbackFailed(i) => Some(i),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::AssumeRoleDenied { landing_zone } | Fault::StartDenied { landing_zone } => {
                write!(f, "{} in {landing_zone}", self.kind())
            }
            Fault::RegionUnreachable {
                landing_zone,
                region,
            } => {
                write!(f, "{} in {landing_zone}/{region}", self.kind())
            }
            _ => write!(
                f,
                "{} on {}",
                self.kind(),
                self.instance().map(|i| i.as_str()).unwrap_or_default()
            ),
        }
    }
}

impl SimCloud {
    /// Injects a fault.
    pub fn fault(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(fault);
    }

    /// Injects one fault of each kind, each on a victim chosen from the
    /// seed: landing zone faults on the last nonprod landing zone, start
    /// faults on stopped instances. Returns what was injected.
    pub fn inject(
        &self,
        kinds: &[FaultKind],
        landing_zones: &[LandingZone],
        seed: u64,
    ) -> Vec<Fault> {
        if kinds.is_empty() {
            return Vec::new();
        }
        let mut rng = Rng::new(seed ^ 0xFA17);
        let victim_lz = landing_zones
            .iter()
            .rev()
            .find(|lz| lz.environment.as_str() == "nonprod")
            .or(landing_zones.last());
        let (running, stopped): (Vec<InstanceId>, Vec<InstanceId>) = {
            let worlds = self.worlds.lock().unwrap_or_else(|e| e.into_inner());
            let mut all: Vec<&SimInstance> =
                worlds.values().flat_map(|w| w.instances.values()).collect();
            all.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
            let ids = |s: InstanceState| {
                all.iter()
                    .filter(|i| i.instance.state == s)
                    .map(|i| i.instance.id.clone())
                    .collect::<Vec<_>>()
            };
            (ids(InstanceState::Running), ids(InstanceState::Stopped))
        };
        let mut used = BTreeSet::new();
        let mut pick = |from: &[InstanceId], rng: &mut Rng| -> Option<InstanceId> {
            let free: Vec<&InstanceId> = from.iter().filter(|i| !used.contains(*i)).collect();
            let id = (*free.get(rng.below(free.len() as u64) as usize)?).clone();
            used.insert(id.clone());
            Some(id)
        };
        let mut out = Vec::new();
        for kind in kinds {
            let fault = match kind {
                FaultKind::AssumeRoleDenied => victim_lz.map(|lz| Fault::AssumeRoleDenied {
                    landing_zone: lz.name.clone(),
                }),
                FaultKind::RegionUnreachable => victim_lz.and_then(|lz| {
                    Some(Fault::RegionUnreachable {
                        landing_zone: lz.name.clone(),
                        region: lz.regions.last()?.clone(),
                    })
                }),
                FaultKind::CreateImageError => {
                    pick(&running, &mut rng).map(Fault::CreateImageError)
                }
                FaultKind::AmiFailed => pick(&running, &mut rng).map(Fault::AmiFailed),
                FaultKind::AmiStuck => pick(&running, &mut rng).map(Fault::AmiStuck),
                FaultKind::InsufficientCapacity => {
                    pick(&stopped, &mut rng).map(Fault::InsufficientCapacity)
                }
                FaultKind::TerminatedBeforeStart => {
                    pick(&stopped, &mut rng).map(Fault::TerminatedBeforeStart)
                }
                FaultKind::SsmNeverOnline => pick(&stopped, &mut rng).map(Fault::SsmNeverOnline),
                FaultKind::Impaired => pick(&running, &mut rng).map(Fault::Impaired),
                FaultKind::RollbackFailed => pick(&running, &mut rng).map(Fault::RollbackFailed),
                FaultKind::StartDenied => victim_lz.map(|lz| Fault::StartDenied {
                    landing_zone: lz.name.clone(),
                }),
            };
            if let Some(f) = fault {
                self.fault(f.clone());
                out.push(f);
            }
        }
        out
    }

    pub(super) fn has_fault(&self, f: impl Fn(&Fault) -> bool) -> bool {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(f)
    }

    /// The refusal of an action the landing zone's role may not call.
    pub(super) fn denied(&self, t: &Target, api: Api) -> Option<CloudError> {
        let denied = api == Api::StartInstances
            && self.has_fault(
                |f| matches!(f, Fault::StartDenied { landing_zone } if *landing_zone == t.landing_zone),
            );
        denied.then(|| {
            CloudError::new(
                api,
                ErrorKind::Denied,
                "UnauthorizedOperation",
                format!("You are not authorized to perform this operation. User: arn:aws:sts::{}:assumed-role/PrepatchRole/prepatch is not authorized to perform: ec2:{api}", t.account),
            )
        })
    }

    /// The instances struck by faults of `kind`.
    pub(super) fn fault_ids(&self, kind: FaultKind) -> HashSet<InstanceId> {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|f| f.kind() == kind)
            .filter_map(|f| f.instance().cloned())
            .collect()
    }

    pub(super) fn instance_fault(&self, kind: FaultKind, id: &InstanceId) -> bool {
        self.has_fault(|f| f.kind() == kind && f.instance() == Some(id))
    }

    /// A root volume put back to its backup undoes what the patch broke on
    /// it: its agent and its OS, not its hardware or its account.
    pub(super) fn repair(&self, id: &InstanceId) {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|f| {
                !(f.instance() == Some(id)
                    && matches!(f.kind(), FaultKind::SsmNeverOnline | FaultKind::Impaired))
            });
    }
}
