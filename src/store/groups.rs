//! Groups (SPEC section 10): the names a user belongs to. The implicit group
//! `admins` is the administrator flag and is never stored.

use uuid::Uuid;

use super::db::Chain;
use super::{Audit, Store, StoreResult};
use crate::clock::Millis;

/// What [`Store::set_groups`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl Store {
    /// The stored groups of a user, sorted.
    pub async fn groups_of(&self, user_id: Uuid) -> StoreResult<Vec<String>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT name FROM user_groups WHERE user_id = $1 ORDER BY name",
                        &[&user_id.to_string()],
                        |r| r.get(0),
                    )
                    .await
                })
            })
            .await
    }

    /// Every stored membership, by user then name.
    pub async fn all_groups(&self) -> StoreResult<Vec<(Uuid, String)>> {
        self.db
            .run(move |c| {
                Box::pin(async move {
                    c.query(
                        "SELECT user_id, name FROM user_groups ORDER BY user_id, name",
                        &[],
                        |r| Ok((r.uuid(0)?, r.get(1)?)),
                    )
                    .await
                })
            })
            .await
    }

    /// Makes `groups` (valid, sorted, without duplicates) the user's stored
    /// groups. `audit` is given the change and commits with it only when
    /// something changed; `None` when there is no such user.
    pub async fn set_groups(
        &self,
        user_id: Uuid,
        groups: Vec<String>,
        now: Millis,
        audit: impl FnOnce(&GroupChange) -> Audit + Send + 'static,
    ) -> StoreResult<Option<GroupChange>> {
        self.db
            .unit(Chain::After, now, move |c| {
                Box::pin(async move {
                    let user = user_id.to_string();
                    let exists = c
                        .query_opt(
                            "SELECT id FROM users WHERE id = $1 FOR UPDATE",
                            &[&user],
                            |_| Ok(()),
                        )
                        .await?;
                    if exists.is_none() {
                        return Ok((None, Vec::new()));
                    }
                    let old: Vec<String> = c
                        .query(
                            "SELECT name FROM user_groups WHERE user_id = $1",
                            &[&user],
                            |r| r.get(0),
                        )
                        .await?;
                    let mut change = GroupChange::default();
                    for name in old.iter().filter(|g| !groups.contains(g)) {
                        c.execute(
                            "DELETE FROM user_groups WHERE user_id = $1 AND name = $2",
                            &[&user, name],
                        )
                        .await?;
                        change.removed.push(name.clone());
                    }
                    for name in groups.iter().filter(|g| !old.contains(g)) {
                        c.execute(
                            "INSERT INTO user_groups (user_id, name) VALUES ($1, $2)",
                            &[&user, name],
                        )
                        .await?;
                        change.added.push(name.clone());
                    }
                    change.removed.sort();
                    let rows = if change.added.is_empty() && change.removed.is_empty() {
                        Vec::new()
                    } else {
                        audit(&change)
                    };
                    Ok((Some(change), rows))
                })
            })
            .await
    }
}
