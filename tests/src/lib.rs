//! Harness for the end-to-end tests in `tests/tests/`: builds nothing itself, but finds the
//! binaries the test command built (`make test` builds them first), the fixture disks made by
//! `scripts/make-fixtures.sh`, and runs servers and agents as real processes.
//!
//! Every child runs in its own process group and is killed and reaped when its handle drops, so
//! a failing test leaves nothing behind. Failures print the child's whole output.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use p2v_protocol::api::{DiskSummary, MachineSummary, SessionSummary};

pub mod guest;

/// Root of the workspace.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The server binary (built by the test command for the host).
pub fn server_bin() -> PathBuf {
    find_bin("p2v-server", &["release", "debug"])
}

/// The agent binary: the static musl build when present (what the live image ships), else the
/// host build.
pub fn agent_bin() -> PathBuf {
    find_bin(
        "p2v-capture",
        &["x86_64-unknown-linux-musl/release", "release", "debug"],
    )
}

fn find_bin(name: &str, profiles: &[&str]) -> PathBuf {
    if let Some(dir) = std::env::var_os("P2V_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    profiles
        .iter()
        .map(|p| target_dir().join(p).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("{name} is not built: run `make test` (or cargo build --release) first")
        })
}

/// The fixture directory, built by `scripts/make-fixtures.sh` on first use (cached by the
/// script's own hash under `target/fixtures`).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("fixtures");
        let status = Command::new("bash")
            .arg(workspace().join("scripts/make-fixtures.sh"))
            .arg(&dir)
            .status()
            .expect("running scripts/make-fixtures.sh");
        assert!(status.success(), "scripts/make-fixtures.sh failed");
        dir
    })
}

/// A copy of a fixture in `dir`, so a test may not disturb others.
pub fn fixture_copy(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join(name);
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(fixtures().join(name))
        .arg(&to)
        .status()
        .expect("cp");
    assert!(status.success());
    to
}

/// A child process killed (whole group, SIGKILL) and reaped on drop.
#[derive(Debug)]
pub struct Guarded {
    child: Option<Child>,
}

impl Guarded {
    pub fn spawn(mut command: Command) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("spawning {command:?}"))?;
        Ok(Self { child: Some(child) })
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("running")
    }

    /// SIGKILL to the whole process group, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            // SAFETY: kill(2) with a negative pid signals the process group we created; it has
            // no memory-safety preconditions.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Waits for exit with a timeout, collecting stdout and stderr.
    pub fn wait_output(mut self, timeout: Duration) -> Result<Output> {
        let mut child = self.child.take().expect("running");
        let mut out = child.stdout.take();
        let mut err = child.stderr.take();
        let out_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(o) = out.as_mut() {
                let _ = o.read_to_end(&mut v);
            }
            v
        });
        let err_thread = std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut v);
            }
            v
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                self.child = Some(child);
                self.kill9();
                bail!("timed out after {} s", timeout.as_secs());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Output {
            status,
            stdout: out_thread.join().unwrap_or_default(),
            stderr: err_thread.join().unwrap_or_default(),
        })
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running `p2v-server serve` on 127.0.0.1 with a random port.
#[derive(Debug)]
pub struct Server {
    pub data_dir: PathBuf,
    pub url: String,
    pub fingerprint: String,
    process: Guarded,
    log: std::sync::Arc<Mutex<String>>,
}

impl Server {
    pub fn start(data_dir: &Path) -> Result<Self> {
        Self::start_with(data_dir, &[])
    }

