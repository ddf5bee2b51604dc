//! The configuration's tests: loading, layering, errors, and the example file.
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(file: Option<&str>, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    if let Some(text) = file {
        std::fs::write(&path, text).unwrap();
    } else {
        std::fs::write(&path, "").unwrap();
    }
    Config::load_from(Some(&path), &env(vars), &Overrides::default())
}

#[test]
fn durations_parse_and_print() {
    for (text, secs) in [
        ("900s", 900),
        ("15m", 900),
        ("1h", 3600),
        ("30d", 2_592_000),
    ] {
        let d: Duration = text.parse().unwrap();
        assert_eq!(d.as_secs(), secs, "{text}");
    }
    assert_eq!(Duration::secs(900).to_string(), "15m");
    assert_eq!(Duration::secs(61).to_string(), "61s");
    assert_eq!("250ms".parse::<Duration>().unwrap().to_string(), "250ms");
    for bad in [
        "",
        "15",
        "m",
        "-5m",
        "1.5h",
        "15 m",
        "15min",
        "99999999999999h",
        "720200220206d",
        "999999999999d",
    ] {
        assert!(bad.parse::<Duration>().is_err(), "{bad:?} accepted");
    }
}

#[test]
fn empty_file_gives_defaults() {
    let loaded = load(None, &[]).unwrap();
    assert!(loaded.file.is_some());
    assert_eq!(
        Config {
            file: None,
            ..loaded
        },
        Config::default()
    );
}

#[test]
fn file_then_env_then_flags() {
    let file = "[server]\nbind = \"127.0.0.1:7000\"\nmax_body_bytes = 4096\n";
    let cfg = load(Some(file), &[("PORTCULLIS_SERVER__BIND", "0.0.0.0:9000")]).unwrap();
    assert_eq!(cfg.server.bind, "0.0.0.0:9000");
    assert_eq!(cfg.server.max_body_bytes, 4096);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, file).unwrap();
    let flags = Overrides {
        bind: Some("127.0.0.1:1234".into()),
        data_dir: Some("/tmp/x".into()),
        log_format: Some(LogFormat::Json),
    };
    let vars = env(&[("PORTCULLIS_SERVER__BIND", "0.0.0.0:9000")]);
    let cfg = Config::load_from(Some(&path), &vars, &flags).unwrap();
    assert_eq!(cfg.server.bind, "127.0.0.1:1234");
    assert_eq!(cfg.storage.data_dir, PathBuf::from("/tmp/x"));
}

