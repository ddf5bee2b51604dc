//! The outside programs the tests drive, brought in on first use, so that
//! `cargo test` passes on a fresh machine with nothing installed by hand:
//!
//! - Python packages (stock OAuth clients, PyJWT, an SMTP server, OpenAPI
//!   validators, schemathesis) go into one virtual environment under the
//!   target directory, from the pinned list in `tests/requirements.txt`;
//!   it is made again when that list changes.
//! - axe-core comes from the npm registry (`npm pack`), for the page checks.
//! - Debian packages (Chromium and its driver, npm, nginx, Caddy) are installed with
//!   `apt-get` when the tests run as root; otherwise the test stops with one
//!   line that says what to install.
//!
//! Each step holds a file lock, so test threads and test processes that need
//! the same thing at once wait for one installation instead of racing.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const REQUIREMENTS: &str = include_str!("../requirements.txt");

/// Where installed things live: `target/tmp` of this build.
fn home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// An exclusive lock on a file under [`home`], released when dropped.
struct Lock(File);

impl Lock {
    fn take(name: &str) -> Self {
        std::fs::create_dir_all(home()).expect("the target directory");
        let file = File::create(home().join(name)).expect("a lock file");
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(locked, 0, "cannot lock {name}");
        Self(file)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python interpreter of the tests' virtual environment, with every
/// package of `tests/requirements.txt` installed.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(make_venv).clone()
}

/// A command running `python3` of the tests' environment.
pub fn python_command() -> Command {
    Command::new(python())
}

fn make_venv() -> PathBuf {
    let _lock = Lock::take("python.lock");
    let venv = home().join("python");
    let python = venv.join("bin").join("python3");
    let stamp = venv.join("requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == REQUIREMENTS) {
        return python;
    }
    let system = program("python3", "python3");
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new(&system)
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 -m venv");
    if !made.status.success() {
        // Debian splits the venv module into a package of its own.
        let _ = std::fs::remove_dir_all(&venv);
        install_debian("python3-venv");
        run(
            Command::new(&system).args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
    }
    eprintln!("tests: installing Python packages into {}", venv.display());
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/requirements.txt");
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements),
        "pip install -r tests/requirements.txt",
    );
    std::fs::write(&stamp, REQUIREMENTS).expect("the requirements stamp");
    python
}

/// The axe-core release the page checks run (the copy inside
/// axe-selenium-python is years old): from the npm registry, unpacked under
/// the target directory once.
pub const AXE_CORE: &str = "4.11.0";

/// `axe.min.js` of [`AXE_CORE`].
pub fn axe_core() -> PathBuf {
    let _lock = Lock::take("axe.lock");
    let dir = home().join(format!("axe-core-{AXE_CORE}"));
    let script = dir.join("package").join("axe.min.js");
    if script.exists() {
        return script;
    }
    let npm = program("npm", "npm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the axe-core directory");
    eprintln!("tests: fetching axe-core {AXE_CORE} from the npm registry");
    run(
        Command::new(npm)
            .args(["pack", "--silent", &format!("axe-core@{AXE_CORE}")])
            .current_dir(&dir),
        "npm pack axe-core",
    );
    run(
        Command::new("tar")
            .args(["-xzf", &format!("axe-core-{AXE_CORE}.tgz")])
            .current_dir(&dir),
        "unpack axe-core",
    );
    assert!(script.exists(), "no axe.min.js in the axe-core package");
    script
}

/// The path of `program`, installing Debian's `package` when it is missing.
pub fn program(program: &str, package: &str) -> PathBuf {
    if let Some(path) = which(program) {
        return path;
    }
    install_debian(package);
    which(program).unwrap_or_else(|| panic!("{package} is installed but {program} is not on PATH"))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// `path`, installing Debian's `package` when it is missing.
pub fn debian_file(path: &str, package: &str) -> PathBuf {
    let path = PathBuf::from(path);
    if !path.exists() {
        install_debian(package);
        assert!(
            path.exists(),
            "{package} is installed but {} is not",
            path.display()
        );
    }
    path
}

/// Installs a Debian package with `apt-get` (as root), or stops the test
/// with the command that would.
pub fn install_debian(package: &str) {
    let _lock = Lock::take("apt.lock");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs the Debian package {package}: install it with \
             `sudo apt-get install {package}` and run the tests again"
        );
    }
    eprintln!("tests: installing the Debian package {package}");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if install() {
        return;
    }
    run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    );
    assert!(install(), "apt-get install {package} failed");
}

/// Runs a script that may ask for the server's time and move its clock: one
/// line on its stdout ("now", "advance SECONDS"), answered on its stdin.
/// Everything else it says goes to stderr. The server keeps answering on the
/// test's runtime meanwhile.
pub async fn run_with_clock(
    clock: portcullis::clock::ManualClock,
    mut cmd: Command,
) -> std::process::ExitStatus {
    use portcullis::clock::Clock;
    use std::io::{BufRead, BufReader, Write};
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("the script runs");
        let mut to_script = child.stdin.take().expect("stdin");
        let from_script = BufReader::new(child.stdout.take().expect("stdout"));
        for line in from_script.lines() {
            let line = line.expect("a line from the script");
            let answer = match line.split_once(' ') {
                None if line == "now" => clock.now_ms().to_string(),
                None if line == "done" => continue,
                Some(("advance", secs)) => {
                    let secs: u64 = secs.parse().expect("seconds");
                    clock.advance(std::time::Duration::from_secs(secs));
                    "ok".to_owned()
                }
                _ => panic!("the script said {line:?}"),
            };
            writeln!(to_script, "{answer}").expect("answer the script");
        }
        child.wait().expect("the script ends")
    })
    .await
    .expect("the script's thread")
}

/// Runs `cmd` to its end off the test's runtime, so that a server in this
/// process (whose connections to Redis or PostgreSQL that runtime drives)
/// keeps answering the program meanwhile.
pub async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the command's thread")
        .expect("the command runs")
}
