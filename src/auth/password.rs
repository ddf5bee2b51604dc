//! Passwords: the policy (length in characters, zxcvbn strength) and the hashing
//! pool that keeps argon2id off the async workers and refuses work beyond a
//! bounded queue instead of queueing without limit.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::thread;

use anyhow::anyhow;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use crossbeam_channel::{bounded, Sender, TrySendError};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use super::crypto::random_bytes;
use crate::config::PasswordsConfig;

/// The password rules of SPEC section 5.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
    pub min_strength: u8,
}

impl PasswordPolicy {
    pub fn from_config(cfg: &PasswordsConfig) -> Self {
        Self {
            min_length: cfg.min_length,
            max_length: cfg.max_length,
            min_strength: cfg.min_strength,
        }
    }

    /// The cheap checks: length in Unicode scalar values.
    pub fn check_length(&self, password: &str) -> Result<(), String> {
        let len = password.chars().count();
        if len < self.min_length {
            return Err(format!("must be at least {} characters", self.min_length));
        }
        if len > self.max_length {
            return Err(format!("must be at most {} characters", self.max_length));
        }
        Ok(())
    }

    /// The costly check: a zxcvbn score of at least `min_strength`, with the
    /// user's own words (email, its local part, name) counted as known.
    pub fn check_strength(&self, password: &str, user_inputs: &[&str]) -> Result<(), String> {
        if self.min_strength == 0 {
            return Ok(());
        }
        let entropy = zxcvbn::zxcvbn(password, user_inputs);
        let score = u8::from(entropy.score());
        if score >= self.min_strength {
            return Ok(());
        }
        let mut reason = format!(
            "is too easy to guess (strength {score} of 4, at least {} required)",
            self.min_strength
        );
        if let Some(warning) = entropy.feedback().and_then(|f| f.warning()) {
            reason.push_str(&format!(": {warning}"));
        }
        Err(reason)
    }

    /// Both checks.
    pub fn check(&self, password: &str, user_inputs: &[&str]) -> Result<(), String> {
        self.check_length(password)?;
        self.check_strength(password, user_inputs)
    }
}

/// Why the pool could not run a job.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// `max_queued_hashes` jobs are already waiting.
    #[error("password hashing queue is full")]
    Overloaded,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub valid: bool,
    /// The stored hash uses other parameters than the configured ones.
    pub needs_rehash: bool,
}

type Job = Box<dyn FnOnce() + Send>;

/// argon2id with the configured parameters.
///
/// A hash needs `m_cost` KiB of working memory (19 MiB by default). Taken
/// from the allocator and given back at every hash, that memory fragments
/// the heap: a flood of wrong passwords left a process hundreds of MB large.
/// So each thread that hashes keeps one buffer of blocks and reuses it: the
/// hashing pool's threads hold their memory for good and a flood allocates
/// nothing.
#[derive(Clone)]
pub struct Argon {
    argon: Argon2<'static>,
    params: Params,
}

thread_local! {
    /// This thread's argon2 working memory, grown to the largest need seen.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Runs argon2 `argon` over `password` and `salt` into `out`, in this
/// thread's reused memory.
fn hash_into(
    argon: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> argon2::Result<()> {
    BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        let needed = params.block_count();
        if blocks.len() < needed {
            blocks.resize(needed, Block::default());
        }
        argon.hash_password_into_with_memory(password, salt, out, &mut blocks[..needed])
    })
}

impl Argon {
    pub fn new(cfg: &PasswordsConfig) -> anyhow::Result<Self> {
        let params = Params::new(
            cfg.argon2_memory_kib,
            cfg.argon2_iterations,
            cfg.argon2_parallelism,
            None,
        )
        .map_err(|e| anyhow!("argon2 parameters: {e}"))?;
        Ok(Self {
            argon: Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()),
            params,
        })
    }

    /// Hashes a password into a PHC string. Blocking: call from the pool.
    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        self.hash_with(password, |argon, params, password, salt, out| {
            hash_into(argon, params, password, salt, out)
        })
    }

    /// [`Argon::hash`] in memory of its own, given back at once: for a hash
    /// made once (the dummy hash at start-up), so that a thread that serves no
    /// login keeps no buffer.
    fn hash_once(&self, password: &str) -> anyhow::Result<String> {
        self.hash_with(password, |argon, _, password, salt, out| {
            argon.hash_password_into(password, salt, out)
        })
    }

    fn hash_with(
        &self,
        password: &str,
        run: impl FnOnce(&Argon2<'_>, &Params, &[u8], &[u8], &mut [u8]) -> argon2::Result<()>,
    ) -> anyhow::Result<String> {
        let salt = random_bytes::<16>();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        run(
            &self.argon,
            &self.params,
            password.as_bytes(),
            &salt,
            &mut out,
        )
        .map_err(|e| anyhow!("argon2: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow!("salt: {e}"))?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|e| anyhow!("argon2: {e}"))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| anyhow!("argon2: {e}"))?),
        };
        Ok(phc.to_string())
    }

    /// Verifies a password against a PHC string, with the parameters the
    /// string names. Blocking: call from the pool.
    pub fn verify(&self, password: &str, stored: &str) -> Verification {
        let Ok(parsed) = PasswordHash::new(stored) else {
            tracing::warn!("stored password hash is not a valid PHC string");
            return Verification {
                valid: false,
                needs_rehash: false,
            };
        };
        let valid = check(password.as_bytes(), &parsed).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored password hash cannot be checked");
            false
        });
        let current = parsed.algorithm.as_str() == "argon2id"
            && parsed.version == Some(Version::V0x13.into())
            && Params::try_from(&parsed).is_ok_and(|p| {
                p.m_cost() == self.params.m_cost()
                    && p.t_cost() == self.params.t_cost()
                    && p.p_cost() == self.params.p_cost()
            });
        Verification {
            valid,
            needs_rehash: valid && !current,
        }
    }
}

