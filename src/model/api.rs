//! The AWS API as the rest of prepatch speaks of it: the actions, their
//! counts, and a failed call with AWS's own code, message and request id.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Every AWS API action prepatch calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Api {
    AssumeRole,
    DescribeInstances,
    DescribeInstanceInformation,
    CreateImage,
    DescribeImages,
    CreateTags,
    StartInstances,
    DescribeInstanceStatus,
    StopInstances,
    DeregisterImage,
    DescribeSnapshots,
    DeleteSnapshot,
    DeleteTags,
    EnableImageDeprecation,
    CreateReplaceRootVolumeTask,
    DescribeReplaceRootVolumeTasks,
    ListAccounts,
    ListAccountsForParent,
    ListOrganizationalUnitsForParent,
    ListTagsForResource,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::AssumeRole => "AssumeRole",
            Api::DescribeInstances => "DescribeInstances",
            Api::DescribeInstanceInformation => "DescribeInstanceInformation",
            Api::CreateImage => "CreateImage",
            Api::DescribeImages => "DescribeImages",
            Api::CreateTags => "CreateTags",
            Api::StartInstances => "StartInstances",
            Api::DescribeInstanceStatus => "DescribeInstanceStatus",
            Api::StopInstances => "StopInstances",
            Api::DeregisterImage => "DeregisterImage",
            Api::DescribeSnapshots => "DescribeSnapshots",
            Api::DeleteSnapshot => "DeleteSnapshot",
            Api::DeleteTags => "DeleteTags",
            Api::EnableImageDeprecation => "EnableImageDeprecation",
            Api::CreateReplaceRootVolumeTask => "CreateReplaceRootVolumeTask",
            Api::DescribeReplaceRootVolumeTasks => "DescribeReplaceRootVolumeTasks",
            Api::ListAccounts => "ListAccounts",
            Api::ListAccountsForParent => "ListAccountsForParent",
            Api::ListOrganizationalUnitsForParent => "ListOrganizationalUnitsForParent",
            Api::ListTagsForResource => "ListTagsForResource",
        }
    }
}

impl Api {
    /// The action of an AWS operation name (`DescribeInstances`).
    pub fn from_name(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.name() == name)
    }

    pub const ALL: [Api; 20] = [
        Api::AssumeRole,
        Api::DescribeInstances,
        Api::DescribeInstanceInformation,
        Api::CreateImage,
        Api::DescribeImages,
        Api::CreateTags,
        Api::StartInstances,
        Api::DescribeInstanceStatus,
        Api::StopInstances,
        Api::DeregisterImage,
        Api::DescribeSnapshots,
        Api::DeleteSnapshot,
        Api::DeleteTags,
        Api::EnableImageDeprecation,
        Api::CreateReplaceRootVolumeTask,
        Api::DescribeReplaceRootVolumeTasks,
        Api::ListAccounts,
        Api::ListAccountsForParent,
        Api::ListOrganizationalUnitsForParent,
        Api::ListTagsForResource,
    ];
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What went wrong with a call, as far as the workflow needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// `RequestLimitExceeded` / `Throttling`: wait and retry.
    Throttled,
    /// Credentials, role or permission refused.
    Denied,
    /// The endpoint could not be reached or did not answer in time.
    Unreachable,
    /// Any other answer from AWS.
    Api,
}

/// A failed AWS call: the action, AWS's error code and message, and the
/// request id when AWS gave one. Shown as `api: code: message (request id
/// ID)`: the id is what AWS Support asks for, and it travels with the
/// message into the records, the journal and the reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{api}: {code}: {message}{}", request_id_suffix(request_id.as_deref()))]
pub struct CloudError {
    pub api: Api,
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

/// How a request id is introduced in an error's text.
const REQUEST_ID_OPEN: &str = "(request id ";

/// ` (request id ID)`, or nothing.
pub fn request_id_suffix(id: Option<&str>) -> String {
    id.map(|id| format!(" {REQUEST_ID_OPEN}{id})"))
        .unwrap_or_default()
}

impl CloudError {
    pub fn new(
        api: Api,
        kind: ErrorKind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        CloudError {
            api,
            kind,
            code: code.into(),
            message: message.into(),
            request_id: None,
        }
    }

    pub fn is_throttle(&self) -> bool {
        self.kind == ErrorKind::Throttled
    }

    /// No answer, or AWS's own failure: worth another try, as the SDK's
    /// standard retry would give it (a request that did reach AWS and is
    /// retried is one that AWS's idempotence or prepatch's names guard:
    /// a second `CreateImage` of the same name is refused).
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Unreachable
            || matches!(
                self.code.as_str(),
                "InternalError"
                    | "InternalFailure"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "Unavailable"
                    | "RequestTimeout"
                    | "RequestTimeoutException"
            )
    }

    /// Classifies an AWS error code.
    pub fn kind_of(code: &str) -> ErrorKind {
        match code {
            "RequestLimitExceeded"
            | "Throttling"
            | "ThrottlingException"
            | "TooManyRequestsException" => ErrorKind::Throttled,
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "AuthFailure"
            | "InvalidClientTokenId"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "SignatureDoesNotMatch" => ErrorKind::Denied,
            _ => ErrorKind::Api,
        }
    }
}

/// Counts of one action's calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCount {
    /// Requests sent, whatever their outcome: on AWS every HTTP attempt,
    /// the SDK's own retries and every page included.
    pub calls: u64,
    /// Of those, answered with a throttling error.
    pub throttled: u64,
    /// Calls that failed in the end with any other error.
    pub errors: u64,
}

