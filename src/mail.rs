//! Outgoing mail (SPEC section 8): `outbox` writes each message as an `.eml`
//! file under `data_dir/outbox/`; `smtp` sends with lettre. Only the recipient
//! and where the message went are ever logged, never the body.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;

use tokio::sync::mpsc;

use anyhow::{anyhow, Context};
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::Body;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{MailConfig, MailTransport};

/// Where messages go.
enum Transport {
    Outbox(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// Sends mail with the configured transport.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
}

/// Rewrites our `smtp_url` into lettre's form: `smtp://` means STARTTLS
/// (required) unless `?tls=none` (plain, for a local relay) or
/// `?tls=opportunistic` says otherwise; `smtps://` is TLS from the first byte.
pub fn lettre_url(smtp_url: &str) -> anyhow::Result<String> {
    let mut url = url::Url::parse(smtp_url).map_err(|e| anyhow!("mail.smtp_url: {e}"))?;
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let others: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "tls")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let tls = match (url.scheme(), tls.as_deref()) {
        ("smtp", None | Some("required")) => Some("required"),
        ("smtp", Some("opportunistic")) => Some("opportunistic"),
        ("smtp", Some("none")) => None,
        ("smtps", None) => None,
        (scheme, tls) => {
            return Err(anyhow!(
                "mail.smtp_url: unsupported scheme `{scheme}` or tls `{}`",
                tls.unwrap_or("")
            ))
        }
    };
    url.set_query(None);
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in &others {
            query.append_pair(k, v);
        }
        if let Some(tls) = tls {
            query.append_pair("tls", tls);
        }
    }
    let mut text = url.to_string();
    if text.ends_with('?') {
        text.pop();
    }
    Ok(text)
}

impl Mailer {
    pub fn from_config(cfg: &MailConfig, data_dir: &Path) -> anyhow::Result<Self> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| anyhow!("mail.from: `{}` is not a mailbox: {e}", cfg.from))?;
        let transport = match cfg.transport {
            MailTransport::Outbox => {
                let dir = data_dir.join("outbox");
                narrow_outbox(&dir);
                Transport::Outbox(dir)
            }
            MailTransport::Smtp => {
                let url = lettre_url(&cfg.smtp_url)?;
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
                    .map_err(|e| anyhow!("mail.smtp_url: {e}"))?
                    .timeout(Some(std::time::Duration::from_secs(15)))
                    .build();
                Transport::Smtp(transport)
            }
        };
        Ok(Self { transport, from })
    }

    /// Sends a plain-text message; returns where it went (a file or the relay).
    pub async fn send(&self, to: &str, subject: &str, body: String) -> anyhow::Result<String> {
        let to_box: Mailbox = to.parse().map_err(|e| anyhow!("bad recipient: {e}"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to_box)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(plain_body(
                body,
                matches!(self.transport, Transport::Outbox(_)),
            ))
            .context("cannot build message")?;
        match &self.transport {
            Transport::Outbox(dir) => {
                let dir = dir.clone();
                // A file for people to read: Unix line ends, like the
                // mail tools that read such files.
                let bytes = unix_lines(message.formatted());
                let path = tokio::task::spawn_blocking(move || write_eml(&dir, &bytes))
                    .await
                    .map_err(|e| anyhow!("outbox task failed: {e}"))??;
                let place = path.display().to_string();
                tracing::info!(recipient = %to, file = %place, "mail written to outbox");
                Ok(place)
            }
            Transport::Smtp(smtp) => {
                smtp.send(message).await.context("smtp send failed")?;
                tracing::info!(recipient = %to, "mail sent by smtp");
                Ok("smtp".to_owned())
            }
        }
    }
}

/// A body sent as it is written, never quoted-printable when it can be
/// helped, so that a link stands whole on its line: 7bit for ASCII (lettre
/// would encode any line of 76 bytes or more; RFC 5322 allows 998), and 8bit
/// for other text in a file of the outbox. Text with a NUL, a bare CR, a line
/// beyond 998 bytes, or non-ASCII bound for a relay (which may not speak
/// 8BITMIME) is left to lettre's choice of encoding.
fn plain_body(text: String, eight_bit: bool) -> Body {
    const MAX_LINE: usize = 998;
    let fits = !text.contains(['\0', '\r']) && text.split('\n').all(|l| l.len() <= MAX_LINE);
    let encoding = match (fits, text.is_ascii(), eight_bit) {
        (true, true, _) => ContentTransferEncoding::SevenBit,
        (true, false, true) => ContentTransferEncoding::EightBit,
        _ => return Body::new(text),
    };
    Body::dangerous_pre_encoded(text.replace('\n', "\r\n").into_bytes(), encoding)
}

/// `\r\n` line ends as `\n`.
fn unix_lines(bytes: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes.as_slice();
    while let Some((&b, tail)) = rest.split_first() {
        if !(b == b'\r' && tail.first() == Some(&b'\n')) {
            out.push(b);
        }
        rest = tail;
    }
    out
}

