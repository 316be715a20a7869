//! The `p2v-server` binary: what `serve` prints (parsed exactly as an operator's script would),
//! and the operator commands against the running server, found through `server.json`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_p2v-server");

/// Kills the server if the test fails before stopping it.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(data_dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("P2V_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "p2v-server {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn serve_prints_parseable_lines_and_operator_commands_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            "p2v.test",
            "--data-dir",
        ])
        .arg(&data_dir)
        .env("P2V_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout_pipe = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout_pipe).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        lines.push(rx.recv_timeout(left).expect("serve prints five lines"));
    }

    // listening on https://IP:PORT, with the real port.
    let url = lines[0]
        .strip_prefix("listening on https://127.0.0.1:")
        .expect(&lines[0]);
    let port: u16 = url.parse().expect(&lines[0]);
    assert_ne!(port, 0);
    // fingerprint sha256:<hex>
    let fingerprint = lines[1]
        .strip_prefix("fingerprint ")
        .expect(&lines[1])
        .to_string();
    assert!(
        is_hex(fingerprint.strip_prefix("sha256:").unwrap(), 64),
        "{fingerprint}"
    );
    assert_eq!(
        lines[2],
        format!("p2v-capture --server https://p2v.test:{port} --fingerprint {fingerprint} --token <TOKEN>")
    );
    assert_eq!(
        lines[3],
        format!(
            "p2v.server=https://p2v.test:{port} p2v.fingerprint={fingerprint} p2v.token=<TOKEN>"
        )
    );
    assert!(lines[4].contains("p2v-server token create"), "{}", lines[4]);

    // server.json names the bound address; the fingerprint command reads the certificate.
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir.join("server.json")).unwrap()).unwrap();
    assert_eq!(info["listen"], format!("127.0.0.1:{port}"));
    assert_eq!(info["fingerprint"], fingerprint);
    assert_eq!(
        stdout(&run(&data_dir, &["fingerprint"])).trim(),
        fingerprint
    );
    use std::os::unix::fs::PermissionsExt;
    for secret in ["admin.token", "tls/key.pem"] {
        let mode = std::fs::metadata(data_dir.join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }

    // TOKEN=$(p2v-server token create --name rack1 --data-dir D)
    let token_out = stdout(&run(&data_dir, &["token", "create", "--name", "rack1"]));
    assert!(
        token_out.ends_with('\n') && token_out.lines().count() == 1,
        "{token_out:?}"
    );
    let token = token_out.trim();
    assert!(is_hex(token, 64), "{token}");
    let json: serde_json::Value = serde_json::from_str(&stdout(&run(
        &data_dir,
        &["token", "create", "--name", "rack2", "--json"],
    )))
    .unwrap();
    assert_eq!(json["name"], "rack2");

    // Listings, human and JSON.
    let disks = stdout(&run(&data_dir, &["disks"]));
    assert!(
        disks.starts_with("DISK  MACHINE  NAME  SIZE  STATE  PROGRESS  RECEIVED"),
        "{disks}"
    );
    let disks: serde_json::Value =
        serde_json::from_str(&stdout(&run(&data_dir, &["disks", "--json"]))).unwrap();
    assert_eq!(disks, serde_json::json!([]));
    let machines: serde_json::Value =
        serde_json::from_str(&stdout(&run(&data_dir, &["machines", "--json"]))).unwrap();
    assert_eq!(machines, serde_json::json!([]));
    assert!(stdout(&run(&data_dir, &["sessions"])).starts_with("SESSION"));
    // P2V_DATA_DIR works as well as --data-dir.
    let out = Command::new(BIN)
        .arg("machines")
        .env("P2V_DATA_DIR", &data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).starts_with("MACHINE"));
    // Errors are reported with their reason and a failing exit code.
    let out = Command::new(BIN)
        .args(["export", "d-0000000000000001", "--output"])
        .arg(tmp.path().join("x.qcow2"))
        .arg("--data-dir")
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown disk"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // SIGTERM stops it cleanly.
    let mut server = server;
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn operator_commands_explain_a_missing_server() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["disks", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.json"), "{stderr}");
    let out = Command::new(BIN)
        .args(["fingerprint", "--data-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cert.pem"));
}
