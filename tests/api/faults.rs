//! Storage faults: a full disk, a read-only filesystem, a database locked by
//! another process. Requests that must be audited fail closed (503, nothing
//! half-written), and the server recovers by itself once the fault is gone.
//!
//! The full disk is real: a small tmpfs mounted over the data directory and
//! filled. Mounting needs root (CI runs as root); elsewhere that drill says so
//! and is skipped, unless `PORTCULLIS_REQUIRE_FAULT_DRILLS=1` makes that a
//! failure. A filesystem cannot be remounted read-only under open files, so
//! the read-only disk is a failing VFS: SQLite's own system calls, failing
//! with `EROFS` for one data directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use portcullis::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{test_config, token, without_limits, TestApp, PASSWORD};

/// A tmpfs of `size` mounted over a fresh directory; unmounted on drop.
struct SmallDisk {
    dir: Arc<tempfile::TempDir>,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            let required = std::env::var("PORTCULLIS_REQUIRE_FAULT_DRILLS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "cannot mount a tmpfs: the storage fault drills need root"
            );
            eprintln!("SKIPPED: cannot mount a tmpfs (needs root); storage fault drill not run");
            return None;
        }
        Some(Self { dir: Arc::new(dir) })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills every free byte with a ballast file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let ballast = self.path().join("ballast");
        let mut file = std::fs::File::create(&ballast).expect("ballast");
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        ballast
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn app_on(disk: &SmallDisk) -> TestApp {
    let mut config = test_config(&disk.dir);
    without_limits(&mut config);
    TestApp::start_on_sqlite(config, disk.dir.clone(), ManualClock::starting_now()).await
}

