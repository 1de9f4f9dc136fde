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
        }
    }
}

impl Api {
    /// The action of an AWS operation name (`DescribeInstances`).
    pub fn from_name(name: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|a| a.name() == name)
    }

    pub const ALL: [Api; 14] = [
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

/// The first request id in a text, if it names one: `(request id ID)`,
/// the id being letters, digits and dashes (AWS's are UUIDs). Give it the
/// part of a message that is one error's, not a whole message that quotes
/// several.
pub fn request_id_in(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(at) = rest.find(REQUEST_ID_OPEN) {
        rest = &rest[at + REQUEST_ID_OPEN.len()..];
        let len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-')
            .count();
        if len > 0 && rest.as_bytes().get(len) == Some(&b')') {
            return Some(&rest[..len]);
        }
    }
    None
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
