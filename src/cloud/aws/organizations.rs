//! The accounts of an AWS Organization, for landing zones the config takes
//! from it (`organizations:`): from the management account or a delegated
//! administrator, every account (`ListAccounts`) or the accounts under
//! chosen OUs, recursively (`ListAccountsForParent`,
//! `ListOrganizationalUnitsForParent`), each with its tags
//! (`ListTagsForResource`) when a rule reads them. Every listing is read
//! page by page, one call at a time (Organizations' rate limits are low),
//! a throttle retried by the SDK's standard retry, every attempt counted in
//! the run's API calls; a token given back twice stops the listing
//! ([`crate::cloud::all_pages`]).
//!
//! Organizations API reference: `ListAccounts`, `ListAccountsForParent`,
//! `ListOrganizationalUnitsForParent`, `ListTagsForResource`; `Account`
//! (`State`: PENDING_ACTIVATION | ACTIVE | SUSPENDED | PENDING_CLOSURE |
//! CLOSED, which replaces the deprecated `Status`).

use aws_config::retry::RetryConfig;
use aws_sdk_organizations as org;

use super::convert::{CountAttempts, api_error};
use super::session::RoleSession;
use super::{AwsCloud, creds};
use crate::cloud::{Api, CloudError, Page, all_pages};
use crate::model::OrgAccount;

/// The most `ListAccounts*` and `ListTagsForResource` give on a page.
const PAGE: i32 = 20;

impl AwsCloud {
    /// The organization's active accounts: all of them, or those under
    /// `ous` (OU or root ids, recursively); with their tags when `tags`.
    /// `role_arn`: the role that reads the organization, else the
    /// runner's own credentials.
    pub async fn organization_accounts(
        &self,
        role_arn: Option<&str>,
        ous: &[String],
        tags: bool,
    ) -> Result<Vec<OrgAccount>, CloudError> {
        let client = self.organizations(role_arn).await?;
        let mut found: Vec<org::types::Account> = Vec::new();
        if ous.is_empty() {
            found = all_pages(Api::ListAccounts, |token| {
                let req = client
                    .list_accounts()
                    .max_results(PAGE)
                    .set_next_token(token);
                async move {
                    let out = req
                        .send()
                        .await
                        .map_err(|e| api_error(Api::ListAccounts, e))?;
                    Ok(Page {
                        items: out.accounts().to_vec(),
                        next: out.next_token().map(str::to_owned),
                    })
                }
            })
            .await?;
        } else {
            let mut parents: Vec<String> = ous.to_vec();
            let mut seen = std::collections::BTreeSet::new();
            while let Some(parent) = parents.pop() {
                if !seen.insert(parent.clone()) {
                    continue;
                }
                found.extend(accounts_under(&client, &parent).await?);
                parents.extend(ous_under(&client, &parent).await?);
            }
        }
        let mut out = Vec::new();
        let mut ids = std::collections::BTreeSet::new();
        for a in found {
            let Some(id) = a.id().map(str::to_owned) else {
                continue;
            };
            // An account under two chosen OUs (one inside the other) once.
            if !ids.insert(id.clone()) {
                continue;
            }
            let state = a
                .state()
                .map(|s| s.as_str().to_owned())
                .or_else(|| {
                    #[allow(deprecated)]
                    a.status().map(|s| s.as_str().to_owned())
                })
                .unwrap_or_default();
            let tags = if tags {
                account_tags(&client, &id).await?
            } else {
                Default::default()
            };
            out.push(OrgAccount {
                id,
                name: a.name().unwrap_or_default().to_owned(),
                state,
                tags,
            });
        }
        Ok(out)
    }

    /// An Organizations client: global, reached in the partition's home
    /// region, with the SDK's standard retry for its throttles.
    async fn organizations(&self, role_arn: Option<&str>) -> Result<org::Client, CloudError> {
        let mut builder = org::config::Builder::from(&self.base)
            .region(org::config::Region::new("us-east-1"))
            .retry_config(RetryConfig::standard().with_max_attempts(8))
            // Every attempt counted, retries too, as for EC2 and SSM.
            .interceptor(CountAttempts(std::sync::Arc::clone(&self.calls)));
        if let Some(role) = role_arn {
            let sts = super::sts::Client::new(&self.base);
            let (credentials, _, _) = RoleSession::assume(
                &sts,
                role,
                "prepatch-organizations",
                None,
                std::time::Duration::from_secs(900),
                &self.calls,
            )
            .await?;
            builder =
                builder.credentials_provider(creds::SharedCredentialsProvider::new(credentials));
        }
        Ok(org::Client::from_conf(builder.build()))
    }
}

async fn accounts_under(
    client: &org::Client,
    parent: &str,
) -> Result<Vec<org::types::Account>, CloudError> {
    all_pages(Api::ListAccountsForParent, |token| {
        let req = client
            .list_accounts_for_parent()
            .parent_id(parent)
            .max_results(PAGE)
            .set_next_token(token);
        async move {
            let out = req
                .send()
                .await
                .map_err(|e| api_error(Api::ListAccountsForParent, e))?;
            Ok(Page {
                items: out.accounts().to_vec(),
                next: out.next_token().map(str::to_owned),
            })
        }
    })
    .await
}

async fn ous_under(client: &org::Client, parent: &str) -> Result<Vec<String>, CloudError> {
    all_pages(Api::ListOrganizationalUnitsForParent, |token| {
        let req = client
            .list_organizational_units_for_parent()
            .parent_id(parent)
            .max_results(PAGE)
            .set_next_token(token);
        async move {
            let out = req
                .send()
                .await
                .map_err(|e| api_error(Api::ListOrganizationalUnitsForParent, e))?;
            Ok(Page {
                items: out
                    .organizational_units()
                    .iter()
                    .filter_map(|ou| ou.id().map(str::to_owned))
                    .collect(),
                next: out.next_token().map(str::to_owned),
            })
        }
    })
    .await
}

async fn account_tags(
    client: &org::Client,
    account: &str,
) -> Result<std::collections::BTreeMap<String, String>, CloudError> {
    let tags = all_pages(Api::ListTagsForResource, |token| {
        let req = client
            .list_tags_for_resource()
            .resource_id(account)
            .set_next_token(token);
        async move {
            let out = req
                .send()
                .await
                .map_err(|e| api_error(Api::ListTagsForResource, e))?;
            Ok(Page {
                items: out
                    .tags()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect(),
                next: out.next_token().map(str::to_owned),
            })
        }
    })
    .await?;
    Ok(tags.into_iter().collect())
}
