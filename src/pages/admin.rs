//! The administrators' pages: users (search, disable and enable, groups, a
//! lost second factor), the audit log with its filters and the chain's
//! verdict, and the rate limiter's keys. Each action is its JSON route's.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use super::browser::Browser;
use super::sign_in::query;
use super::{render, see_other, Failure, Layout, MessagePage, Posted};
use crate::audit::query::{parse_time, Filter};
use crate::audit::{Action, EventRow};

use crate::control::{self, ClearError};
use crate::error::ApiError;
use crate::http::admin::{disable_user_as, reset_mfa_as, set_groups_as};
use crate::http::state::AppState;
use crate::time_fmt::rfc3339_ms;

/// Audit rows on one page (each page stays well under 30 KB).
const AUDIT_PAGE: u32 = 40;
/// The details of a row are cut to this many characters.
const DETAILS_CHARS: usize = 160;

/// The administrator behind this browser, or the answer for one who is not.
fn admin(state: &AppState, browser: &Browser, path: &str) -> Result<Uuid, Box<HttpResponse>> {
    match browser.profile() {
        Some(p) if p.user.is_admin => Ok(p.user.id),
        Some(_) => {
            let page = MessagePage {
                layout: Layout::new(state, browser, "Not allowed"),
                message: "Only administrators can open this page.".into(),
                alert: true,
                link: "/ui/account",
                link_text: "Your account",
            };
            Err(Box::new(render(
                StatusCode::FORBIDDEN,
                browser,
                &page,
                None,
            )))
        }
        None => Err(Box::new(super::sign_in_first(state, path))),
    }
}

pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub created_at: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub mfa_enabled: bool,
    /// Stored groups, comma-separated (`admins` follows the flag).
    pub groups: String,
    /// The administrator looking (who cannot disable themself).
    pub is_self: bool,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage {
    layout: Layout,
    error: Option<String>,
    notice: Option<String>,
    query: String,
    users: Vec<UserRow>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct UsersQuery {
    email: String,
    done: String,
}

async fn users_view(
    state: &AppState,
    browser: &Browser,
    filter: &str,
    error: Option<String>,
    notice: Option<String>,
) -> Result<UsersPage, ApiError> {
    let filter = filter.trim();
    let mut groups = state.auth.all_groups().await?;
    let users = state
        .auth
        .list_users((!filter.is_empty()).then(|| filter.to_owned()))
        .await?
        .into_iter()
        .take(200)
        .map(|(u, mfa_enabled)| UserRow {
            groups: groups.remove(&u.id).unwrap_or_default().join(", "),
            is_self: browser.profile().is_some_and(|p| p.user.id == u.id),
            id: u.id,
            created_at: rfc3339_ms(u.created_at)[..10].to_owned(),
            disabled: u.is_disabled(),
            is_admin: u.is_admin,
            email: u.email,
            name: u.name,
            mfa_enabled,
        })
        .collect();
    Ok(UsersPage {
        layout: Layout::new(state, browser, "Users").section("users"),
        error,
        notice,
        query: filter.chars().take(320).collect(),
        users,
    })
}

/// `GET /ui/admin/users[?email=]`
pub(super) async fn users_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    if let Err(res) = admin(&state, &browser, "/ui/admin/users") {
        return *res;
    }
    let q: UsersQuery = query(&req);
    let notice = match q.done.as_str() {
        "disable" => Some("The account is disabled and signed out everywhere."),
        "enable" => Some("The account is enabled."),
        "groups" => Some("Groups saved."),
        "mfa_reset" => Some("Two-step verification is off for that account; its sessions were signed out and the user was told by mail."),
        _ => None,
    };
    match users_view(&state, &browser, &q.email, None, notice.map(str::to_owned)).await {
        Ok(page) => render(StatusCode::OK, &browser, &page, None),
        Err(e) => super::error_page(&state, &browser, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct UserAction {
    action: String,
    user_id: String,
    groups: String,
}

/// `POST /ui/admin/users`: `disable`, `enable`, `groups` or `mfa_reset` of `user_id`.
pub(super) async fn users_act(
    state: web::Data<AppState>,
    post: Posted<UserAction>,
) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let actor = match admin(&state, &browser, "/ui/admin/users") {
        Ok(id) => id,
        Err(res) => return *res,
    };
    let Ok(user_id) = Uuid::parse_str(f.user_id.trim()) else {
        return users_failed(&state, &browser, Failure::bad("That user does not exist.")).await;
    };
    let outcome = match f.action.as_str() {
        "disable" | "enable" => {
            disable_user_as(&state, &caller, actor, user_id, f.action == "disable").await
        }
        "groups" => {
            let groups: Vec<String> = f
                .groups
                .split([',', ' '])
                .map(str::trim)
                .filter(|g| !g.is_empty() && *g != crate::auth::groups::ADMINS)
                .map(str::to_owned)
                .collect();
            set_groups_as(&state, &caller, actor, user_id, &groups)
                .await
                .map(|_| ())
        }
        "mfa_reset" => reset_mfa_as(&state, &caller, actor, user_id).await,
        _ => Err(ApiError::bad_request("unknown action")),
    };
    match outcome {
        Ok(()) => see_other(&format!("/ui/admin/users?done={}", f.action)).finish(),
        Err(e) => users_failed(&state, &browser, Failure::of(e)).await,
    }
}

async fn users_failed(state: &AppState, browser: &Browser, failure: Failure) -> HttpResponse {
    match users_view(state, browser, "", Some(failure.message.clone()), None).await {
        Ok(page) => failure.render(browser, &page, None),
        Err(e) => super::error_page(state, browser, e),
    }
}

pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub action: String,
    pub user: String,
    pub ip: String,
    pub extra: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage {
    layout: Layout,
    error: Option<String>,
    chain: String,
    chain_ok: bool,
    actions: Vec<&'static str>,
    action: String,
    user: String,
    ip: String,
    since: String,
    until: String,
    rows: Vec<AuditRow>,
    next: Option<String>,
}

#[derive(Deserialize, Default, serde::Serialize, Clone)]
#[serde(default)]
struct AuditQuery {
    action: String,
    user: String,
    ip: String,
    since: String,
    until: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    before_id: Option<i64>,
}

/// `GET /ui/admin/audit`: the filters of `GET /admin/audit` (a user by email
/// or id), newest first, fifty a page, and the chain's verdict.
pub(super) async fn audit_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    if let Err(res) = admin(&state, &browser, "/ui/admin/audit") {
        return *res;
    }
    let q: AuditQuery = query(&req);
    let mut page = AuditPage {
        layout: Layout::new(&state, &browser, "Audit log").section("audit"),
        error: None,
        chain: String::new(),
        chain_ok: true,
        actions: Action::ALL.iter().map(|a| a.as_str()).collect(),
        action: q.action.trim().to_owned(),
        user: q.user.trim().chars().take(320).collect(),
        ip: q.ip.trim().chars().take(64).collect(),
        since: q.since.trim().chars().take(64).collect(),
        until: q.until.trim().chars().take(64).collect(),
        rows: Vec::new(),
        next: None,
    };
    // The chain is checked on the first page (a walk of the whole log), not
    // again for each older page.
    let verdict = match q.before_id {
        None => Some(state.audit.verify().await),
        Some(_) => None,
    };
    match verdict {
        None => page.chain = "Older events: the chain's check is on the first page.".into(),
        Some(Ok(v)) if v.ok => {
            page.chain = format!("The chain is intact: {} events checked.", v.checked)
        }
        Some(Ok(v)) => {
            page.chain_ok = false;
            page.chain = format!(
                "The chain is broken at event {}: rows were edited, inserted or deleted.",
                v.first_bad_id
                    .map_or_else(|| "?".into(), |id| id.to_string())
            );
        }
        Some(Err(e)) => {
            page.chain_ok = false;
            page.chain = format!("The chain could not be checked: {e}.");
        }
    }
    let status = match audit_rows(&state, &q, &mut page).await {
        Ok(()) => StatusCode::OK,
        Err(message) => {
            page.error = Some(message);
            StatusCode::BAD_REQUEST
        }
    };
    render(status, &browser, &page, None)
}

async fn audit_rows(state: &AppState, q: &AuditQuery, page: &mut AuditPage) -> Result<(), String> {
    let now = state.auth.now();
    let time = |text: &str, what: &str| -> Result<Option<i64>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        parse_time(text, now).map(Some).ok_or_else(|| {
            format!(
                "{what}: use a time such as 2026-12-01T18:00:00Z or an age such as 15m, 2h, 7d."
            )
        })
    };
    let action = Some(page.action.clone()).filter(|a| !a.is_empty());
    if let Some(a) = &action {
        if Action::parse(a).is_none() {
            return Err("Action: choose one from the list.".into());
        }
    }
    let user_id = match page.user.as_str() {
        "" => None,
        text if text.contains('@') => match state.auth.user_by_email(text).await {
            Ok(Some(u)) => Some(u.id.to_string()),
            Ok(None) => return Err(format!("No account has the email {text}.")),
            Err(e) => return Err(Failure::of(e.into()).message),
        },
        text => Some(
            Uuid::parse_str(text)
                .map_err(|_| "User: an email or a user id.".to_owned())?
                .to_string(),
        ),
    };
    let filter = Filter {
        action,
        user_id,
        ip: Some(page.ip.clone()).filter(|i| !i.is_empty()),
        since: time(&page.since, "Since")?,
        until: time(&page.until, "Until")?,
        limit: Some(AUDIT_PAGE),
        before_id: q.before_id,
    };
    let found = state
        .audit
        .list(filter)
        .await
        .map_err(|e| Failure::of(e.into()).message)?;
    // Who each row is about, by email (the page names at most fifty).
    let mut emails = std::collections::HashMap::new();
    for id in found.events.iter().filter_map(|e| e.user_id.as_deref()) {
        if emails.contains_key(id) {
            continue;
        }
        let email = match Uuid::parse_str(id) {
            Ok(uuid) => state
                .auth
                .user_by_id(uuid)
                .await
                .ok()
                .flatten()
                .map(|u| u.email),
            Err(_) => None,
        };
        emails.insert(id.to_owned(), email.unwrap_or_else(|| id.to_owned()));
    }
    page.rows = found
        .events
        .into_iter()
        .map(|e| {
            let user = e
                .user_id
                .as_ref()
                .and_then(|id| emails.get(id).cloned())
                .unwrap_or_default();
            AuditRow {
                user,
                ..audit_row(e)
            }
        })
        .collect();
    page.next = found.next_before_id.map(|id| {
        let next = AuditQuery {
            before_id: Some(id),
            ..q.clone()
        };
        format!(
            "/ui/admin/audit?{}",
            serde_urlencoded::to_string(&next).unwrap_or_default()
        )
    });
    Ok(())
}

