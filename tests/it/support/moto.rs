//! moto's server (a real DynamoDB and DynamoDB Streams API over HTTP),
//! started once per test binary on a free loopback port.
//!
//! Found through `ACCESSD_MOTO_SERVER`, or else `<workspace>/.venv/bin/
//! moto_server`. Missing or not answering is a test failure, never a skip.
//! Tests share the server and use distinct table names.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The running server.
pub(crate) struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
    /// The guard's stdin: when the test binary exits, for whatever reason,
    /// this pipe closes and the guard shell kills moto. Statics are never
    /// dropped, so a `Drop` impl alone would leave moto running.
    _guard: Mutex<(Child, ChildStdin)>,
}

fn moto_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ACCESSD_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
}

/// A loopback TCP port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local address").port()
}

fn start() -> Moto {
    start_on(free_port())
}

/// A private moto server on `port` (for tests that stop and restart
/// DynamoDB); stopped when dropped or at exit.
pub(crate) fn start_on(port: u16) -> Moto {
    let path = moto_path();
    assert!(
        path.is_file(),
        "moto_server not found at `{}`: install it with \
         `python3 -m venv .venv && .venv/bin/pip install \"moto[server]\"` at the workspace \
         root, or set ACCESSD_MOTO_SERVER to its path",
        path.display()
    );
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
    // The guard shell runs moto and kills it when its stdin closes.
    let script = r#"
        "$0" -H 127.0.0.1 -p "$1" </dev/null >"$2" 2>&1 &
        pid=$!
        read _ignored
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    "#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(port.to_string())
        .arg(&log)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", path.display()));
    let stdin = child.stdin.take().expect("guard stdin");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("moto guard exited early ({status}); log: {}", tail(&log));
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on {addr} within 60 s; log: {}",
            tail(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto {
        endpoint: format!("http://{addr}"),
        _guard: Mutex::new((child, stdin)),
    }
}

fn tail(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The shared server, started on first use.
pub(crate) fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(start)
}

impl Moto {
    /// Stops the server now (the guard also does it at exit).
    pub(crate) fn stop(&self) {
        if let Ok(mut guard) = self._guard.lock() {
            let _ = guard.1.write_all(b"stop\n");
            let _ = guard.0.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
