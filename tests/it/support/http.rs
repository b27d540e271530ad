//! `accessd serve` as a child process with its HTTP listener, and a small
//! HTTP/1.1 client (one request per connection) to talk to it.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use accessd_protocol::{Client, TlsCredentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_accessd")
}

/// A fresh directory for one test.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("http-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

impl Reply {
    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`).
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body);
    // A server may answer and stop reading before a large body is sent
    // (413): the answer is what counts, so a failed write is not fatal.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP answer within 10 s")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (headers, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = headers
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {raw}"));
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Reply {
        status,
        headers: headers.to_owned(),
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], None).await
}

pub(crate) async fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    request(addr, "POST", path, &[], Some(body)).await
}

/// `accessd serve` as a child process, with certificates in its directory
/// and its HTTP listener on a port of its choosing (read from its log).
pub(crate) struct Served {
    child: Child,
    /// The QUIC address.
    pub(crate) quic: SocketAddr,
    log: PathBuf,
    dir: PathBuf,
}

impl Served {
    /// Starts `accessd serve ARGS` with `--listen`, the TLS files and
    /// `--http-addr 127.0.0.1:0` added (unless ARGS set it or its old name
    /// `--metrics-addr`).
    pub(crate) fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        if !dir.join("ca.pem").exists() {
            let status = Command::new(bin())
                .args(["certs", "--out"])
                .arg(dir)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let quic = SocketAddr::from(([127, 0, 0, 1], port));
        let runs = std::fs::read_dir(dir).unwrap().count();
        let log = dir.join(format!("serve-{runs}.log"));
        let mut command = Command::new(bin());
        command
            .arg("serve")
            .args(args)
            .arg("--listen")
            .arg(quic.to_string())
            .arg("--ca")
            .arg(dir.join("ca.pem"))
            .arg("--cert")
            .arg(dir.join("server.pem"))
            .arg("--key")
            .arg(dir.join("server.key"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if !args.contains(&"--http-addr") && !args.contains(&"--metrics-addr") {
            command.args(["--http-addr", "127.0.0.1:0"]);
        }
        let child = command.spawn().unwrap();
        Self {
            child,
            quic,
            log,
            dir: dir.to_owned(),
        }
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP address, once it is listening.
    pub(crate) async fn http(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // `HTTP listening addr=A` in text logs, `"addr":"A"` in JSON.
            let found = self
                .log()
                .lines()
                .filter(|l| l.contains("HTTP listening"))
                .find_map(|l| {
                    let text = l
                        .split("addr=")
                        .nth(1)
                        .and_then(|a| a.split_whitespace().next());
                    let json = l
                        .split("\"addr\":\"")
                        .nth(1)
                        .and_then(|a| a.split('"').next());
                    text.or(json)?.parse::<SocketAddr>().ok()
                });
            if let Some(addr) = found {
                return addr;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no HTTP listener: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A gateway client over QUIC, connected once the server answers.
    pub(crate) async fn client(&mut self) -> Client {
        let tls = TlsCredentials::from_pem_files(
            &self.dir.join("ca.pem"),
            &self.dir.join("gateway.pem"),
            &self.dir.join("gateway.key"),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("serve exited ({status}): {}", self.log());
            }
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                Client::connect(self.quic, "localhost", &tls),
            )
            .await;
            if let Ok(Ok(client)) = attempt {
                return client;
            }
            assert!(
                Instant::now() < deadline,
                "serve never answered: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal (`-HUP`, `-TERM`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL: no shutdown, no last checkpoint.
    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the exit status (with the server's log on stderr when
    /// it is not a success, for the test that asserts it).
    pub(crate) fn terminate(self) -> std::process::ExitStatus {
        let (status, log) = self.terminate_with_log();
        if !status.success() {
            eprintln!("serve exited with {status} after SIGTERM; log:\n{log}");
        }
        status
    }

    /// SIGTERM, the exit status and the whole log (the stop's lines too).
    pub(crate) fn terminate_with_log(mut self) -> (std::process::ExitStatus, String) {
        self.signal("-TERM");
        let status = self.child.wait().unwrap();
        (status, self.log())
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it returns `Some`, or fails after 60 s with `what`
/// and the server's log (generous: DynamoDB retries back off up to 10 s,
/// and the machine may be busy with other tests).
pub(crate) async fn until<T, F, Fut>(served: &Served, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 60 s; log:\n{}",
            served.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
