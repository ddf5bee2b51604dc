//! Two processes on one database: what one changes of an account, the other
//! serves from memory until its next poll of storage, and not after.

use std::sync::Arc;

use uuid::Uuid;

use super::service::AuthService;
use crate::audit::{Action, NewEvent, Origin};
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::startup::open;
use crate::store::{NewUser, User};

async fn service(config: &Config, clock: &ManualClock) -> AuthService {
    open(
        config,
        Arc::new(clock.clone()),
        Arc::new(crate::metrics::Metrics::new().expect("metrics")),
    )
    .await
    .expect("open")
    .auth
}

async fn user(auth: &AuthService, clock: &ManualClock) -> User {
    auth.store
        .create_user(
            NewUser {
                id: Uuid::new_v4(),
                email: "ada@example.com".into(),
                name: None,
                password_hash: "unused".into(),
                is_admin: false,
                created_at: clock.now_ms(),
            },
            Vec::new(),
        )
        .await
        .expect("user")
}

fn event(action: Action) -> NewEvent {
    NewEvent::new(action, &Origin::default())
}

#[tokio::test]
async fn a_peer_hears_of_changed_groups_and_disabled_accounts_at_its_next_poll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    let clock = ManualClock::new(1_800_000_000_000);
    let server = service(&config, &clock).await;
    let peer = service(&config, &clock).await;
    let ada = user(&server, &clock).await;
    let cursor = server.revocations().initial_cursor(clock.now_ms());
    let cursor = server.sync_revocations(cursor).await.expect("first poll");
    assert!(server
        .profile(ada.id)
        .await
        .expect("profile")
        .groups
        .is_empty());

    peer.set_groups(ada.id, &["ops".to_owned()], event(Action::GroupsChanged))
        .await
        .expect("groups");
    // Remembered: no read of storage per check...
    assert!(server
        .profile(ada.id)
        .await
        .expect("profile")
        .groups
        .is_empty());
    // ...until the poll, which hears the change.
    let cursor = server.sync_revocations(cursor).await.expect("poll");
    assert_eq!(
        server.profile(ada.id).await.expect("profile").groups,
        ["ops"]
    );

    // `user promote` on the command line: the implicit `admins` group.
    peer.set_admin(
        ada.id,
        true,
        vec![event(Action::GroupsChanged).user(ada.id)],
    )
    .await
    .expect("promote");
    let cursor = server.sync_revocations(cursor).await.expect("poll");
    assert_eq!(
        server.profile(ada.id).await.expect("profile").groups,
        ["admins", "ops"]
    );

    peer.reset_mfa(ada.id, vec![event(Action::MfaReset).user(ada.id)])
        .await
        .expect("reset");
    peer.set_disabled(ada.id, true, vec![event(Action::UserDisabled).user(ada.id)])
        .await
        .expect("disable");
    server.sync_revocations(cursor).await.expect("poll");
    assert!(
        server.profile(ada.id).await.is_err(),
        "a disabled account has no profile"
    );
}
