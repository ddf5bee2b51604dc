//! The pages for people (SPEC section 11), served under `/ui/` from
//! templates compiled into the binary. Every page handler parses its form,
//! checks the form token, then calls what the JSON handler of the same route
//! calls — the same domain functions under the same rate-limit rules and
//! keys, with the same audit events (`extra_data.via = "web"`) — and renders
//! the result. Nothing here decides what the API does not also decide.

mod account;
mod admin;
pub mod browser;
mod passkeys;
mod recovery;
mod sign_in;

use actix_web::dev::Payload;
use actix_web::error::InternalError;
use actix_web::http::{header, StatusCode};
use actix_web::web::{self, ServiceConfig};
use actix_web::{FromRequest, HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError};
use askama::Template;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::http::context::Caller;
use crate::http::extract::{has_media_type, read_body, MediaType};
use crate::http::routing::resource;
use crate::http::state::AppState;
use browser::Browser;

/// The one stylesheet.
const STYLE: &str = include_str!("style.css");

/// What every page shows around its content.
pub struct Layout {
    pub title: String,
    pub heading: &'static str,
    pub user: Option<LayoutUser>,
    pub csrf: String,
    /// Which entry of the navigation is this page.
    pub section: &'static str,
    pub wide: bool,
}

pub struct LayoutUser {
    pub is_admin: bool,
}

impl Layout {
    pub fn new(state: &AppState, browser: &Browser, heading: &'static str) -> Self {
        Self {
            title: state.config.web.title.clone(),
            heading,
            user: browser.profile().map(|p| LayoutUser {
                is_admin: p.user.is_admin,
            }),
            csrf: browser.form_token(state),
            section: "",
            wide: false,
        }
    }

    pub fn section(mut self, section: &'static str) -> Self {
        self.section = section;
        self.wide = section != "account";
        self
    }
}

/// Registers the pages.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(resource("/", "GET").route(web::get().to(sign_in::root)))
        .service(resource("/ui/style.css", "GET").route(web::get().to(style)))
        .service(resource("/ui/passkeys.js", "GET").route(web::get().to(passkeys::script)))
        .service(
            resource("/ui/login", "GET, POST")
                .route(web::get().to(sign_in::login_page))
                .route(web::post().to(sign_in::login)),
        )
        .service(
            resource("/ui/login/mfa", "GET, POST")
                .route(web::get().to(sign_in::mfa_page))
                .route(web::post().to(sign_in::mfa)),
        )
        .service(resource("/ui/logout", "POST").route(web::post().to(sign_in::logout)))
        .service(
            resource("/ui/register", "GET, POST")
                .route(web::get().to(sign_in::register_page))
                .route(web::post().to(sign_in::register)),
        )
        .service(
            resource("/ui/setup", "GET, POST")
                .route(web::get().to(sign_in::setup_page))
                .route(web::post().to(sign_in::setup)),
        )
        .service(
            resource("/ui/forgot-password", "GET, POST")
                .route(web::get().to(recovery::forgot_page))
                .route(web::post().to(recovery::forgot)),
        )
        .service(
            resource("/ui/reset-password", "GET, POST")
                .route(web::get().to(recovery::reset_page))
                .route(web::post().to(recovery::reset)),
        )
        .service(
            resource("/ui/account", "GET, POST")
                .route(web::get().to(account::page))
                .route(web::post().to(account::act)),
        )
        .service(
            resource("/ui/account/totp", "GET, POST")
                .route(web::get().to(account::totp_page))
                .route(web::post().to(account::totp_enable)),
        )
        .service(
            resource("/ui/account/passkeys", "GET, POST")
                .route(web::get().to(passkeys::page))
                .route(web::post().to(passkeys::act)),
        )
        .service(
            resource("/ui/admin/users", "GET, POST")
                .route(web::get().to(admin::users_page))
                .route(web::post().to(admin::users_act)),
        )
        .service(resource("/ui/admin/audit", "GET").route(web::get().to(admin::audit_page)))
        .service(
            resource("/ui/admin/rate-limits", "GET, POST")
                .route(web::get().to(admin::limits_page))
                .route(web::post().to(admin::limits_clear)),
        );
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(STYLE)
}