/// A variable that names no key is refused with the words a file's typo
/// gets, in one line, and a hint where one can be guessed.
#[test]
fn env_typos_are_errors_worded_as_file_typos() {
    let cases = [
        (
            "PORTCULLIS_SERVER_BIND",
            "did you mean PORTCULLIS_SERVER__BIND?",
        ),
        ("PORTCULLIS_BIND", "did you mean PORTCULLIS_SERVER__BIND?"),
        ("PORTCULLIS_FOO", "PORTCULLIS_<SECTION>__<KEY>"),
        ("PORTCULLIS_FOO__BAR", "foo: unknown section"),
        (
            "PORTCULLIS_SERVER__BIND__PORT",
            "server.bind: is a key, not a section",
        ),
    ];
    for (name, words) in cases {
        let err = load(None, &[(name, "127.0.0.1:9000")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("environment variable {name}: ")),
            "{err}"
        );
        assert!(err.contains(words), "{name}: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
    for (file, var) in [
        ("[server]\nbnid = \"x\"\n", "PORTCULLIS_SERVER__BNID"),
        (
            "[rate_limit.rules.login_ipp]\nlimit = 3\n",
            "PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IPP__LIMIT",
        ),
        ("[mial]\nfrom = \"x\"\n", "PORTCULLIS_MIAL__FROM"),
    ] {
        let from_file = load(Some(file), &[]).unwrap_err().to_string();
        let from_env = load(None, &[(var, "3")]).unwrap_err().to_string();
        let said = |e: &str| e.split_once(": ").map(|(_, m)| m.to_owned()).unwrap();
        assert_eq!(said(&from_file), said(&from_env), "{file}");
        assert!(!from_file.contains('\n'), "{from_file}");
    }
    let rule = load(
        None,
        &[("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IPP__LIMIT", "3")],
    )
    .unwrap_err();
    assert!(
        rule.to_string().contains(
            "login_ipp: unknown rate-limit rule (rules: client_auth_ip, login_account, login_ip"
        ),
        "{rule}"
    );
    // A bad value set by a variable names the variable, whatever the file.
    let err = load(
        Some("[server]\n"),
        &[("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__LIMIT", "-1")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("environment variable PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__LIMIT: rate_limit.rules.login_ip.limit"), "{err}");
}

/// The variables Kubernetes sets for a Service named portcullis are
/// not refused; anything else without a `__` is.
#[test]
fn kubernetes_service_links_are_passed_over() {
    let links = [
        ("PORTCULLIS_SERVICE_HOST", "10.0.0.1"),
        ("PORTCULLIS_SERVICE_PORT", "8080"),
        ("PORTCULLIS_SERVICE_PORT_HTTP", "8080"),
        ("PORTCULLIS_PORT", "tcp://10.0.0.1:8080"),
        ("PORTCULLIS_PORT_8080_TCP", "tcp://10.0.0.1:8080"),
        ("PORTCULLIS_PORT_8080_TCP_PROTO", "tcp"),
        ("PORTCULLIS_PORT_8080_TCP_PORT", "8080"),
        ("PORTCULLIS_PORT_8080_TCP_ADDR", "10.0.0.1"),
    ];
    let loaded = load(None, &links).unwrap();
    assert_eq!(
        Config {
            file: None,
            ..loaded
        },
        Config::default()
    );
    for not_a_link in [
        "PORTCULLIS_PORT_HTTP",
        "PORTCULLIS_PORT_8080_XTP",
        "PORTCULLIS_SERVICE_HOSTS",
    ] {
        assert!(load(None, &[(not_a_link, "1")]).is_err(), "{not_a_link}");
    }
}

#[test]
fn nested_env_keys_and_types() {
    let cfg = load(
        None,
        &[
            ("PORTCULLIS_RATE_LIMIT__RULES__LOGIN_IP__LIMIT", "10"),
            ("PORTCULLIS_RATE_LIMIT__RULES__MFA__ENABLED", "false"),
            ("PORTCULLIS_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
            ("PORTCULLIS_TOKENS__ISSUER", "1234"),
            ("OTHER_PROGRAM__SETTING", "not ours"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.rate_limit.rules[&RuleName::LoginIp].limit, 10);
    assert!(!cfg.rate_limit.rules[&RuleName::Mfa].enabled);
    assert_eq!(cfg.server.trusted_proxies.len(), 1);
    assert_eq!(cfg.tokens.issuer, "1234");
}

#[test]
fn unknown_keys_are_named() {
    let err = load(Some("[server]\nbnid = \"x\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("bnid"), "{err}");
    let err = load(None, &[("PORTCULLIS_SERVER__NOPE", "1")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let err = load(
        Some("[rate_limit.rules.made_up]\nlimit = 1\nwindow = \"1m\"\n"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rate_limit.rules.made_up"), "{err}");
}

#[test]
fn bad_values_name_key_and_reason() {
    let cases: &[(&str, &str)] = &[
        (
            "[rate_limit.rules.login_ip]\nlimit = -1\nwindow = \"15m\"\n",
            "rate_limit.rules.login_ip.limit",
        ),
        ("[tokens]\naccess_ttl = \"soon\"\n", "tokens.access_ttl"),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/99\"]\n",
            "server.trusted_proxies",
        ),
        (
            "[tokens]\nalgorithm = \"HS256\"\nsecret = \"short\"\n",
            "tokens.secret",
        ),
        ("[tokens]\nalgorithm = \"none\"\n", "tokens.algorithm"),
        ("[server]\nbind = \"localhost\"\n", "server.bind"),
        (
            "[storage]\nencryption_key = \"abc\"\n",
            "storage.encryption_key",
        ),
        ("[passwords]\nmin_strength = 9\n", "passwords.min_strength"),
        ("[mail]\nreset_url = \"http://x/\"\n", "mail.reset_url"),
        (
            "[server]\nheader_timeout = \"0s\"\n",
            "server.header_timeout",
        ),
        ("[server]\nbody_timeout = \"2h\"\n", "server.body_timeout"),
        ("[server]\nkeep_alive = \"never\"\n", "server.keep_alive"),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        (
            "[server]\nmax_header_bytes = 100\n",
            "server.max_header_bytes",
        ),
        ("[server]\nmax_headers = 200\n", "server.max_headers"),
        ("[webauthn]\nrp_id = \"10.0.0.1\"\n", "webauthn.rp_id"),
        ("[webauthn]\nrp_id = \"Auth Example\"\n", "webauthn.rp_id"),
        (
            "[webauthn]\norigins = [\"https://a.example.com/path\"]\n",
            "webauthn.origins[0]",
        ),
        (
            "[webauthn]\norigins = [\"https://ok.example.com\", \"ftp://x\"]\n",
            "webauthn.origins[1]",
        ),
    ];
    for (file, key) in cases {
        let err = load(Some(file), &[]).unwrap_err().to_string();
        assert!(err.contains(key), "{file:?} gave {err}");
    }
}

#[test]
fn masked_output_hides_secrets_and_reloads() {
    let mut cfg = Config::default();
    cfg.tokens.algorithm = Algorithm::HS256;
    cfg.tokens.secret = "s".repeat(40);
    cfg.storage.encryption_key = "ab".repeat(32);
    let text = cfg.to_masked_toml();
    assert!(!text.contains(&"s".repeat(40)));
    assert!(!text.contains(&"ab".repeat(32)));
    assert!(text.contains("\"***\""));
    let plain = Config::default().to_masked_toml();
    let back: Config = toml::from_str(&plain).unwrap();
    assert_eq!(back, Config::default());
}

#[cfg(not(feature = "redis"))]
#[test]
fn a_redis_limiter_without_the_feature_names_the_feature() {
    let file = "[rate_limit]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\n";
    let err = load(Some(file), &[]).unwrap_err().to_string();
    assert!(err.contains("rate_limit.store"), "{err}");
    assert!(err.contains("`redis` feature"), "{err}");
}

#[cfg(feature = "redis")]
#[test]
fn a_redis_limiter_needs_a_redis_url_and_masks_it() {
    let err = load(Some("[rate_limit]\nstore = \"redis\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate_limit.redis_url"), "{err}");
    let url = "redis://:hunter2hunter2@10.0.0.5:6379/2";
    let cfg = load(
        None,
        &[
            ("PORTCULLIS_RATE_LIMIT__STORE", "redis"),
            ("PORTCULLIS_RATE_LIMIT__REDIS_URL", url),
        ],
    )
    .unwrap();
    assert_eq!(cfg.rate_limit.store, LimitStoreKind::Redis);
    assert_eq!(cfg.rate_limit.redis_url, url);
    assert!(!cfg.to_masked_toml().contains("hunter2"));
}

#[cfg(not(feature = "postgres"))]
#[test]
fn a_postgres_store_without_the_feature_names_the_feature() {
    let file = "[storage]\nbackend = \"postgres\"\npostgres_url = \"postgres://x@db/p\"\n";
    let err = load(Some(file), &[]).unwrap_err().to_string();
    assert!(err.contains("storage.backend"), "{err}");
    assert!(err.contains("`postgres` feature"), "{err}");
}

#[cfg(feature = "postgres")]
#[test]
fn a_postgres_store_needs_its_url_and_a_shared_key() {
    let key = "ab".repeat(32);
    let url = "postgres://portcullis:hunter2hunter2@db:5432/auth";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("PORTCULLIS_STORAGE__BACKEND", "postgres")],
            "storage.postgres_url",
        ),
        (
            &[
                ("PORTCULLIS_STORAGE__BACKEND", "postgres"),
                ("PORTCULLIS_STORAGE__POSTGRES_URL", url),
            ],
            "storage.encryption_key",
        ),
    ];
    for (vars, key_named) in cases {
        let err = load(None, vars).unwrap_err().to_string();
        assert!(err.contains(key_named), "{vars:?} gave {err}");
    }
    let cfg = load(
        None,
        &[
            ("PORTCULLIS_STORAGE__BACKEND", "postgres"),
            ("PORTCULLIS_STORAGE__POSTGRES_URL", url),
            ("PORTCULLIS_STORAGE__ENCRYPTION_KEY", &key),
        ],
    )
    .unwrap();
    assert_eq!(cfg.storage.backend, StorageBackend::Postgres);
    assert!(!cfg.to_masked_toml().contains("hunter2"));
}

#[test]
fn an_unknown_limit_store_is_refused() {
    let err = load(Some("[rate_limit]\nstore = \"memcached\"\n"), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("rate_limit.store"), "{err}");
}

#[cfg(test)]
mod example_file {
    use super::super::*;

    /// `config.example.toml` loads, and documents exactly the defaults.
    #[test]
    fn example_config_is_complete_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let loaded = Config::load_from(Some(&path), &[], &Overrides::default()).unwrap();
        assert_eq!(
            Config {
                file: None,
                ..loaded
            },
            Config::default()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let file = toml::Value::Table(text.parse::<toml::Table>().unwrap());
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(
            key_paths(&file),
            key_paths(&defaults),
            "every key is listed"
        );
    }

    fn key_paths(value: &toml::Value) -> Vec<String> {
        let mut out = Vec::new();
        if let toml::Value::Table(t) = value {
            for (k, v) in t {
                let nested = key_paths(v);
                if nested.is_empty() {
                    out.push(k.clone());
                }
                out.extend(nested.into_iter().map(|n| format!("{k}.{n}")));
            }
        }
        out.sort();
        out
    }
}