/// Calls made between two snapshots.
pub fn calls_since(
    before: &BTreeMap<Api, CallCount>,
    after: &BTreeMap<Api, CallCount>,
) -> BTreeMap<Api, CallCount> {
    after
        .iter()
        .filter_map(|(api, a)| {
            let b = before.get(api).copied().unwrap_or_default();
            let d = CallCount {
                calls: a.calls - b.calls,
                throttled: a.throttled - b.throttled,
                errors: a.errors - b.errors,
            };
            (d.calls > 0).then_some((*api, d))
        })
        .collect()
}

/// A failure as the records keep it: the words an operator reads, and,
/// when AWS refused a call, which call, AWS's error code and the request
/// id, typed as they came (the reports read them; nothing parses the
/// words again).
///
/// As small as the text it replaced (24 bytes): a fleet's records carry
/// two of these each, nearly always empty, and AWS's fields are rare.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failure {
    message: Box<str>,
    aws: Option<Box<AwsFault>>,
}

/// What AWS said of a refused call.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AwsFault {
    api: Api,
    code: String,
    request_id: Option<String>,
}

impl Failure {
    /// A failure of prepatch's own (a timeout, a failed AMI): no AWS call
    /// to name.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into().into_boxed_str(),
            aws: None,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The AWS action that failed, if AWS refused a call.
    pub fn api(&self) -> Option<Api> {
        self.aws.as_ref().map(|a| a.api)
    }

    /// AWS's error code (`UnauthorizedOperation`).
    pub fn code(&self) -> Option<&str> {
        self.aws.as_ref().map(|a| a.code.as_str())
    }

    /// The request id AWS gave, for AWS Support.
    pub fn request_id(&self) -> Option<&str> {
        self.aws.as_ref()?.request_id.as_deref()
    }

    /// The same failure in other words (AWS's fields kept).
    pub fn worded(mut self, message: impl Into<String>) -> Failure {
        self.message = message.into().into_boxed_str();
        self
    }

    /// The same failure, its words preceded by `context` (`CreateImage
    /// failed: ...`).
    pub fn context(self, context: impl fmt::Display) -> Failure {
        let message = format!("{context}: {}", self.message);
        self.worded(message)
    }

    /// The same failure, `more` added after its words.
    pub fn and(self, more: impl fmt::Display) -> Failure {
        let message = format!("{}; {more}", self.message);
        self.worded(message)
    }
}

impl From<&CloudError> for Failure {
    fn from(e: &CloudError) -> Failure {
        Failure {
            message: e.to_string().into_boxed_str(),
            aws: Some(Box::new(AwsFault {
                api: e.api,
                code: e.code.clone(),
                request_id: e.request_id.clone(),
            })),
        }
    }
}

impl From<CloudError> for Failure {
    fn from(e: CloudError) -> Failure {
        Failure::from(&e)
    }
}

/// A failure reads as its words: `failure.contains("timed out")`.
impl std::ops::Deref for Failure {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a failure is saved (the journal's copy of a run).
#[derive(Serialize, Deserialize)]
struct Saved {
    message: String,
    api: Option<Api>,
    code: Option<String>,
    request_id: Option<String>,
}

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Saved {
            message: self.message.to_string(),
            api: self.api(),
            code: self.code().map(str::to_owned),
            request_id: self.request_id().map(str::to_owned),
        }
        .serialize(s)
    }
}

/// A journal written before failures were typed keeps them as their words
/// alone: those read back as a failure without an action or code.
impl<'de> Deserialize<'de> for Failure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Failure, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Words(String),
            Saved(Saved),
        }
        Ok(match Either::deserialize(d)? {
            Either::Words(message) => Failure::new(message),
            Either::Saved(t) => Failure {
                message: t.message.into_boxed_str(),
                aws: t.api.zip(t.code).map(|(api, code)| {
                    Box::new(AwsFault {
                        api,
                        code,
                        request_id: t.request_id,
                    })
                }),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_no_larger_than_the_text_it_replaced() {
        assert_eq!(std::mem::size_of::<Option<Failure>>(), 24);
    }

    #[test]
    fn a_failure_keeps_the_first_calls_fields_through_its_context() {
        let mut e = CloudError::new(Api::CreateImage, ErrorKind::Api, "InternalError", "boom");
        e.request_id = Some("1-1".into());
        let f = Failure::from(e)
            .context("CreateImage failed")
            .and("looking it up: DescribeImages: Unavailable: later (request id 9-9)");
        assert_eq!(f.api(), Some(Api::CreateImage));
        assert_eq!(f.code(), Some("InternalError"));
        assert_eq!(f.request_id(), Some("1-1"));
        assert_eq!(
            f.to_string(),
            "CreateImage failed: CreateImage: InternalError: boom (request id 1-1); \
             looking it up: DescribeImages: Unavailable: later (request id 9-9)"
        );
    }

    #[test]
    fn a_failure_reads_back_typed_and_as_the_words_older_journals_kept() {
        let f = Failure::from(CloudError::new(
            Api::StartInstances,
            ErrorKind::Api,
            "C",
            "m",
        ));
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Failure>(&json).unwrap(), f);
        let old: Failure = serde_json::from_str("\"pending after 1800s\"").unwrap();
        assert_eq!(old, Failure::new("pending after 1800s"));
    }
}