/// The headers of every page: a strict policy (forms may post only here, and
/// to `form_target` when the page sends the browser on), no sniffing, no
/// referrer, no caching, no framing.
fn secure(res: &mut HttpResponseBuilder, form_target: Option<&str>) {
    let extra = form_target
        .and_then(|t| url::Url::parse(t).ok())
        .map(|u| {
            // A sign-in for an OpenID Connect client goes on through
            // /oidc/authorize to the client: the browser checks every hop.
            let client = (u.path() == "/oidc/authorize")
                .then(|| u.query_pairs().find(|(k, _)| k == "redirect_uri"))
                .flatten()
                .and_then(|(_, v)| url::Url::parse(&v).ok())
                .filter(|r| matches!(r.scheme(), "http" | "https"));
            match client {
                Some(r) => format!(
                    " {} {}",
                    u.origin().ascii_serialization(),
                    r.origin().ascii_serialization()
                ),
                None => format!(" {}", u.origin().ascii_serialization()),
            }
        })
        .unwrap_or_default();
    res.insert_header((
        header::CONTENT_SECURITY_POLICY,
        format!(
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
             img-src 'self' data:; \
             form-action 'self'{extra}; frame-ancestors 'none'; base-uri 'none'"
        ),
    ))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::REFERRER_POLICY, "no-referrer"))
    .insert_header((header::CACHE_CONTROL, "no-store"))
    .insert_header((header::X_FRAME_OPTIONS, "DENY"));
}

/// A rendered page with `status`.
pub fn render(
    status: StatusCode,
    browser: &Browser,
    page: &impl Template,
    form_target: Option<&str>,
) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    secure(&mut res, form_target);
    browser.keep(&mut res);
    match page.render() {
        Ok(html) => res.content_type("text/html; charset=utf-8").body(html),
        Err(e) => {
            tracing::error!(error = %e, "cannot render a page");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("internal error")
        }
    }
}

/// `text` as a query value.
pub fn query_value(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A page that needs a signed-in browser: on to the login page, which
/// comes back to `path`.
pub fn sign_in_first(state: &AppState, path: &str) -> HttpResponse {
    let back = format!(
        "{}{path}",
        state.config.server.public_url.trim_end_matches('/')
    );
    see_other(&format!("/ui/login?rd={}", query_value(&back))).finish()
}

/// `303 See Other` to `to` (a path of ours or a checked `rd`).
pub fn see_other(to: &str) -> HttpResponseBuilder {
    let mut res = HttpResponse::SeeOther();
    secure(&mut res, None);
    res.insert_header((header::LOCATION, to.to_owned()));
    res
}

/// What a failed form shows: the status of the API's answer, its headers
/// (`Retry-After`, `RateLimit-*`), and a sentence for people.
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
    /// Problems of single fields.
    pub fields: crate::auth::service::FieldErrors,
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
}

impl Failure {
    pub fn of(e: ApiError) -> Self {
        let response = e.error_response();
        let headers = limit_headers(&response);
        let message = match &e {
            ApiError::InvalidCredentials => "Wrong email or password.".to_owned(),
            ApiError::InvalidMfaCode => {
                "That code is wrong or was already used. Try the newest code.".to_owned()
            }
            ApiError::InvalidCurrentPassword => "Your current password is wrong.".to_owned(),
            ApiError::TooManyRequests(blocked) => format!(
                "Too many attempts. Try again in {}.",
                wait_text(blocked.retry_after)
            ),
            ApiError::Validation(fields) => fields
                .iter()
                .map(|(field, reason)| format!("{}: {reason}.", field_label(field)))
                .collect::<Vec<_>>()
                .join(" "),
            ApiError::EmailTaken => "An account with this email already exists.".to_owned(),
            other if other.status_code().is_server_error() => {
                "Something went wrong on our side. Try again in a moment.".to_owned()
            }
            other => sentence(&other.to_string()),
        };
        let fields = match e {
            ApiError::Validation(fields) => fields,
            _ => Default::default(),
        };
        Self {
            status: response.status(),
            message,
            fields,
            headers,
        }
    }

    /// A failure of the page itself (a missing field), status 400.
    pub fn bad(message: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.to_owned(),
            fields: Default::default(),
            headers: Vec::new(),
        }
    }

    /// Takes the rate-limit headers of an answer the guard made.
    pub fn take_headers(&mut self, response: &HttpResponse) {
        self.headers.extend(limit_headers(response));
    }

    pub fn field(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(|r| sentence(r))
    }

    /// The page again, with this failure's status and headers.
    pub fn render(
        &self,
        browser: &Browser,
        page: &impl Template,
        form_target: Option<&str>,
    ) -> HttpResponse {
        let mut res = render(self.status, browser, page, form_target);
        for (name, value) in &self.headers {
            res.headers_mut().insert(name.clone(), value.clone());
        }
        res
    }
}

