//! Outgoing mail (SPEC section 8): `outbox` writes each message as an `.eml`
//! file under `data_dir/outbox/`; `smtp` sends with lettre. Only the recipient
//! and where the message went are ever logged, never the body.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use lettre::message::header::ContentType;
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
            MailTransport::Outbox => Transport::Outbox(data_dir.join("outbox")),
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
            .body(body)
            .context("cannot build message")?;
        match &self.transport {
            Transport::Outbox(dir) => {
                let dir = dir.clone();
                let bytes = message.formatted();
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
    // the outbox sees whole messages only.
    let path = dir.join(name);
    let partial = path.with_extension("eml.part");
    crate::private_files::create_new(&partial)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&partial, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
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
}