    /// Starts a server with extra `serve` arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Result<Self> {
        let mut command = Command::new(server_bin());
        command
            .arg("serve")
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            .env("P2V_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !extra.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut process = Guarded::spawn(command)?;
        let log = std::sync::Arc::new(Mutex::new(String::new()));
        let stderr = process.child().stderr.take().expect("piped");
        let stderr_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                stderr_log.lock().expect("log").push_str(&(line + "\n"));
            }
        });
        let stdout = process.child().stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout_log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                stdout_log
                    .lock()
                    .expect("log")
                    .push_str(&(line.clone() + "\n"));
                let _ = tx.send(line);
            }
        });
        let (mut url, mut fingerprint) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while url.is_none() || fingerprint.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                bail!(
                    "server did not announce itself; its output:\n{}",
                    log.lock().expect("log")
                );
            };
            if let Some(u) = line.strip_prefix("listening on ") {
                url = Some(u.trim().to_string());
            } else if let Some(f) = line.strip_prefix("fingerprint ") {
                fingerprint = Some(f.trim().to_string());
            }
        }
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            url: url.expect("set"),
            fingerprint: fingerprint.expect("set"),
            process,
            log,
        })
    }

    /// Everything the server printed so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Runs an operator command against this server's data dir.
    pub fn operator(&self, args: &[&str]) -> Result<String> {
        let output = Command::new(server_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .output()?;
        if !output.status.success() {
            bail!(
                "p2v-server {args:?} failed: {}\nserver log:\n{}",
                String::from_utf8_lossy(&output.stderr),
                self.log()
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    pub fn create_token(&self) -> Result<String> {
        Ok(self
            .operator(&["token", "create", "--name", "test"])?
            .trim()
            .to_string())
    }

    pub fn disks(&self) -> Result<Vec<DiskSummary>> {
        Ok(serde_json::from_str(&self.operator(&["disks", "--json"])?)?)
    }

    pub fn machines(&self) -> Result<Vec<MachineSummary>> {
        Ok(serde_json::from_str(
            &self.operator(&["machines", "--json"])?,
        )?)
    }

    pub fn sessions(&self) -> Result<Vec<SessionSummary>> {
        Ok(serde_json::from_str(
            &self.operator(&["sessions", "--json"])?,
        )?)
    }

    /// Exports a disk to `output` in `format`.
    pub fn export(&self, disk: &str, format: &str, output: &Path) -> Result<()> {
        self.operator(&[
            "export",
            disk,
            "--format",
            format,
            "--output",
            output.to_str().expect("utf-8"),
        ])?;
        Ok(())
    }

    /// Arguments for an agent talking to this server.
    pub fn agent_args(&self, token: &str) -> Vec<String> {
        vec![
            "--server".into(),
            self.url.clone(),
            "--fingerprint".into(),
            self.fingerprint.clone(),
            "--token".into(),
            token.into(),
        ]
    }
}

/// Starts an agent with `args`; stdout and stderr piped.
pub fn spawn_agent<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Guarded> {
    let mut command = Command::new(agent_bin());
    command
        .args(args)
        .env("P2V_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Guarded::spawn(command)
}

/// Runs an agent to completion (10 minutes at most).
pub fn run_agent<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Output> {
    spawn_agent(args)?.wait_output(Duration::from_secs(600))
}

/// Runs an agent against `server` on `source` with `--json --no-progress` and `extra`
/// arguments, and returns its report (panicking with the agent's and the server's output if it
/// fails).
pub fn capture_json(
    server: &Server,
    token: &str,
    source: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = server.agent_args(token);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([
        "--json".into(),
        "--no-progress".into(),
        source.display().to_string(),
    ]);
    let output = run_agent(&args).expect("running the agent");
    agent_report(&output).unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", server.log()))
}

/// The agent's `--json` report.
pub fn agent_report(output: &Output) -> Result<serde_json::Value> {
    if !output.status.success() {
        bail!(
            "agent failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("agent --json report")
}

/// Runs a command, failing with its output when it fails; returns stdout.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        bail!(
            "{program} {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `qemu-img compare` of two images: Ok when their guest-visible contents are identical.
pub fn qemu_img_compare(
    source: &Path,
    source_format: &str,
    image: &Path,
    format: &str,
) -> Result<()> {
    run(
        "qemu-img",
        &[
            "compare",
            "-f",
            source_format,
            "-F",
            format,
            source.to_str().expect("utf-8"),
            image.to_str().expect("utf-8"),
        ],
    )
    .map(|_| ())
}

/// A read-only loop device over an image, detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(image: &Path, sector_size: u32) -> Result<Self> {
        let out = run(
            "losetup",
            &[
                "--find",
                "--show",
                "--read-only",
                "--sector-size",
                &sector_size.to_string(),
                image.to_str().expect("utf-8"),
            ],
        )?;
        Ok(Self {
            path: PathBuf::from(out.trim()),
        })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// The per-filesystem fixture disks, built by `scripts/make-fs-fixtures.sh` on first use (cached
/// under `target/fs-fixtures`).
pub fn fs_fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("fs-fixtures");
        let status = Command::new("bash")
            .arg(workspace().join("scripts/make-fs-fixtures.sh"))
            .arg(&dir)
            .status()
            .expect("running scripts/make-fs-fixtures.sh");
        assert!(status.success(), "scripts/make-fs-fixtures.sh failed");
        dir
    })
}

/// Copies `len` bytes at `offset` of `from` into a new file `to`.
pub fn extract(from: &Path, offset: u64, len: u64, to: &Path) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let src = std::fs::File::open(from)?;
    let dst = std::fs::File::create(to)?;
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], offset + done)?;
        if buf[..n].iter().any(|&b| b != 0) {
            dst.write_all_at(&buf[..n], done)?;
        }
        done += n as u64;
    }
    dst.set_len(len)?;
    Ok(())
}

