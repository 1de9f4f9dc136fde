//! `prepatch iam-policy run|restore [--partition P]`: the shipped IAM
//! policies (`docs/iam-policy*.json`), their ARNs written in the role's
//! partition. An ARN names its partition (`arn:aws-cn:...` in the China
//! regions, `arn:aws-us-gov:...` in GovCloud; IAM user guide, "IAM
//! identifiers"), and a policy in the wrong one matches nothing.

use std::io::Write;

use super::stdout_error;
use crate::cli::{IamPolicyArgs, PolicyRole};
use crate::{Error, Outcome};

const RUN: &str = include_str!("../../docs/iam-policy.json");
const RESTORE: &str = include_str!("../../docs/iam-policy-restore-cleanup.json");
const ORGANIZATIONS: &str = include_str!("../../docs/iam-policy-organizations.json");

/// The policy for `role`, its ARNs in `partition`.
pub fn policy(role: PolicyRole, partition: &str) -> String {
    let text = match role {
        PolicyRole::Run => RUN,
        PolicyRole::Restore => RESTORE,
        PolicyRole::Organizations => ORGANIZATIONS,
    };
    text.replace("\"arn:aws:", &format!("\"arn:{partition}:"))
}

pub fn run(args: &IamPolicyArgs) -> Result<Outcome, Error> {
    let mut out = crate::console::stdout();
    out.write_all(policy(args.role, &args.partition).as_bytes())
        .map_err(stdout_error)?;
    Ok(Outcome::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arn_is_in_the_partition_asked_for() {
        for role in [
            PolicyRole::Run,
            PolicyRole::Restore,
            PolicyRole::Organizations,
        ] {
            let text = policy(role, "aws-cn");
            let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            let arns: Vec<String> = text
                .match_indices("\"arn:")
                .map(|(i, _)| text[i + 1..].split('"').next().unwrap_or("").to_owned())
                .collect();
            assert!(!arns.is_empty(), "{doc}");
            assert!(
                arns.iter().all(|a| a.starts_with("arn:aws-cn:")),
                "{arns:?}"
            );
            let shipped = match role {
                PolicyRole::Run => RUN,
                PolicyRole::Restore => RESTORE,
                PolicyRole::Organizations => ORGANIZATIONS,
            };
            assert_eq!(policy(role, "aws"), shipped);
        }
    }
}
