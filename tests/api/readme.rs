//! The README's "first ten minutes" run as written, so they cannot rot: every
//! `sh` block of that section, top to bottom, in one shell, against the real
//! binary serving a fresh data directory.
//!
//! Two things are supplied, nothing is rewritten but the address: the reader
//! runs `cargo run --release` in another terminal (here the test starts the
//! binary on a free port, data in `./data` as the README says), and `cargo run
//! --release -- ARGS` stands for the same binary with ARGS (a shell function).
//! Every status the README promises (`# → 201`) must be the status printed.
//!
//! The CI recipe of "An identity provider for CI" runs as written too, with
//! `portcullis` the binary, `python3` the tests' environment and its port a
//! free one.

use std::process::Command;

use crate::helpers::{portcullis, ServerProcess};

const README: &str = include_str!("../../README.md");
const SECTION: &str = "## The first ten minutes";
/// The line of the walk-through that names the server.
const URL_LINE: &str = "url=http://127.0.0.1:8080";

/// The `sh` blocks of the section under `heading`, in order.
fn shell_blocks(heading: &str) -> Vec<String> {
    let start = README
        .find(heading)
        .unwrap_or_else(|| panic!("the README has a section {heading:?}"));
    let rest = &README[start + heading.len()..];
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|h| rest.find(h))
        .min()
        .unwrap_or(rest.len());
    let section = &rest[..end];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if line.trim_end() == "```sh" {
            let block: Vec<&str> = lines
                .by_ref()
                .take_while(|l| l.trim_end() != "```")
                .collect();
            blocks.push(block.join("\n"));
        }
    }
    blocks
}

/// The statuses promised in comments: `# → 401 401 429 …`.
fn promised(script: &str) -> Vec<String> {
    script
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("# → "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .take_while(|w| w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The statuses printed by `curl -w "$show"`: lines ending in `→ NNN`.
fn printed(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|l| l.trim_end().rsplit_once("→ "))
        .map(|(_, code)| code.to_owned())
        .filter(|code| code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// Runs a README script (`cmd`, a bash) without the caller's `PORTCULLIS_*`,
/// as a reader's shell would have none; its stdout and stderr once it has
/// succeeded.
fn run_script(mut cmd: Command, what: &str) -> (String, String) {
    for (k, _) in std::env::vars() {
        if k.starts_with("PORTCULLIS_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({:?})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

#[test]
fn the_first_ten_minutes_run_as_written() {
    let blocks = shell_blocks(SECTION);
    assert!(blocks.len() >= 5, "{} blocks", blocks.len());
    let script = blocks.join("\n\n");
    assert!(
        script.lines().any(|l| l == URL_LINE),
        "the walk-through starts with {URL_LINE}"
    );
    let expected = promised(&script);
    assert!(expected.len() >= 20, "statuses promised: {expected:?}");

    // What the README asks the reader to have.
    crate::tools::program("curl", "curl");
    crate::tools::program("python3", "python3");
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut server = ServerProcess::start(&data, &[], &[]);
    let script = script.replace(URL_LINE, &format!("url=http://{}", server.address));
    // Strict as a script is (a failing command stops it), not stricter than
    // the reader's shell: a pipeline's status is its last command's.
    let prelude = r#"set -eu
cargo() {
    if [ "$1 $2 $3" != "run --release --" ]; then echo "not run as the README says: cargo $*" >&2; return 99; fi
    shift 3
    "$THE_BINARY" "$@"
}
"#;
    // The shell gets no PORTCULLIS_* of the caller, as the binary does not.
    let binary = portcullis().get_program().to_owned();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!("{prelude}\n{script}"))
        .current_dir(root.path())
        .env("THE_BINARY", &binary);
    let (stdout, stderr) = run_script(cmd, "the walk-through");
    assert_eq!(
        printed(&stdout),
        expected,
        "statuses printed vs promised\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    assert!(server.signal("-TERM").success());
    // Shown with --nocapture, to read what a newcomer sees.
    println!("{stdout}");
}

#[test]
fn the_ci_recipe_runs_as_written() {
    let blocks = shell_blocks("### An identity provider for CI");
    assert_eq!(blocks.len(), 1, "one block: {blocks:?}");
    crate::tools::program("curl", "curl");
    let python = crate::tools::python();
    let venv_bin = python.parent().expect("the environment's bin").to_owned();
    let port = crate::proxies::free_port().to_string();
    let script = blocks[0].replace("9000", &port);
    // `portcullis` on PATH is the binary itself (a shell function would
    // put a shell between `$!` and the server).
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(portcullis().get_program(), bin.path().join("portcullis")).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(
            "set -eu\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"
        ))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        // mktemp's directory goes with the test.
        .env("TMPDIR", bin.path())
        .env(
            "PATH",
            format!(
                "{}:{}:{}",
                bin.path().display(),
                venv_bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("RUST_LOG");
    let (stdout, stderr) = run_script(cmd, "the CI recipe");
    assert!(
        stdout.contains("signed in as ci@example.com"),
        "--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
}
