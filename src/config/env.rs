//! The layers under a configuration: the defaults' keys, and the
//! `PORTCULLIS_<SECTION>__<KEY>` environment written over a TOML tree, every
//! key checked with the same words whether it came from a file or a variable.

use super::{invalid, Config, ConfigError, ENV_PREFIX};

pub(super) fn path_text(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        "config".to_owned()
    } else {
        text
    }
}

/// Writes `PORTCULLIS_<SECTION>__<KEY>[__<KEY>…]` variables into the TOML tree.
/// A value becomes a string when the key's default is a string; otherwise it is
/// read as a TOML value (`10`, `true`, `["10.0.0.0/8"]`).
/// The defaults as a TOML tree: every key there is.
pub(super) fn default_tree() -> toml::Table {
    toml::Value::try_from(Config::default())
        .ok()
        .and_then(|v| v.as_table().cloned())
        .unwrap_or_default()
}

/// The first line of an error message (serde and toml add context lines).
pub(super) fn one_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

/// Refuses a key that `defaults` does not have, with the same words whether
/// it came from the file or the environment.
pub(super) fn known_keys(
    tree: &toml::Table,
    defaults: &toml::Table,
    at: &mut Vec<String>,
) -> Result<(), String> {
    for (key, value) in tree {
        at.push(key.clone());
        let dotted = at.join(".");
        match (defaults.get(key), value) {
            (Some(toml::Value::Table(d)), toml::Value::Table(t)) => known_keys(t, d, at)?,
            (Some(d), toml::Value::Table(_)) if !d.is_table() => {
                return Err(format!("{dotted}: is a key, not a section"));
            }
            (Some(_), _) => {}
            (None, _) => {
                let names = defaults
                    .keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                let parent = &at[..at.len() - 1];
                return Err(if parent.is_empty() {
                    format!("{dotted}: unknown section (sections: {names})")
                } else if parent == ["rate_limit", "rules"] {
                    format!("{dotted}: unknown rate-limit rule (rules: {names})")
                } else {
                    format!(
                        "{dotted}: unknown key (keys of [{}]: {names})",
                        parent.join(".")
                    )
                });
            }
        }
        at.pop();
    }
    Ok(())
}

/// Every key there is, as the variable that sets it.
fn env_names(table: &toml::Table, at: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let name = if at.is_empty() {
            key.to_ascii_uppercase()
        } else {
            format!("{at}__{}", key.to_ascii_uppercase())
        };
        match value {
            toml::Value::Table(t) => env_names(t, &name, out),
            _ => out.push(name),
        }
    }
}

/// Whether `name` is one of the variables Kubernetes gives every pod for a
/// Service named `portcullis` (`PORTCULLIS_SERVICE_HOST`, `PORTCULLIS_PORT`,
/// `PORTCULLIS_PORT_8080_TCP_ADDR`, …): not ours, and never a key (keys
/// have a `__`), so they are passed over rather than refused.
fn kubernetes_service_link(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return false;
    };
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    };
    if rest == "SERVICE_HOST" || rest == "SERVICE_PORT" || rest == "PORT" {
        return true;
    }
    if let Some(port_name) = rest.strip_prefix("SERVICE_PORT_") {
        return word(port_name);
    }
    let Some(port) = rest.strip_prefix("PORT_") else {
        return false;
    };
    let mut parts = port.splitn(3, '_');
    let number = parts.next().unwrap_or_default();
    let protocol = parts.next().unwrap_or_default();
    let field = parts.next();
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(protocol, "TCP" | "UDP" | "SCTP")
        && field.is_none_or(|f| matches!(f, "PROTO" | "PORT" | "ADDR"))
}

/// A `PORTCULLIS_` variable that names no key: what it may have meant.
fn no_such_variable(name: &str, defaults: &toml::Table) -> ConfigError {
    let given = &name[ENV_PREFIX.len()..];
    let mut names = Vec::new();
    env_names(defaults, "", &mut names);
    let meant: Vec<String> = names
        .iter()
        .filter(|n| n.replace("__", "_") == given || n.rsplit("__").next() == Some(given))
        .map(|n| format!("{ENV_PREFIX}{n}"))
        .collect();
    let hint = if meant.is_empty() {
        format!("variables are {ENV_PREFIX}<SECTION>__<KEY>, such as {ENV_PREFIX}SERVER__BIND")
    } else {
        format!("did you mean {}?", meant.join(" or "))
    };
    ConfigError::Parse {
        origin: format!("environment variable {name}"),
        message: format!("names no configuration key ({hint})"),
    }
}

/// Writes every `PORTCULLIS_<SECTION>__<KEY>` variable into `tree`; one that
/// names no key is an error, worded as for the same key in a file.
pub(super) fn apply_env(
    tree: &mut toml::Table,
    env: &[(String, String)],
    defaults: &toml::Table,
) -> Result<(), ConfigError> {
    let mut vars: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !kubernetes_service_link(k))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(no_such_variable(name, defaults));
        }
        let from_env = |message: String| ConfigError::Parse {
            origin: format!("environment variable {name}"),
            message,
        };
        let value = match lookup(defaults, &path) {
            Some(toml::Value::String(_)) => toml::Value::String(raw.clone()),
            _ => parse_env_value(raw),
        };
        let mut alone = toml::Table::new();
        insert(&mut alone, &path, value.clone()).map_err(from_env)?;
        known_keys(&alone, defaults, &mut Vec::new()).map_err(from_env)?;
        insert(tree, &path, value).map_err(|reason| invalid(name, reason))?;
    }
    Ok(())
}

/// Writes `top` over `base`, merging tables key by key (so a file that sets one
/// key of a rule keeps the rule's other defaults).
pub(super) fn overlay(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        toml::Value::Table(t) => lookup(t, rest),
        _ => None,
    }
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err("empty key".into());
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match entry {
        toml::Value::Table(t) => insert(t, rest, value),
        _ => Err(format!("`{first}` is not a section")),
    }
}
