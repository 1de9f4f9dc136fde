//! A landing zone's role session: STS `AssumeRole` credentials handed to
//! the SDK, renewed before they expire.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{self as creds, ProvideCredentials};
use aws_sdk_ec2 as ec2;
use aws_sdk_sts as sts;

use super::convert::api_error;
use super::{Api, ApiCalls, CloudError, ErrorKind};

/// Renew a session when less than this is left of it.
pub(super) const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The longest session STS gives a role assumed with credentials that are
/// themselves a role's (role chaining), and the default `MaxSessionDuration`
/// of a role.
pub(super) const CHAINED_SESSION_MAX: Duration = Duration::from_secs(3600);

/// A landing zone's STS session, handed to its clients as their credentials
/// provider. The credentials it hands out say they expire
/// [`RENEW_BEFORE`] before they really do: the SDK's identity cache asks
/// its provider again only seconds before the expiry it is told, so this
/// is what makes the session renew five minutes early, and a run longer
/// than `aws.session_duration` (a long AMI wait) keeps working without a
/// request ever carrying credentials about to lapse.
#[derive(Debug)]
pub(super) struct RoleSession {
    pub(super) sts: sts::Client,
    pub(super) role_arn: String,
    pub(super) session_name: String,
    /// The `sts:ExternalId` the role's trust policy asks for.
    pub(super) external_id: Option<String>,
    /// The session length STS accepted (see [`RoleSession::assume`]).
    pub(super) duration: Duration,
    pub(super) calls: Arc<ApiCalls>,
    /// The credentials with their real expiry.
    pub(super) current: tokio::sync::Mutex<ec2::config::Credentials>,
}

/// Whether STS refused a session length: longer than the role's
/// `MaxSessionDuration`, or than the hour that role chaining allows. STS
/// answers that with its query-protocol error code `ValidationError`
/// (STS API reference, "Common Errors"; the `AssumeRole` reference on
/// `DurationSeconds`), not the JSON services' `ValidationException`.
pub(super) fn duration_refused(e: &CloudError) -> bool {
    e.code == "ValidationError" && e.message.contains("DurationSeconds")
}

impl RoleSession {
    /// `AssumeRole`: the credentials, the assumed role's ARN, and the
    /// session length used. A length STS refuses for this caller (role
    /// chaining caps it at an hour, a role's `MaxSessionDuration` may too)
    /// is asked again at one hour, with a warning, rather than failing the
    /// landing zone: renewal keeps a long run going either way.
    pub(super) async fn assume(
        sts: &sts::Client,
        role_arn: &str,
        session_name: &str,
        external_id: Option<&str>,
        duration: Duration,
        calls: &ApiCalls,
    ) -> Result<(ec2::config::Credentials, Option<String>, Duration), CloudError> {
        let ask = |duration: Duration| {
            sts.assume_role()
                .role_arn(role_arn)
                .role_session_name(session_name)
                .set_external_id(external_id.map(str::to_owned))
                .duration_seconds(duration.as_secs().try_into().unwrap_or(3600))
                .send()
        };
        let mut duration = duration;
        let mut result = ask(duration)
            .await
            .map_err(|e| api_error(Api::AssumeRole, e));
        calls.record(Api::AssumeRole, &result);
        if let Err(e) = &result
            && duration > CHAINED_SESSION_MAX
            && duration_refused(e)
        {
            tracing::warn!(
                role = role_arn,
                asked = duration.as_secs(),
                error = %e,
                "STS refused aws.session_duration for this caller; using 3600 s (sessions are renewed before they expire)"
            );
            duration = CHAINED_SESSION_MAX;
            result = ask(duration)
                .await
                .map_err(|e| api_error(Api::AssumeRole, e));
            calls.record(Api::AssumeRole, &result);
        }
        let out = result?;
        let Some(c) = out.credentials() else {
            return Err(CloudError::new(
                Api::AssumeRole,
                ErrorKind::Api,
                "NoCredentials",
                "STS returned no credentials",
            ));
        };
        crate::console::never_log(c.secret_access_key());
        crate::console::never_log(c.session_token());
        let credentials = ec2::config::Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_owned()),
            SystemTime::try_from(*c.expiration()).ok(),
            "prepatch-assume-role",
        );
        let arn = out.assumed_role_user().map(|u| u.arn().to_owned());
        Ok((credentials, arn, duration))
    }

    /// The current credentials, renewed first if they expire soon, as the
    /// SDK is to see them: expiring [`RENEW_BEFORE`] early.
    pub(super) async fn credentials(&self) -> Result<ec2::config::Credentials, CloudError> {
        let mut current = self.current.lock().await;
        if expires_soon(current.expiry(), SystemTime::now()) {
            let (fresh, _, _) = Self::assume(
                &self.sts,
                &self.role_arn,
                &self.session_name,
                self.external_id.as_deref(),
                self.duration,
                &self.calls,
            )
            .await?;
            tracing::info!(role = %self.role_arn, "STS session renewed");
            *current = fresh;
        }
        Ok(renew_early(&current))
    }
}