/// A fixed pool of hashing threads fed through a bounded queue.
#[derive(Clone)]
pub struct HashPool {
    jobs: Sender<Job>,
    argon: Arc<Argon>,
    dummy: Arc<OnceLock<String>>,
}

impl HashPool {
    /// Starts `max_concurrent_hashes` threads (0 = one per core) and computes the
    /// dummy hash used for unknown accounts in the background.
    pub fn start(cfg: &PasswordsConfig) -> anyhow::Result<Self> {
        let threads = match cfg.max_concurrent_hashes {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let (tx, rx) = bounded::<Job>(cfg.max_queued_hashes);
        for i in 0..threads {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("portcullis-hash-{i}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
                .map_err(|e| anyhow!("cannot start hashing thread: {e}"))?;
        }
        let pool = Self {
            jobs: tx,
            argon: Arc::new(Argon::new(cfg)?),
            dummy: Arc::new(OnceLock::new()),
        };
        let (argon, dummy) = (pool.argon.clone(), pool.dummy.clone());
        // Warm the dummy hash so the first unknown-email login costs one hash, like any other.
        let warm: Job = Box::new(move || {
            dummy_hash(&argon, &dummy);
        });
        let _ = pool.jobs.try_send(warm);
        Ok(pool)
    }

    /// Jobs waiting for a thread right now (queued, not yet started).
    pub fn queue_depth(&self) -> usize {
        self.jobs.len()
    }

    /// Runs `f` on a pool thread; [`HashError::Overloaded`] when the queue is full.
    pub async fn run<T, F>(&self, f: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce(&Argon) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let argon = self.argon.clone();
        let job: Job = Box::new(move || {
            let _ = tx.send(f(&argon));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(HashError::Overloaded),
            Err(TrySendError::Disconnected(_)) => {
                return Err(HashError::Internal(anyhow!("hashing pool stopped")))
            }
        }
        rx.await
            .map_err(|_| HashError::Internal(anyhow!("hashing job was dropped")))
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        self.run(move |argon| argon.hash(password.expose_secret()))
            .await?
            .map_err(HashError::Internal)
    }

    /// Verifies `password` against `stored`, or against a dummy hash when there is
    /// no account, so that both cost the same.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<Verification, HashError> {
        let dummy = self.dummy.clone();
        self.run(move |argon| match stored {
            Some(hash) => argon.verify(password.expose_secret(), &hash),
            None => {
                let _ = argon.verify(password.expose_secret(), dummy_hash(argon, &dummy));
                Verification {
                    valid: false,
                    needs_rehash: false,
                }
            }
        })
        .await
    }

    /// The argon2 settings, for callers that hash outside the server (the CLI).
    pub fn argon(&self) -> &Argon {
        &self.argon
    }
}

/// Whether `password` gives the hash `stored` names, under the algorithm,
/// version and parameters it names; compared in constant time.
fn check(password: &[u8], stored: &PasswordHash<'_>) -> anyhow::Result<bool> {
    let algorithm = Algorithm::try_from(stored.algorithm).map_err(|e| anyhow!("{e}"))?;
    let version = stored
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| anyhow!("{e}"))?
        .unwrap_or_default();
    let params = Params::try_from(stored).map_err(|e| anyhow!("{e}"))?;
    let (Some(salt), Some(expected)) = (&stored.salt, &stored.hash) else {
        return Ok(false);
    };
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| anyhow!("{e}"))?;
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = out
        .get_mut(..expected.len())
        .ok_or_else(|| anyhow!("stored hash is too long"))?;
    let argon = Argon2::new(algorithm, version, params.clone());
    hash_into(&argon, &params, password, salt, out).map_err(|e| anyhow!("{e}"))?;
    Ok(super::crypto::constant_time_eq(out, expected.as_bytes()))
}

