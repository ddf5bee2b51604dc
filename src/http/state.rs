//! What every handler can reach.

use std::sync::Arc;

use super::client_ip::TrustedProxies;
use crate::audit::NewEvent;
use crate::audit_log::AuditLog;
use crate::auth::service::AuthService;
use crate::config::Config;
use crate::error::ApiError;
use crate::mail::{MailQueue, Mailer};
use crate::metrics::Metrics;
use crate::ratelimit::Limiter;
use crate::telemetry::fold::LineFolder;

/// Everything a handler can reach.
pub struct AppState {
    pub auth: AuthService,
    pub limiter: Arc<Limiter>,
    pub audit: AuditLog,
    pub mailer: Mailer,
    pub metrics: Arc<Metrics>,
    pub config: Arc<Config>,
    pub trusted_proxies: TrustedProxies,
    /// Folds repeated request lines of the process log.
    pub request_lines: LineFolder,
    /// Mail that goes out after the answer.
    pub mail_queue: MailQueue,
    /// The forward-auth rules, compiled.
    pub forward_auth: crate::authz::Rules,
    /// The OpenID Connect provider's clients and keys.
    pub oidc: crate::oidc::Oidc,
}

impl AppState {
    /// Records an audit event; the request fails closed (503) when it cannot.
    pub async fn audit(&self, event: NewEvent) -> Result<(), ApiError> {
        self.audit.record(event).await?;
        Ok(())
    }
}
