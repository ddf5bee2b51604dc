//! `/ui/account/passkeys`: a person's passkeys, with their names and last
//! use, each removable (SPEC section 14). Adding one is the script's work
//! (`passkeys.js`, served here): it calls the JSON routes with the session
//! cookie, as the API's own client.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;
use uuid::Uuid;

use super::browser::Browser;
use super::sign_in::query;
use super::{render, see_other, sign_in_first, Failure, Layout, Posted};
use crate::audit::Action;
use crate::auth::tokens::AccessClaims;
use crate::error::ApiError;
use crate::http::state::AppState;
use crate::time_fmt::rfc3339_ms;

/// The one script of the pages.
const SCRIPT: &str = include_str!("passkeys.js");

/// `GET /ui/passkeys.js`
pub(super) async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(SCRIPT)
}

/// A passkey as the page lists it.
pub struct PasskeyItem {
    pub id: Uuid,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

#[derive(Template)]
#[template(path = "passkeys.html")]
struct PasskeysPage {
    layout: Layout,
    error: Option<String>,
    notice: Option<&'static str>,
    /// Why passkeys are off here, if they are.
    off: Option<String>,
    passkeys: Vec<PasskeyItem>,
    /// The sign-in is older than ten minutes: changes need a new one, here.
    sign_in_again: Option<String>,
}

fn minutes(ms: i64) -> String {
    rfc3339_ms(ms)[..16].replace('T', " ")
}

async fn passkeys_page(
    state: &AppState,
    browser: &Browser,
    claims: &AccessClaims,
    error: Option<String>,
    notice: Option<&'static str>,
) -> Result<PasskeysPage, ApiError> {
    let passkeys = state
        .auth
        .passkeys(claims.sub)
        .await?
        .into_iter()
        .map(|row| PasskeyItem {
            id: row.id,
            name: row.name,
            created_at: minutes(row.created_at),
            last_used_at: row.last_used_at.map(minutes),
        })
        .collect();
    Ok(PasskeysPage {
        layout: Layout::new(state, browser, "Passkeys").section("account"),
        error,
        notice,
        off: (!state.auth.passkeys_on()).then(|| {
            "They need the server's address to be a domain name (such as localhost), not an IP address.".to_owned()
        }),
        passkeys,
        sign_in_again: (!state.auth.signed_in_recently(claims)).then(|| {
            let back = format!(
                "{}/ui/account/passkeys",
                state.config.server.public_url.trim_end_matches('/')
            );
            format!("/ui/login?fresh=1&rd={}", super::query_value(&back))
        }),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DoneQuery {
    done: String,
}

/// `GET /ui/account/passkeys`
pub(super) async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    browser: Browser,
) -> HttpResponse {
    let Some(claims) = browser.claims().cloned() else {
        return sign_in_first(&state, "/ui/account/passkeys");
    };
    let q: DoneQuery = query(&req);
    let notice = match q.done.as_str() {
        "added" => Some("Your passkey was added. You can sign in with it now."),
        "removed" => Some("That passkey was removed."),
        _ => None,
    };
    match passkeys_page(&state, &browser, &claims, None, notice).await {
        Ok(page) => render(StatusCode::OK, &browser, &page, None),
        Err(e) => super::error_page(&state, &browser, e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RemoveForm {
    remove: String,
}

/// `POST /ui/account/passkeys`: removes the passkey `remove`, as
/// `DELETE /auth/passkeys/{id}`.
pub(super) async fn act(state: web::Data<AppState>, post: Posted<RemoveForm>) -> HttpResponse {
    let Posted {
        caller,
        browser,
        form: f,
    } = post;
    let Some(claims) = browser.claims().cloned() else {
        return sign_in_first(&state, "/ui/account/passkeys");
    };
    let outcome = match Uuid::parse_str(f.remove.trim()) {
        Ok(id) if state.auth.signed_in_recently(&claims) => state
            .auth
            .remove_passkey(claims.sub, id, vec![caller.event(Action::PasskeyRemoved)])
            .await
            .map_err(ApiError::from),
        Ok(_) => Err(crate::auth::service::AuthError::ReauthenticationRequired.into()),
        Err(_) => Err(ApiError::NotFound("no such passkey")),
    };
    let failure = match outcome {
        Ok(()) => return see_other("/ui/account/passkeys?done=removed").finish(),
        Err(ApiError::NotFound(_)) => Failure::bad("That passkey does not exist."),
        Err(e) if e.code() == "reauthentication_required" => {
            let mut failure = Failure::of(e);
            failure.message =
                "You signed in more than ten minutes ago: sign in again to remove a passkey."
                    .into();
            failure
        }
        Err(e) => Failure::of(e),
    };
    match passkeys_page(
        &state,
        &browser,
        &claims,
        Some(failure.message.clone()),
        None,
    )
    .await
    {
        Ok(page) => failure.render(&browser, &page, None),
        Err(e) => super::error_page(&state, &browser, e),
    }
}