fn dummy_hash<'a>(argon: &Argon, cell: &'a OnceLock<String>) -> &'a str {
    cell.get_or_init(|| {
        argon
            .hash_once("portcullis dummy password for unknown accounts")
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cheap() -> PasswordsConfig {
        PasswordsConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            max_concurrent_hashes: 1,
            ..PasswordsConfig::default()
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let policy = PasswordPolicy::from_config(&PasswordsConfig::default());
        assert!(policy.check_length(&"é".repeat(12)).is_ok());
        assert!(policy.check_length(&"é".repeat(11)).is_err());
        assert!(policy.check_length(&"a".repeat(129)).is_err());
    }

    #[test]
    fn strength_uses_user_inputs() {
        let policy = PasswordPolicy::from_config(&PasswordsConfig::default());
        assert!(policy.check("correct horse battery staple", &[]).is_ok());
        assert!(policy.check("password1234", &[]).is_err());
        let email = "zanzibar.quixotic.umbrella@example.com";
        let password = "zanzibar.quixotic.umbrella";
        assert!(policy.check(password, &[]).is_ok());
        let reason = policy
            .check(password, &[email, "zanzibar.quixotic.umbrella"])
            .unwrap_err();
        assert!(reason.contains("too easy"), "{reason}");
    }

    #[tokio::test]
    async fn hash_verify_and_rehash_detection() {
        let pool = HashPool::start(&cheap()).unwrap();
        let hash = pool
            .hash(SecretString::from("hunter2hunter2"))
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let ok = pool
            .verify("hunter2hunter2".into(), Some(hash.clone()))
            .await
            .unwrap();
        assert_eq!(
            ok,
            Verification {
                valid: true,
                needs_rehash: false
            }
        );
        let bad = pool
            .verify("wrong".into(), Some(hash.clone()))
            .await
            .unwrap();
        assert!(!bad.valid);
        let none = pool.verify("hunter2hunter2".into(), None).await.unwrap();
        assert!(!none.valid);

        let stronger = HashPool::start(&PasswordsConfig {
            argon2_iterations: 2,
            ..cheap()
        })
        .unwrap();
        let v = stronger
            .verify("hunter2hunter2".into(), Some(hash))
            .await
            .unwrap();
        assert_eq!(
            v,
            Verification {
                valid: true,
                needs_rehash: true
            }
        );
    }

    /// Our PHC strings are the argon2 crate's, both ways, and a hash reuses
    /// the thread's memory instead of allocating its own.
    #[test]
    fn hashes_agree_with_the_argon2_crate_and_reuse_memory() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = Argon::new(&cheap()).unwrap();
        let params = Params::new(64, 1, 1, None).unwrap();
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let hash = ours.hash("hunter2hunter2").unwrap();
        let parsed = PasswordHash::new(&hash).unwrap();
        assert!(theirs.verify_password(b"hunter2hunter2", &parsed).is_ok());
        assert!(theirs.verify_password(b"hunter3hunter3", &parsed).is_err());
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let made = theirs
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert!(ours.verify("correct horse", &made).valid);
        assert!(!ours.verify("wrong horse", &made).valid);
        // Another algorithm or version in a stored hash is honoured.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(32, 2, 1, None).unwrap(),
        );
        let old = argon2i
            .hash_password(b"legacy pass", &salt)
            .unwrap()
            .to_string();
        let v = ours.verify("legacy pass", &old);
        assert!(v.valid && v.needs_rehash);
        assert!(
            !ours
                .verify("legacy", "$argon2id$v=19$m=64,t=1,p=1$bm90IGEgaGFzaA")
                .valid
        );

        let memory = || BLOCKS.with(|b| (b.borrow().as_ptr() as usize, b.borrow().len()));
        let before = memory();
        for _ in 0..3 {
            ours.hash("hunter2hunter2").unwrap();
            ours.verify("hunter2hunter2", &hash);
        }
        assert_eq!(memory(), before, "the same buffer every time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_is_overloaded_not_queued() {
        let pool = HashPool::start(&PasswordsConfig {
            max_queued_hashes: 1,
            ..cheap()
        })
        .unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        // Let the start-up job (the dummy hash) finish first.
        while matches!(pool.run(|_| ()).await, Err(HashError::Overloaded)) {
            tokio::task::yield_now().await;
        }
        // Occupy the only thread until released.
        let blocker = pool.clone();
        let busy = tokio::spawn(async move {
            blocker
                .run(move |_| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
                .await
        });
        started_rx.recv().unwrap();
        // One job may wait; the next is refused.
        let queued_pool = pool.clone();
        let queued = tokio::spawn(async move { queued_pool.run(|_| 7).await });
        while pool.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        // A bug here must fail the test, not hang it: the only thread is blocked.
        let refused = tokio::time::timeout(Duration::from_secs(10), pool.run(|_| ())).await;
        release_tx.send(()).unwrap();
        assert!(matches!(refused, Ok(Err(HashError::Overloaded))));
        busy.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap().unwrap(), 7);
    }
}
