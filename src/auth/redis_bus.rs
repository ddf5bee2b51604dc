//! Revocations announced over Redis pub/sub: every instance publishes the
//! sessions it revokes on one channel and listens there for the others'.
//! A message lost while the subscription was down is still picked up by the
//! poll of storage; the bus only makes the common case immediate.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, PubSub};
use ::redis::AsyncCommands;
use async_trait::async_trait;
use futures_util::StreamExt;

use super::revocation::{decode_announcement, encode_announcement, RevocationBus};
use crate::ratelimit::redis_store::connect_manager;
use crate::store::Revoked;

/// The channel every instance publishes on and listens to.
pub const CHANNEL: &str = "portcullis:revocations";
/// Longest wait for a publish, or for (re)connecting the subscription.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before subscribing again after the subscription dropped.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Publishes this instance's revocations.
pub struct RedisBus {
    conn: ConnectionManager,
}

impl RedisBus {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            conn: connect_manager(url).await?,
        })
    }
}

#[async_trait]
impl RevocationBus for RedisBus {
    async fn publish(&self, revoked: &[Revoked]) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        let message = encode_announcement(revoked);
        tokio::time::timeout(TIMEOUT, conn.publish::<_, _, i64>(CHANNEL, message))
            .await
            .map_err(|_| anyhow::anyhow!("no answer from Redis"))??;
        Ok(())
    }
}

async fn subscribe(client: &::redis::Client) -> anyhow::Result<PubSub> {
    let mut pubsub = tokio::time::timeout(TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| anyhow::anyhow!("no answer from Redis"))??;
    tokio::time::timeout(TIMEOUT, pubsub.subscribe(CHANNEL))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from Redis"))??;
    Ok(pubsub)
}

/// Subscribes now (so nothing announced after start-up is missed), then hands
/// every announcement to `heard` for as long as the returned future runs,
/// subscribing again whenever the connection drops.
pub async fn listen(
    url: &str,
    heard: impl Fn(Vec<Revoked>) + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let client = ::redis::Client::open(url).map_err(|e| anyhow::anyhow!("redis_url: {e}"))?;
    let first = subscribe(&client).await?;
    Ok(async move {
        let mut pubsub = Some(first);
        loop {
            let current = match pubsub.take() {
                Some(p) => p,
                None => match subscribe(&client).await {
                    Ok(p) => {
                        tracing::info!("revocation announcements: subscribed again");
                        p
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = format!("{e:#}"),
                            "cannot subscribe to revocation announcements"
                        );
                        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
                        continue;
                    }
                },
            };
            let mut messages = current.into_on_message();
            while let Some(message) = messages.next().await {
                let Ok(text) = message.get_payload::<String>() else {
                    continue;
                };
                match decode_announcement(&text) {
                    Some(revoked) => heard(revoked),
                    None => tracing::warn!("ignored a malformed revocation announcement"),
                }
            }
            tracing::warn!("revocation announcements: subscription dropped");
            tokio::time::sleep(RESUBSCRIBE_AFTER).await;
        }
    })
}