fn audit_row(e: EventRow) -> AuditRow {
    AuditRow {
        id: e.id,
        at: e
            .created_at
            .replace('T', " ")
            .trim_end_matches('Z')
            .to_owned(),
        extra: details(&e.extra_data),
        action: e.action,
        user: e.user_id.unwrap_or_default(),
        ip: e.ip_address.unwrap_or_default(),
    }
}

/// `extra_data` as people read it: `key: value` pairs, text unquoted, cut
/// to [`DETAILS_CHARS`].
fn details(extra: &serde_json::Value) -> String {
    let Some(map) = extra.as_object() else {
        return String::new();
    };
    let text = map
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}: {s}"),
            other => format!("{k}: {other}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    if text.chars().count() <= DETAILS_CHARS {
        return text;
    }
    let mut cut: String = text.chars().take(DETAILS_CHARS).collect();
    cut.push('…');
    cut
}

pub struct LimitRow {
    pub rule: &'static str,
    pub key: String,
    pub count: u32,
    pub limit: u32,
    pub retry_after: u64,
}

#[derive(Template)]
#[template(path = "admin_limits.html")]
struct LimitsPage {
    layout: Layout,
    error: Option<String>,
    notice: Option<String>,
    key: String,
    entries: Vec<LimitRow>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct KeyQuery {
    key: String,
    done: String,
}

async fn limits_view(
    state: &AppState,
    browser: &Browser,
    key: &str,
    notice: Option<String>,
) -> Result<LimitsPage, ApiError> {
    let key = key.trim();
    let entries = state
        .limiter
        .inspect((!key.is_empty()).then_some(key))
        .await
        .map_err(ApiError::LimiterUnavailable)?
        .into_iter()
        .take(200)
        .map(|v| LimitRow {
            rule: v.rule.as_str(),
            key: v.key,
            count: v.count,
            limit: v.limit,
            retry_after: v.retry_after,
        })
        .collect();
    Ok(LimitsPage {
        layout: Layout::new(state, browser, "Rate limits").section("limits"),
        error: None,
        notice,
        key: key.chars().take(320).collect(),
        entries,
    })
}

/// `GET /ui/admin/rate-limits[?key=]`
pub(super) async fn limits_page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    if let Err(res) = admin(&state, &browser, "/ui/admin/rate-limits") {
        return *res;
    }
    let q: KeyQuery = query(&req);
    let notice = (q.done == "cleared").then(|| "Cleared: that key may try again now.".to_owned());
    match limits_view(&state, &browser, &q.key, notice).await {
        Ok(page) => render(StatusCode::OK, &browser, &page, None),
        Err(e) => super::error_page(&state, &browser, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ClearForm {
    key: String,
}

/// `POST /ui/admin/rate-limits`: `DELETE /admin/rate-limits?key=` (every rule).
pub(super) async fn limits_clear(
    state: web::Data<AppState>,
    post: Posted<ClearForm>,
) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let actor = match admin(&state, &browser, "/ui/admin/rate-limits") {
        Ok(id) => id,
        Err(res) => return *res,
    };
    let key = f.key.trim();
    if key.is_empty() {
        return super::failure_page(
            &state,
            &browser,
            Failure::bad("Enter an address or an email."),
        );
    }
    let event = caller
        .event(Action::RateLimitCleared)
        .extra("actor_id", actor.to_string());
    match control::clear(&state.limiter, &state.audit, key, None, event).await {
        Ok(_) => see_other(&format!(
            "/ui/admin/rate-limits?key={}&done=cleared",
            super::query_value(key)
        ))
        .finish(),
        Err(ClearError::Limiter(e)) => {
            super::error_page(&state, &browser, ApiError::LimiterUnavailable(e))
        }
        Err(ClearError::Audit(e)) => super::error_page(&state, &browser, e.into()),
    }
}
