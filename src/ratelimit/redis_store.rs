//! The shared [`LimitStore`]: sliding windows in Redis, so that several
//! instances behind one load balancer count against the same budgets.
//!
//! A window is a sorted set, `portcullis:rl:<rule>:<key id>` (the key's keyed
//! identity in hex, never its text), of events scored by their time in
//! milliseconds; a member is `<at>:<tag>:<nonce>:<i>:<shown>` (the nonce keeps
//! two events of the same moment and tag apart; `shown` is what the admin view
//! shows of the key, at most 46 bytes). Every operation that
//! reads and writes is one Lua script, run atomically by Redis: the check and
//! the reservation of all of a request's keys happen in one step there, never
//! as a read followed by a write from here. Each set expires one window after
//! its newest event, so Redis forgets what the limiter no longer needs.
//!
//! Times are this instance's clock, as for tokens: instances must keep their
//! clocks in step (NTP). A Redis that cannot be reached, or does not answer
//! within [`OP_TIMEOUT`], is a [`LimitError`], and the limiter then refuses the
//! guarded request rather than letting it through unchecked.

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands, Script};
use async_trait::async_trait;

use super::key::{KeyId, LimitKey, Shown};
use super::rules::{Rule, RuleName, Rules};
use super::store::{Acquired, LimitError, LimitResult, LimitStore, Slot, SlotUsage, WindowState};
use super::window::{Event, Usage};
use crate::clock::Millis;

/// Longest wait for any one Redis operation before it counts as down.
pub const OP_TIMEOUT: Duration = Duration::from_secs(1);

/// Prefix of every window's key.
const PREFIX: &str = "portcullis:rl:";
/// Prefix of the known devices: a sorted set per account, `portcullis:kd:<account
/// id>`, of known addresses' ids scored by the time each signed in; trimmed of
/// the expired and of all but the newest [`MAX_DEVICES`] at every sign-in.
const DEVICES: &str = "portcullis:kd:";
/// Known devices kept per account: bounds what one account's sign-ins from
/// many addresses can make Redis hold.
const MAX_DEVICES: isize = 1000;

/// Check and reserve. KEYS: the windows. ARGV: now, nonce, then per key its
/// limit, window (ms), tag and shown text. Returns `{}` when every key had room (one event
/// recorded in each), else `{index, count, reset_ms, ...}` for each full key
/// (nothing recorded).
const ACQUIRE: &str = r"
local now = tonumber(ARGV[1])
local full = {}
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 4
  local limit = tonumber(ARGV[base + 1])
  local window = tonumber(ARGV[base + 2])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  if count >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    local reset = tonumber(oldest[2]) + window - now
    if reset < 0 then reset = 0 end
    table.insert(full, i - 1)
    table.insert(full, count)
    table.insert(full, reset)
  end
end
if #full > 0 then return full end
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 4
  local window = tonumber(ARGV[base + 2])
  local tag = ARGV[base + 3]
  local shown = ARGV[base + 4]
  redis.call('ZADD', KEYS[i], ARGV[1], ARGV[1] .. ':' .. tag .. ':' .. ARGV[2] .. ':' .. i .. ':' .. shown)
  local newest = redis.call('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  local ttl = tonumber(newest[2]) + window - now
  if ttl < 1 then ttl = 1 end
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return {}
";

/// Gives back one event. KEYS: the window. ARGV: at, tag. Returns 1 if found.
const RELEASE: &str = r"
local prefix = ARGV[1] .. ':' .. ARGV[2] .. ':'
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1])) do
  if string.sub(m, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[1], m)
    return 1
  end
end
return 0
";

/// Usage without reserving. KEYS: the window. ARGV: now, window (ms).
/// Returns `{count, reset_ms}`.
const USAGE: &str = r"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local horizon = '(' .. tostring(now - window)
local count = redis.call('ZCOUNT', KEYS[1], horizon, '+inf')
if count == 0 then return {0, 0} end
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], horizon, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local reset = tonumber(oldest[2]) + window - now
if reset < 0 then reset = 0 end
return {count, reset}
";

/// Forgets the events with one tag. KEYS: the window. ARGV: tag.
const CLEAR_TAG: &str = r"
local removed = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local tag = string.match(m, '^[^:]+:([^:]+):')
  if tag == ARGV[1] then
    redis.call('ZREM', KEYS[1], m)
    removed = removed + 1
  end
end
return removed
";

/// Live events of a window: `{member, score, ...}` after the horizon.
/// KEYS: the window. ARGV: now, window (ms).
const LIVE: &str = r"
local horizon = '(' .. tostring(tonumber(ARGV[1]) - tonumber(ARGV[2]))
return redis.call('ZRANGEBYSCORE', KEYS[1], horizon, '+inf', 'WITHSCORES')
";