async fn login(app: &TestApp, email: &str) -> reqwest::Response {
    app.client
        .post(app.url("/auth/login"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .expect("request")
}

/// Every change has its row and every row its change: sessions against
/// `login_success` rows, retired refresh tokens against `token_refreshed` rows.
fn assert_each_change_has_its_row(app: &TestApp) {
    let conn = app.db();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    assert_eq!(
        count("SELECT COUNT(*) FROM sessions"),
        count("SELECT COUNT(*) FROM audit_log WHERE action = 'login_success'"),
        "sessions and login_success rows"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM refresh_tokens WHERE retired_at IS NOT NULL"),
        count("SELECT COUNT(*) FROM audit_log WHERE action = 'token_refreshed'"),
        "rotations and token_refreshed rows"
    );
}

/// Sessions of the account and `login_success` rows, read without writing.
fn counts(app: &TestApp, email: &str) -> (i64, i64) {
    let conn = rusqlite::Connection::open_with_flags(
        app.dir.path().join("portcullis.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open read-only");
    let sessions = conn
        .query_row(
            "SELECT COUNT(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.email = ?1",
            [email],
            |r| r.get(0),
        )
        .expect("sessions");
    let rows = conn
        .query_row(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'login_success'",
            [],
            |r| r.get(0),
        )
        .expect("audit rows");
    (sessions, rows)
}

async fn assert_unavailable(res: reqwest::Response) {
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.expect("a JSON error body");
    assert_eq!(body["error"], "unavailable", "{body}");
}

/// The database and its chain are sound.
async fn assert_sound(app: &TestApp, admin: &str) {
    let mut conn = app.db();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let _ = admin;
    let verdict = portcullis::store::audit::verify_sqlite(&mut conn).expect("verify");
    assert!(verdict.ok, "{verdict:?}");
}

#[tokio::test]
async fn a_full_disk_fails_closed_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("6m") else {
        return;
    };
    let app = app_on(&disk).await;
    let email = "full@example.com";
    assert_eq!(
        app.register(email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(login(&app, email).await.status(), StatusCode::OK);

    let pair: Value = login(&app, email).await.json().await.expect("pair");
    let mut refresh = token(&pair, "refresh_token");
    let ballast = disk.fill();
    // Refreshes and logins until the disk refuses: each one is either whole
    // (200, the change and its audit row) or absent (503, neither).
    let (sessions_before, rows_before) = counts(&app, email);
    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..400 {
        let res = app
            .post("/auth/refresh", &json!({ "refresh_token": refresh }))
            .await;
        if res.status() == StatusCode::OK {
            let pair: Value = res.json().await.expect("pair");
            refresh = token(&pair, "refresh_token");
        } else {
            assert_unavailable(res).await;
        }
        let res = login(&app, email).await;
        match res.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                assert_unavailable(res).await;
                if refused == 3 {
                    break;
                }
            }
            other => panic!("a full disk answered {other}"),
        }
    }
    assert_eq!(
        refused, 3,
        "the full disk never refused a write ({ok} logins succeeded)"
    );
    let (sessions, rows) = counts(&app, email);
    assert_eq!(sessions - sessions_before, ok, "sessions without a 200");
    assert_eq!(
        rows - rows_before,
        ok,
        "audit rows without a 200, or 200s without a row"
    );
    assert_each_change_has_its_row(&app);
    // Reads still work.
    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .expect("health")
            .status(),
        StatusCode::OK
    );

    std::fs::remove_file(ballast).expect("free the space");
    // No restart: the next request simply works.
    assert_eq!(login(&app, email).await.status(), StatusCode::OK);
    let (sessions, rows) = counts(&app, email);
    assert_eq!(
        (sessions - sessions_before, rows - rows_before),
        (ok + 1, ok + 1)
    );
    let res = app
        .post("/auth/refresh", &json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the last refresh token is current"
    );
    assert_each_change_has_its_row(&app);
    assert_sound(&app, email).await;
}

/// A failing VFS: SQLite's own unix VFS with its `pwrite`, `write` and
/// `ftruncate` system calls replaced by ones that fail with an errno for files
/// under chosen directories (and pass everything else through), so that one
/// test's fault does not touch the tests running beside it.
mod failing_vfs {
    use std::ffi::{c_char, c_int, c_void, CStr};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Mutex, Once};

    use rusqlite::ffi;

    type Pwrite =
        unsafe extern "C" fn(c_int, *const c_void, libc::size_t, libc::off_t) -> libc::ssize_t;
    type Write = unsafe extern "C" fn(c_int, *const c_void, libc::size_t) -> libc::ssize_t;
    type Ftruncate = unsafe extern "C" fn(c_int, libc::off_t) -> c_int;

    static REAL_PWRITE: AtomicUsize = AtomicUsize::new(0);
    static REAL_WRITE: AtomicUsize = AtomicUsize::new(0);
    static REAL_FTRUNCATE: AtomicUsize = AtomicUsize::new(0);
    static ARMED: AtomicUsize = AtomicUsize::new(0);
    static FAULTS: Mutex<Vec<(PathBuf, c_int)>> = Mutex::new(Vec::new());
    static INSTALL: Once = Once::new();

    /// The errno for a write to `fd`, when it is under a faulty directory.
    fn fault_for(fd: c_int) -> Option<c_int> {
        if ARMED.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        let faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
        faults
            .iter()
            .find(|(dir, _)| path.starts_with(dir))
            .map(|(_, errno)| *errno)
    }

    fn fail(errno: c_int) {
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() = errno };
    }

    unsafe extern "C" fn pwrite(
        fd: c_int,
        buf: *const c_void,
        n: libc::size_t,
        off: libc::off_t,
    ) -> libc::ssize_t {
        if let Some(errno) = fault_for(fd) {
            fail(errno);
            return -1;
        }
        let real: Pwrite = unsafe { std::mem::transmute(REAL_PWRITE.load(Ordering::SeqCst)) };
        unsafe { real(fd, buf, n, off) }
    }

    unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: libc::size_t) -> libc::ssize_t {
        if let Some(errno) = fault_for(fd) {
            fail(errno);
            return -1;
        }
        let real: Write = unsafe { std::mem::transmute(REAL_WRITE.load(Ordering::SeqCst)) };
        unsafe { real(fd, buf, n) }
    }

    unsafe extern "C" fn ftruncate(fd: c_int, len: libc::off_t) -> c_int {
        if let Some(errno) = fault_for(fd) {
            fail(errno);
            return -1;
        }
        let real: Ftruncate = unsafe { std::mem::transmute(REAL_FTRUNCATE.load(Ordering::SeqCst)) };
        unsafe { real(fd, len) }
    }

    fn install() {
        INSTALL.call_once(|| unsafe {
            let vfs = ffi::sqlite3_vfs_find(std::ptr::null());
            assert!(!vfs.is_null(), "the default VFS");
            let get = (*vfs).xGetSystemCall.expect("xGetSystemCall");
            let set = (*vfs).xSetSystemCall.expect("xSetSystemCall");
            let calls: [(&CStr, &AtomicUsize, usize); 3] = [
                (c"pwrite", &REAL_PWRITE, pwrite as Pwrite as usize),
                (c"write", &REAL_WRITE, write as Write as usize),
                (
                    c"ftruncate",
                    &REAL_FTRUNCATE,
                    ftruncate as Ftruncate as usize,
                ),
            ];
            for (name, real, ours) in calls {
                let found =
                    get(vfs, name.as_ptr() as *const c_char).expect("a system call SQLite uses");
                real.store(found as usize, Ordering::SeqCst);
                let rc = set(
                    vfs,
                    name.as_ptr() as *const c_char,
                    Some(std::mem::transmute::<usize, unsafe extern "C" fn()>(ours)),
                );
                assert_eq!(rc, ffi::SQLITE_OK);
            }
        });
    }

    /// Writes under `dir` fail with `errno` until the guard is dropped.
    pub struct Fault(PathBuf);

    pub fn inject(dir: &Path, errno: c_int) -> Fault {
        install();
        let dir = std::fs::canonicalize(dir).expect("canonical path");
        FAULTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((dir.clone(), errno));
        ARMED.fetch_add(1, Ordering::SeqCst);
        Fault(dir)
    }

    impl Drop for Fault {
        fn drop(&mut self) {
            FAULTS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(d, _)| *d != self.0);
            ARMED.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn a_read_only_disk_fails_closed_and_recovers_when_writable() {
    let app = TestApp::spawn_on_sqlite(without_limits).await;
    let email = "ro@example.com";
    assert_eq!(
        app.register(email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let pair: Value = login(&app, email).await.json().await.expect("pair");
    let (access, refresh) = (token(&pair, "access_token"), token(&pair, "refresh_token"));
    let before = counts(&app, email);

    let fault = failing_vfs::inject(app.dir.path(), libc::EROFS);
    for _ in 0..3 {
        assert_unavailable(login(&app, email).await).await;
    }
    assert_unavailable(app.register("second@example.com", PASSWORD).await).await;
    // Neither a logout nor a refresh half-happens.
    let res = app.post_auth("/auth/logout", &access, None).await;
    assert_unavailable(res).await;
    let res = app
        .post("/auth/refresh", &json!({ "refresh_token": refresh }))
        .await;
    assert_unavailable(res).await;
    drop(fault);

    assert_eq!(
        counts(&app, email),
        before,
        "nothing was written while read-only"
    );
    assert_each_change_has_its_row(&app);
    // The session is as it was: its token works and its refresh token rotates once.
    assert_eq!(
        app.get_auth("/auth/me", &access).await.status(),
        StatusCode::OK
    );
    let res = app
        .post("/auth/refresh", &json!({ "refresh_token": refresh }))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(login(&app, email).await.status(), StatusCode::OK);
    assert_eq!(
        app.register("second@example.com", PASSWORD).await.status(),
        StatusCode::CREATED
    );
    assert_sound(&app, email).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_locked_by_another_process_fails_closed_then_recovers() {
    let app = TestApp::spawn_on_sqlite(without_limits).await;
    let email = "locked@example.com";
    assert_eq!(
        app.register(email, PASSWORD).await.status(),
        StatusCode::CREATED
    );
    let before = counts(&app, email);

    // Another process takes the write lock and keeps it past the busy timeout.
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
             c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.read()",
        ])
        .arg(app.dir.path().join("portcullis.db"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "locked");
    }
    assert_unavailable(login(&app, email).await).await;
    assert_eq!(counts(&app, email), before);

    drop(holder.stdin.take());
    holder.wait().expect("the lock holder exits");
    assert_eq!(login(&app, email).await.status(), StatusCode::OK);
    assert_sound(&app, email).await;
}