/// A mount point that is unmounted (lazily) and removed on drop; for FUSE mounts over a loop
/// device, the device is detached too.
#[derive(Debug)]
pub struct Mounted {
    pub dir: PathBuf,
    loop_device: Option<PathBuf>,
}

impl Mounted {
    /// `mount -o OPTIONS,loop IMAGE DIR` (a kernel filesystem).
    pub fn kernel(image: &Path, dir: &Path, options: &str) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        run(
            "mount",
            &[
                "-o",
                &format!("{options},loop"),
                image.to_str().expect("utf-8"),
                dir.to_str().expect("utf-8"),
            ],
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            loop_device: None,
        })
    }

    /// A FUSE driver (`ntfs-3g`, `mount.exfat-fuse`) over a read-only loop device.
    pub fn fuse(program: &str, image: &Path, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dev = run(
            "losetup",
            &[
                "--find",
                "--show",
                "--read-only",
                image.to_str().expect("utf-8"),
            ],
        )?;
        let dev = PathBuf::from(dev.trim());
        if let Err(e) = run(
            program,
            &[
                "-o",
                "ro",
                dev.to_str().expect("utf-8"),
                dir.to_str().expect("utf-8"),
            ],
        ) {
            let _ = Command::new("losetup").arg("-d").arg(&dev).status();
            return Err(e);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            loop_device: Some(dev),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        if let Some(dev) = &self.loop_device {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

/// Bytes in use by a filesystem image according to partclone (`Space in use: … = N Blocks`
/// times `Block size`), an oracle independent of our parsers.
pub fn partclone_used_bytes(tool: &str, image: &Path) -> Result<u64> {
    let output = Command::new(tool)
        .args([
            "-c",
            "-s",
            image.to_str().expect("utf-8"),
            "-O",
            "/dev/null",
            "-L",
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let blocks = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Space in use:"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    let block = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Block size:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    match (blocks, block) {
        (Some(n), Some(b)) => Ok(n * b),
        _ => bail!("{tool} did not report its usage:\n{text}"),
    }
}

// --- Boot tests (tests/tests/boot_*.rs): the live image under QEMU (TCG) --------------------

/// The live image built by `p2v-image build --no-usb` from the static init and agent, cached
/// under `target/boot-image` and rebuilt when the kernel, the init, the agent or the builder
/// change (their sizes and modification times are the key).
pub fn boot_image() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = target_dir().join("boot-image");
        let musl = target_dir().join("x86_64-unknown-linux-musl/release");
        let init = musl.join("p2v-init");
        let agent = musl.join("p2v-capture");
        let converter = musl.join("p2v-convert");
        let builder = find_bin("p2v-image", &["release", "debug"]);
        assert!(
            init.exists(),
            "{} is not built: run `make build` (cargo build --release -p p2v-init --target x86_64-unknown-linux-musl)",
            init.display()
        );
        let mut key = String::new();
        let kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for p in kernels
            .iter()
            .filter(|p| p.to_string_lossy().contains("vmlinuz"))
            .chain([&init, &agent, &converter, &builder])
        {
            let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            key.push_str(&format!(
                "{} {} {:?}\n",
                p.display(),
                m.len(),
                m.modified().ok()
            ));
        }
        let stamp = dir.join("cache-key");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str())
            && dir.join("initrd.img").exists()
        {
            return dir;
        }
        let out = Command::new(&builder)
            .args(["build", "--no-usb", "--output"])
            .arg(&dir)
            .arg("--init")
            .arg(&init)
            .arg("--agent")
            .arg(&agent)
            .arg("--converter")
            .arg(&converter)
            .stdin(Stdio::null())
            .output()
            .expect("running p2v-image");
        assert!(
            out.status.success(),
            "p2v-image build failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{}", String::from_utf8_lossy(&out.stdout));
        std::fs::write(&stamp, key).expect("writing the cache key");
        dir
    })
}