/// `Retry-After` and `RateLimit-*` of an answer.
fn limit_headers(response: &HttpResponse) -> Vec<(header::HeaderName, header::HeaderValue)> {
    response
        .headers()
        .iter()
        .filter(|(name, _)| *name == header::RETRY_AFTER || name.as_str().starts_with("ratelimit"))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

fn field_label(field: &str) -> &str {
    match field {
        "email" => "Email",
        "password" | "new_password" => "Password",
        "current_password" => "Current password",
        "name" => "Name",
        "groups" => "Groups",
        "code" => "Code",
        other => other,
    }
}

/// `text` as a sentence: capital first letter, full stop.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .next()
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_default();
    out.push_str(chars.as_str());
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

fn wait_text(seconds: u64) -> String {
    match seconds {
        0..=59 => format!(
            "{} second{}",
            seconds.max(1),
            if seconds == 1 { "" } else { "s" }
        ),
        _ => {
            let minutes = seconds.div_ceil(60);
            format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
        }
    }
}

/// A posted form, parsed whole: a body that is not a form is 400.
fn form<T: DeserializeOwned + Default>(req: &HttpRequest, body: &[u8]) -> Result<T, Failure> {
    if !has_media_type(req, MediaType::Form) {
        return Err(Failure::bad("This form must be sent by a browser."));
    }
    serde_urlencoded::from_bytes(body).map_err(|_| Failure::bad("This form could not be read."))
}

/// A posted form of a page, as its handler gets it: who sent it (through the
/// web), the browser, and the form, its token checked and read whole. When
/// the form is refused, the handler never runs: the answer is the 403 or 400
/// of [`posted`].
pub struct Posted<T> {
    pub caller: Caller,
    pub browser: Browser,
    pub form: T,
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for Posted<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let caller = Caller::from_request(&req, payload).into_inner();
        let body = read_body(&req, payload);
        Box::pin(async move {
            let caller = caller?.via_web();
            let body = body.await?;
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
            let browser = Browser::of(&req, state).await;
            let form = posted(&req, state, &browser, &body)
                .map_err(|res| InternalError::from_response("form refused", *res))?;
            Ok(Posted {
                caller,
                browser,
                form,
            })
        })
    }
}

/// A browser asking for a page: [`Browser::of`] as an extractor.
impl FromRequest for Browser {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("application state missing")))?;
            Ok(Browser::of(&req, state).await)
        })
    }
}

/// A form this browser posted: its token checked, then read whole. Else the
/// answer to give, nothing changed: 403 for a missing or wrong token or a
/// post from another site, 400 for a body that is not this form.
pub fn posted<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    state: &AppState,
    browser: &Browser,
    body: &[u8],
) -> Result<T, Box<HttpResponse>> {
    let token: Token = form(req, body).map_err(|f| Box::new(failure_page(state, browser, f)))?;
    if !browser.form_is_genuine(req, state, &token.csrf_token) {
        return Err(Box::new(forged(state, browser)));
    }
    form(req, body).map_err(|f| Box::new(failure_page(state, browser, f)))
}

/// The answer to a form whose token is missing or wrong, or that came from
/// another site: 403, nothing changed.
fn forged(state: &AppState, browser: &Browser) -> HttpResponse {
    let page = MessagePage {
        layout: Layout::new(state, browser, "Please try again"),
        message: "This form expired or came from another site, so nothing was changed. Go back, reload the page and try again.".into(),
        alert: true,
        link: "/",
        link_text: "Start again",
    };
    render(StatusCode::FORBIDDEN, browser, &page, None)
}

/// A page that says what went wrong, with the status of `e`.
pub fn error_page(state: &AppState, browser: &Browser, e: ApiError) -> HttpResponse {
    failure_page(state, browser, Failure::of(e))
}

/// A page of one failure.
pub fn failure_page(state: &AppState, browser: &Browser, failure: Failure) -> HttpResponse {
    let page = MessagePage {
        layout: Layout::new(state, browser, "Something went wrong"),
        message: failure.message.clone(),
        alert: true,
        link: "/",
        link_text: "Start again",
    };
    failure.render(browser, &page, None)
}

/// A page of one sentence.
#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub layout: Layout,
    pub message: String,
    pub alert: bool,
    pub link: &'static str,
    pub link_text: &'static str,
}

/// The form token field every form carries.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Token {
    csrf_token: String,
}