/// Less than [`RENEW_BEFORE`] is left, with a minute's slack for the
/// identity cache, which asks a few seconds before the expiry it was told.
pub(super) fn expires_soon(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    expiry.is_some_and(|e| e <= now + RENEW_BEFORE + Duration::from_secs(60))
}

/// The same credentials, saying they expire [`RENEW_BEFORE`] early.
pub(super) fn renew_early(c: &ec2::config::Credentials) -> ec2::config::Credentials {
    ec2::config::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        c.session_token().map(str::to_owned),
        c.expiry().map(|e| e - RENEW_BEFORE),
        "prepatch-assume-role",
    )
}

impl ProvideCredentials for RoleSession {
    fn provide_credentials<'a>(&'a self) -> creds::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        creds::future::ProvideCredentials::new(async move {
            self.credentials()
                .await
                .map_err(creds::error::CredentialsError::provider_error)
        })
    }
}

/// The runner's own credentials (the SDK's provider chain: environment,
/// profile, SSO, instance role), each secret they hold told to the logs
/// as one never to show ([`crate::console::never_log`]).
#[derive(Debug)]
pub(super) struct NeverLogged(pub(super) creds::SharedCredentialsProvider);

impl ProvideCredentials for NeverLogged {
    fn provide_credentials<'a>(&'a self) -> creds::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        creds::future::ProvideCredentials::new(async move {
            let c = self.0.provide_credentials().await?;
            crate::console::never_log(c.secret_access_key());
            if let Some(token) = c.session_token() {
                crate::console::never_log(token);
            }
            Ok(c)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_config::retry::RetryConfig;

    fn session(expires_in: Duration) -> RoleSession {
        // Nothing listens on port 9: a call to STS fails at once.
        let sts = sts::Client::from_conf(
            sts::Config::builder()
                .behavior_version(aws_config::BehaviorVersion::latest())
                .region(sts::config::Region::new("us-east-1"))
                .endpoint_url("http://127.0.0.1:9")
                .credentials_provider(ec2::config::Credentials::new("a", "b", None, None, "t"))
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        let expiry = SystemTime::now() + expires_in;
        RoleSession {
            sts,
            role_arn: "arn:aws:iam::111111111111:role/R".into(),
            session_name: "prepatch-test".into(),
            external_id: None,
            duration: Duration::from_secs(3600),
            calls: Arc::default(),
            current: tokio::sync::Mutex::new(ec2::config::Credentials::new(
                "AKID",
                "secret",
                Some("token".into()),
                Some(expiry),
                "t",
            )),
        }
    }

    #[tokio::test]
    async fn a_fresh_session_is_used_as_is() {
        let s = session(Duration::from_secs(3000));
        let real = s.current.lock().await.expiry().expect("an expiry");
        let c = s.credentials().await.expect("no call needed");
        assert_eq!(c.access_key_id(), "AKID");
        assert!(s.calls.snapshot().is_empty(), "no AssumeRole");
        // The SDK's cache refreshes a few seconds before the expiry it is
        // told: told five minutes early, it renews five minutes early.
        assert_eq!(c.expiry(), Some(real - RENEW_BEFORE));
    }

    #[tokio::test]
    async fn the_sdk_cache_asking_at_the_expiry_it_was_told_gets_a_renewal() {
        // Told expiry = real - 5 min; the cache asks ~10 s before that.
        let s = session(RENEW_BEFORE + Duration::from_secs(10));
        let e = s.credentials().await.expect_err("STS is unreachable here");
        assert_eq!(e.api, Api::AssumeRole, "it tried to renew");
    }

    #[test]
    fn only_a_refused_duration_is_asked_again_at_an_hour() {
        let chained = CloudError::new(
            Api::AssumeRole,
            ErrorKind::Api,
            "ValidationError",
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
        );
        assert!(duration_refused(&chained));
        let max = CloudError::new(
            Api::AssumeRole,
            ErrorKind::Api,
            "ValidationError",
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
        );
        assert!(duration_refused(&max));
        let denied = CloudError::new(Api::AssumeRole, ErrorKind::Denied, "AccessDenied", "no");
        assert!(!duration_refused(&denied));
    }

    #[tokio::test]
    async fn a_session_about_to_expire_is_renewed_with_assume_role() {
        let s = session(Duration::from_secs(60));
        let e = s.credentials().await.expect_err("STS is unreachable here");
        assert_eq!(e.api, Api::AssumeRole);
        assert_eq!(s.calls.snapshot()[&Api::AssumeRole].calls, 1);
        assert!(expires_soon(
            Some(SystemTime::now()),
            SystemTime::now() - Duration::from_secs(1)
        ));
        assert!(
            !expires_soon(None, SystemTime::now()),
            "static keys never expire"
        );
    }
}