/// Windows in a Redis server shared by every instance.
pub struct RedisStore {
    conn: ConnectionManager,
    acquire: Script,
    release: Script,
    usage: Script,
    clear_tag: Script,
    live: Script,
}

fn down(e: impl std::fmt::Display) -> LimitError {
    LimitError(e.to_string())
}

/// Runs one Redis operation within [`OP_TIMEOUT`].
async fn bounded<T>(
    op: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> LimitResult<T> {
    match tokio::time::timeout(OP_TIMEOUT, op).await {
        Ok(result) => result.map_err(down),
        Err(_) => Err(LimitError(format!(
            "no answer from Redis within {} ms",
            OP_TIMEOUT.as_millis()
        ))),
    }
}

fn devices_key(account: KeyId) -> String {
    format!("{DEVICES}{}", account.to_hex())
}

fn window_key(rule: RuleName, key: KeyId) -> String {
    format!("{PREFIX}{}:{}", rule.as_str(), key.to_hex())
}

/// `(at, tag)` of a member `<at>:<tag>:<nonce>:<i>:<shown>`, and its shown
/// text.
fn parse_member(member: &str) -> Option<(Event, &str)> {
    let mut parts = member.splitn(5, ':');
    let at = parts.next()?.parse().ok()?;
    let tag = parts.next()?.parse().ok()?;
    let shown = parts.nth(2).unwrap_or("");
    Some((Event { at, tag }, shown))
}
/// A connection to `url` that reconnects by itself after an outage, each
/// command bounded by [`OP_TIMEOUT`]. Fails when Redis cannot be reached now.
pub async fn connect_manager(url: &str) -> anyhow::Result<ConnectionManager> {
    let client = ::redis::Client::open(url).map_err(|e| anyhow::anyhow!("redis_url: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(OP_TIMEOUT))
        .set_response_timeout(Some(OP_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    tokio::time::timeout(
        OP_TIMEOUT * 3,
        ConnectionManager::new_with_config(client, config),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer from Redis"))?
    .map_err(|e| anyhow::anyhow!("cannot connect to Redis: {e}"))
}

impl RedisStore {
    /// Connects to `url` (failing when Redis cannot be reached now); later
    /// outages are retried in the background while operations fail fast.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            conn: connect_manager(url).await?,
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            usage: Script::new(USAGE),
            clear_tag: Script::new(CLEAR_TAG),
            live: Script::new(LIVE),
        })
    }

    /// The live window of (rule, key), if it holds any event.
    async fn live_window(
        &self,
        rule: &Rule,
        key: KeyId,
        now: Millis,
    ) -> LimitResult<Option<WindowState>> {
        let mut conn = self.conn.clone();
        let flat: Vec<String> = bounded(
            self.live
                .key(window_key(rule.name, key))
                .arg(now)
                .arg(rule.window_ms)
                .invoke_async(&mut conn),
        )
        .await?;
        let mut shown = Shown::new("");
        let mut events = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks_exact(2) {
            if let Some((event, text)) = parse_member(&pair[0]) {
                shown = Shown::new(text);
                events.push(event);
            }
        }
        Ok((!events.is_empty()).then_some(WindowState {
            rule: rule.name,
            key: LimitKey { id: key, shown },
            events,
        }))
    }
}

#[async_trait]
impl LimitStore for RedisStore {
    async fn acquire(&self, slots: &[Slot<'_>], now: Millis) -> LimitResult<Acquired> {
        let mut invocation = self.acquire.prepare_invoke();
        invocation.arg(now).arg(rand::random::<u64>());
        for slot in slots {
            invocation
                .key(window_key(slot.rule.name, slot.id))
                .arg(slot.rule.limit)
                .arg(slot.rule.window_ms)
                .arg(slot.tag)
                .arg(slot.key().shown.as_str());
        }
        let mut conn = self.conn.clone();
        let full: Vec<i64> = bounded(invocation.invoke_async(&mut conn)).await?;
        if full.is_empty() {
            return Ok(Acquired::Granted);
        }
        let denied = full
            .chunks_exact(3)
            .filter_map(|f| {
                let slot = slots.get(usize::try_from(f[0]).ok()?)?;
                Some(SlotUsage {
                    rule: slot.rule,
                    usage: Usage {
                        count: u32::try_from(f[1]).unwrap_or(u32::MAX),
                        reset_ms: f[2],
                    },
                })
            })
            .collect::<Vec<_>>();
        if denied.is_empty() {
            return Err(LimitError(format!(
                "unexpected answer from Redis: {full:?}"
            )));
        }
        Ok(Acquired::Denied(denied))
    }

    async fn release(&self, rule: &Rule, key: KeyId, event: Event) -> LimitResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = bounded(
            self.release
                .key(window_key(rule.name, key))
                .arg(event.at)
                .arg(event.tag)
                .invoke_async(&mut conn),
        )
        .await?;
        Ok(())
    }

    async fn usage(&self, rule: &Rule, key: KeyId, now: Millis) -> LimitResult<Usage> {
        let mut conn = self.conn.clone();
        let answer: Vec<i64> = bounded(
            self.usage
                .key(window_key(rule.name, key))
                .arg(now)
                .arg(rule.window_ms)
                .invoke_async(&mut conn),
        )
        .await?;
        match answer.as_slice() {
            [count, reset_ms] => Ok(Usage {
                count: u32::try_from(*count).unwrap_or(u32::MAX),
                reset_ms: *reset_ms,
            }),
            other => Err(LimitError(format!(
                "unexpected answer from Redis: {other:?}"
            ))),
        }
    }

    async fn clear(&self, rule: &Rule, key: KeyId, tag: Option<u64>) -> LimitResult<()> {
        let mut conn = self.conn.clone();
        let window = window_key(rule.name, key);
        match tag {
            None => bounded(conn.del::<_, i64>(window)).await.map(drop),
            Some(tag) => bounded(
                self.clear_tag
                    .key(window)
                    .arg(tag)
                    .invoke_async::<i64>(&mut conn),
            )
            .await
            .map(drop),
        }
    }

    async fn windows(
        &self,
        rules: &Rules,
        key: Option<KeyId>,
        now: Millis,
        max: usize,
    ) -> LimitResult<Vec<WindowState>> {
        let mut out = Vec::new();
        match key {
            Some(key) => {
                for rule in rules.enabled() {
                    out.extend(self.live_window(rule, key, now).await?);
                }
            }
            None => {
                let mut conn = self.conn.clone();
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = bounded(
                        ::redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(format!("{PREFIX}*"))
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut conn),
                    )
                    .await?;
                    for full in keys {
                        let Some((name, key)) = full
                            .strip_prefix(PREFIX)
                            .and_then(|rest| rest.split_once(':'))
                            .and_then(|(name, hex)| Some((name, KeyId::from_hex(hex)?)))
                        else {
                            continue;
                        };
                        let Some(rule) = RuleName::parse(name).and_then(|n| rules.get(n)) else {
                            continue;
                        };
                        out.extend(self.live_window(rule, key, now).await?);
                    }
                    cursor = next;
                    if cursor == 0 || out.len() >= max {
                        break;
                    }
                }
            }
        }
        out.truncate(max);
        out.sort_by(|a, b| (a.rule, a.key.shown.as_str()).cmp(&(b.rule, b.key.shown.as_str())));
        Ok(out)
    }

    async fn remember_device(
        &self,
        account: KeyId,
        ip: KeyId,
        at: Millis,
        ttl_ms: Millis,
    ) -> LimitResult<()> {
        let key = devices_key(account);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .zadd(&key, ip.to_hex(), at)
            .ignore()
            .zrembyscore(&key, "-inf", at.saturating_sub(ttl_ms))
            .ignore()
            .zremrangebyrank(&key, 0, -(MAX_DEVICES + 1))
            .ignore()
            .pexpire(&key, ttl_ms.max(1))
            .ignore();
        let mut conn = self.conn.clone();
        bounded(pipe.query_async::<()>(&mut conn)).await
    }

    async fn forget_devices(&self, account: KeyId, before: Millis) -> LimitResult<()> {
        let mut conn = self.conn.clone();
        bounded(conn.zrembyscore::<_, _, _, i64>(devices_key(account), "-inf", before))
            .await
            .map(drop)
    }

    async fn known_device(&self, account: KeyId, ip: KeyId, since: Millis) -> LimitResult<bool> {
        let mut conn = self.conn.clone();
        let at: Option<f64> = bounded(conn.zscore(devices_key(account), ip.to_hex())).await?;
        // Scores are doubles; times in milliseconds are exact in them.
        Ok(at.is_some_and(|at| at > since as f64))
    }

    /// Windows in Redis outlive every instance: nothing to import.
    async fn import(&self, _rules: &Rules, _windows: Vec<WindowState>, _now: Millis) {}

    fn is_shared(&self) -> bool {
        true
    }

    fn tracked_keys(&self) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_their_time_and_tag() {
        assert_eq!(
            parse_member("1700000000123:18446744073709551615:42:1:2001:db8::/64"),
            Some((
                Event {
                    at: 1_700_000_000_123,
                    tag: u64::MAX
                },
                "2001:db8::/64"
            ))
        );
        assert_eq!(parse_member("garbage"), None);
        assert_eq!(
            window_key(RuleName::LoginIp, KeyId([0xab; 16])),
            format!("portcullis:rl:login_ip:{}", "ab".repeat(16))
        );
    }
}
