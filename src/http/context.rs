//! Who is asking: the resolved client address and what the audit log records
//! about the request.

use std::future::{ready, Ready};
use std::net::IpAddr;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};

use super::client_ip::ClientIp;
use super::extract::user_agent;
use super::request_id::RequestId;
use crate::audit::{Action, NewEvent, Origin};
use crate::auth::service::ClientInfo;
use crate::error::ApiError;

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client address of SPEC section 4 (full address; rate limits group IPv6).
    pub ip: IpAddr,
    /// Address, user agent and request id, as audited.
    pub origin: Origin,
    /// The door the request came through when it is not the JSON API
    /// (`"web"` for the pages), recorded as `extra_data.via`.
    pub via: Option<&'static str>,
}

impl Caller {
    /// What a new session records.
    pub fn client_info(&self) -> ClientInfo {
        ClientInfo::new(
            self.origin.ip_address.clone(),
            self.origin.user_agent.as_deref(),
        )
    }

    /// A new audit event from this caller.
    pub fn event(&self, action: Action) -> NewEvent {
        let event = NewEvent::new(action, &self.origin);
        match self.via {
            Some(via) => event.extra("via", via),
            None => event,
        }
    }

    /// The same caller, come through `door` (`"oidc"`).
    pub fn via(mut self, door: &'static str) -> Self {
        self.via = Some(door);
        self
    }

    /// The same caller, come through the web pages.
    pub fn via_web(mut self) -> Self {
        self.via = Some("web");
        self
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let ip = match ClientIp::from_request(req, payload).into_inner() {
            Ok(ClientIp(ip)) => ip,
            Err(e) => return ready(Err(e)),
        };
        let origin = Origin {
            ip_address: Some(ip.to_string()),
            user_agent: user_agent(req).map(|ua| ua.chars().take(512).collect()),
            request_id: RequestId::of(req),
        };
        ready(Ok(Caller {
            ip,
            origin,
            via: None,
        }))
    }
}
