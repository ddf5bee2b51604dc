//! Revocations announced with PostgreSQL's LISTEN/NOTIFY, when instances
//! share the database and no Redis: each instance notifies the sessions it
//! revokes on one channel and listens there for the others'. As with Redis,
//! the poll of storage picks up what a dropped connection missed.

use async_trait::async_trait;

use super::revocation::{decode_announcement, encode_announcement, RevocationBus};
use crate::store::{Revoked, Store};

/// The channel revocations are announced on (`NOTIFY portcullis_revocations`).
pub const CHANNEL: &str = "portcullis_revocations";

/// Publishes this instance's revocations through the store's database.
pub struct PgBus(pub Store);

/// Sessions per notification: PostgreSQL refuses payloads of 8,000 bytes or
/// more, and one session takes about 55.
const PER_NOTIFICATION: usize = 100;

#[async_trait]
impl RevocationBus for PgBus {
    async fn publish(&self, revoked: &[Revoked]) -> anyhow::Result<()> {
        for part in revoked.chunks(PER_NOTIFICATION) {
            self.0.notify(CHANNEL, &encode_announcement(part)).await?;
        }
        Ok(())
    }
}

/// Listens now (so nothing announced after start-up is missed), then hands
/// every announcement to `heard` for as long as the returned future runs.
pub async fn listen(
    url: &str,
    heard: impl Fn(Vec<Revoked>) + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    crate::store::listen(url, CHANNEL, move |text| match decode_announcement(&text) {
        Some(revoked) => heard(revoked),
        None => tracing::warn!("ignored a malformed revocation announcement"),
    })
    .await
}