/// A USB stick image with these kernel arguments, made from [`boot_image`].
pub fn usb_image(cmdline: &str, output: &Path) -> Result<()> {
    let dir = boot_image();
    let builder = find_bin("p2v-image", &["release", "debug"]);
    let out = Command::new(builder)
        .arg("usb")
        .arg("--kernel")
        .arg(dir.join("vmlinuz"))
        .arg("--initrd")
        .arg(dir.join("initrd.img"))
        .arg("--cmdline")
        .arg(cmdline)
        .arg("--output")
        .arg(output)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "p2v-image usb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A QEMU guest whose serial console is collected; killed (process group) on drop.
#[derive(Debug)]
pub struct Qemu {
    process: Guarded,
    console: std::sync::Arc<Mutex<String>>,
    pub started: Instant,
}

impl Qemu {
    /// Starts `qemu-system-x86_64 -nographic -no-reboot` (TCG) with `args` after the machine
    /// basics; the serial console goes to stdout.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Self> {
        let mut command = Command::new("qemu-system-x86_64");
        command
            .args([
                "-machine",
                "q35,accel=tcg",
                "-m",
                "1024",
                "-smp",
                "2",
                "-nographic",
                "-no-reboot",
                "-monitor",
                "none",
                "-serial",
                "stdio",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut process = Guarded::spawn(command)?;
        let console = std::sync::Arc::new(Mutex::new(String::new()));
        for stream in [
            process
                .child()
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            process
                .child()
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let console = console.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    console
                        .lock()
                        .expect("console")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Ok(Self {
            process,
            console,
            started,
        })
    }

    /// Everything on the serial console so far.
    pub fn console(&self) -> String {
        self.console.lock().expect("console").clone()
    }

    /// Waits until the console shows `marker`; returns the line holding it. Fails with the
    /// whole console when `failure` shows up first, QEMU exits, or the timeout passes.
    pub fn wait_for(
        &mut self,
        marker: &str,
        failure: &[&str],
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let console = self.console();
            if let Some(line) = console.lines().find(|l| l.contains(marker)) {
                return Ok(line.trim().to_string());
            }
            if let Some(f) = failure.iter().find(|f| console.contains(*f)) {
                bail!("the guest printed {f:?}; its console:\n{console}");
            }
            if let Ok(Some(status)) = self.process.child().try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                bail!(
                    "QEMU exited ({status}) before {marker:?}; console:\n{}",
                    self.console()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no {marker:?} after {} s; console:\n{console}",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for QEMU to exit (the guest powered off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.process.child().try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "QEMU still running after {} s; console:\n{}",
            timeout.as_secs(),
            self.console()
        )
    }
}

/// A TCP forwarder on 127.0.0.1 that notes when the first byte from a client arrives: the
/// boot tests' "power-on to first byte received by the server".
#[derive(Debug)]
pub struct FirstByteProxy {
    pub port: u16,
    first: std::sync::Arc<Mutex<Option<Instant>>>,
}

impl FirstByteProxy {
    pub fn start(target: std::net::SocketAddr) -> Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let first = std::sync::Arc::new(Mutex::new(None));
        let noted = first.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(server) = std::net::TcpStream::connect(target) else {
                    continue;
                };
                let noted = noted.clone();
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        noted
                            .lock()
                            .expect("first")
                            .get_or_insert_with(Instant::now);
                        if std::io::Write::write_all(&mut s_write, &buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(Self { port, first })
    }

    /// When the first byte arrived, if it did.
    pub fn first_byte(&self) -> Option<Instant> {
        *self.first.lock().expect("first")
    }
}

/// The port of a server URL `https://127.0.0.1:PORT`.
pub fn url_port(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// Bytes in use by a FAT filesystem according to `fsck.fat -n -v`: everything before the data
/// area plus the used clusters.
pub fn fsck_fat_used_bytes(image: &Path) -> Result<u64> {
    let text = run("fsck.fat", &["-n", "-v", image.to_str().expect("utf-8")])?;
    let number_before = |suffix: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.contains(suffix))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let cluster = number_before("bytes per cluster");
    let data_start = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Data area starts at byte "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok());
    let used = text
        .lines()
        .find(|l| l.contains(" files, ") && l.contains(" clusters"))
        .and_then(|l| l.rsplit(", ").next())
        .and_then(|l| l.split('/').next())
        .and_then(|n| n.parse::<u64>().ok());
    match (cluster, data_start, used) {
        (Some(c), Some(d), Some(u)) => Ok(d + u * c),
        _ => bail!("fsck.fat -v did not report its usage:\n{text}"),
    }
}

/// Bytes in use by an ext2/3/4 filesystem according to `dumpe2fs -h`: (block count - free
/// blocks) x block size.
pub fn dumpe2fs_used_bytes(image: &Path) -> Result<u64> {
    let text = run("dumpe2fs", &["-h", image.to_str().expect("utf-8")])?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    match (
        field("Block count:"),
        field("Free blocks:"),
        field("Block size:"),
    ) {
        (Some(n), Some(f), Some(b)) => Ok((n - f) * b),
        _ => bail!("dumpe2fs -h did not report its usage:\n{text}"),
    }
}