/// Work that goes out after a request's answer (a reset mail), run on a thread
/// of its own: the answer never waits for it, a slow relay holds no request
/// worker, and a graceful stop still finishes what was queued (the request
/// workers' runtimes end with the server, and would drop it).
pub struct MailQueue {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Jobs that may wait; beyond, a new one is refused (and logged). Reset
/// requests, the only source, are rate limited far below this.
const MAIL_QUEUE: usize = 10_000;
/// How long a graceful stop waits for queued mail.
const MAIL_DRAIN: std::time::Duration = std::time::Duration::from_secs(15);

impl MailQueue {
    /// Starts the thread.
    pub fn start() -> anyhow::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Job>(MAIL_QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the mail runtime")?;
        let thread = std::thread::Builder::new()
            .name("portcullis-mail".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let mut running = tokio::task::JoinSet::new();
                    loop {
                        tokio::select! {
                            job = rx.recv() => match job {
                                Some(job) => { running.spawn(job); }
                                None => break,
                            },
                            Some(_) = running.join_next(), if !running.is_empty() => {}
                        }
                    }
                    let drained = tokio::time::timeout(MAIL_DRAIN, async {
                        while running.join_next().await.is_some() {}
                    })
                    .await;
                    if drained.is_err() {
                        tracing::error!(
                            left = running.len(),
                            "mail still unsent at shutdown was dropped"
                        );
                    }
                });
            })
            .context("cannot start the mail thread")?;
        Ok(Self {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `job` on the mail thread.
    pub fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let sent = match jobs.as_ref() {
            Some(tx) => tx.try_send(Box::pin(job)).map_err(|e| e.to_string()),
            None => Err("stopped".to_owned()),
        };
        if let Err(e) = sent {
            tracing::error!(error = %e, "mail not queued");
        }
    }

    /// Takes no new jobs and waits (at most 15 s) for the queued ones.
    pub async fn stop(&self) {
        drop(self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Narrows an outbox an earlier version left readable: the directory to
/// 0700, its messages to 0600. Failures are logged, not fatal.
fn narrow_outbox(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut narrowed = crate::private_files::create_dir(dir);
    for entry in entries.flatten() {
        narrowed = narrowed.and(crate::private_files::narrow(&entry.path()));
    }
    if let Err(e) = narrowed {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot make the outbox private");
    }
}

/// Writes one message under `dir` (0700), readable by this user only (0600):
/// it holds a live reset link.
fn write_eml(dir: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    crate::private_files::create_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!(
        "{}-{}.eml",
        time::OffsetDateTime::now_utc().unix_timestamp_nanos(),
        uuid::Uuid::new_v4().simple()
    );
    // Written under a name no reader picks up, then renamed: whoever reads
    // the outbox sees whole messages only, and a failed write leaves none.
    let path = dir.join(name);
    let partial = path.with_extension("eml.part");
    let written = crate::private_files::create_new(&partial)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_mean_starttls_unless_told() {
        assert_eq!(
            lettre_url("smtp://u:p@mail.example.com:587").unwrap(),
            "smtp://u:p@mail.example.com:587?tls=required"
        );
        assert_eq!(
            lettre_url("smtp://127.0.0.1:2525?tls=none").unwrap(),
            "smtp://127.0.0.1:2525"
        );
        assert_eq!(
            lettre_url("smtp://h?tls=opportunistic").unwrap(),
            "smtp://h?tls=opportunistic"
        );
        assert_eq!(
            lettre_url("smtps://u:p@h:465").unwrap(),
            "smtps://u:p@h:465"
        );
        assert!(lettre_url("http://h").is_err());
        assert!(lettre_url("smtp://h?tls=maybe").is_err());
        assert!(lettre_url("not a url").is_err());
    }

    #[tokio::test]
    async fn outbox_writes_an_eml_file() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::from_config(&MailConfig::default(), dir.path()).unwrap();
        let place = mailer
            .send("a@example.com", "Hello", "Body text".into())
            .await
            .unwrap();
        let text = std::fs::read_to_string(&place).unwrap();
        assert!(text.contains("To: a@example.com"));
        assert!(text.contains("Subject: Hello"));
        assert!(text.contains("Body text"));
        assert!(place.ends_with(".eml"));
    }

    #[tokio::test]
    async fn outbox_mail_is_plain_text_with_whole_links() {
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::from_config(&MailConfig::default(), dir.path()).unwrap();
        let link = format!(
            "http://127.0.0.1:19100/ui/reset-password?token={}",
            "Ab9_-".repeat(20)
        );
        for body in [
            format!("Open this link:\n\n{link}\n\nThanks.\n"),
            format!("Öffnen Sie diesen Link:\n\n{link}\n"),
        ] {
            let place = mailer.send("a@example.com", "Reset", body).await.unwrap();
            let text = std::fs::read_to_string(&place).unwrap();
            assert!(!text.contains('\r'), "{text:?}");
            assert!(!text.contains("quoted-printable"), "{text}");
            assert!(text.lines().any(|l| l == link), "{text}");
        }
    }
}
