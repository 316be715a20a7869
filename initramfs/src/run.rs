//! The init's whole life: mount the API filesystems, read the configuration, bring up the
//! hardware and the network, choose the disks, run the agent, show the result, and power off
//! (after success, if asked) or stay. Nothing here panics or returns to the kernel: a PID 1
//! that exits is a kernel panic, and the operator would lose the explanation.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cmdline::{self, Config, Disks, Post};
use crate::coldplug::{self, Loader, Settle};
use crate::{hw, medium, net, say, sys};

/// Where the image carries the agent.
pub const AGENT: &str = "/bin/p2v-capture";

fn mount_all() {
    for (src, target, fstype, data) in [
        ("proc", "/proc", "proc", ""),
        ("sysfs", "/sys", "sysfs", ""),
        ("devtmpfs", "/dev", "devtmpfs", "mode=0755"),
        ("tmpfs", "/run", "tmpfs", "mode=0755"),
    ] {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = sys::mount(src, target, fstype, data) {
            // EBUSY: already mounted (the kernel may mount devtmpfs itself).
            if e.raw_os_error() != Some(libc::EBUSY) {
                eprintln!("p2v: mounting {target}: {e}");
            }
        }
    }
    let _ = std::fs::create_dir_all("/dev/pts");
    let _ = sys::mount("devpts", "/dev/pts", "devpts", "");
    let _ = std::fs::create_dir_all("/tmp");
    let _ = sys::mount("tmpfs", "/tmp", "tmpfs", "mode=1777");
}

/// Stops here for good, keeping the console readable (and reaping orphans).
pub fn stay() -> ! {
    loop {
        sys::reap_zombies();
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// The disks to capture: every disk but the boot medium, or those asked for.
fn choose_disks(config: &Config) -> Result<Vec<String>, String> {
    let all = hw::disks();
    let mut chosen = Vec::new();
    for d in &all {
        let path = format!("/dev/{}", d.name);
        if let Some(id) = read_gpt(&path) {
            if medium::is_medium(&id, config.medium.as_deref()) {
                say!("{path} is the boot medium: not captured");
                continue;
            }
        }
        chosen.push(path);
    }
    match &config.disks {
        Disks::All => {
            if chosen.is_empty() {
                Err(format!(
                    "no disk to capture (found: {}); is the storage controller's driver in the image? (p2v.debug lists loaded modules)",
                    if all.is_empty() { "none".to_string() } else { all.iter().map(|d| d.name.clone()).collect::<Vec<_>>().join(", ") }
                ))
            } else {
                Ok(chosen)
            }
        }
        Disks::List(list) => {
            for p in list {
                if !std::path::Path::new(p).exists() {
                    return Err(format!(
                        "p2v.disks: {p} does not exist (disks here: {})",
                        chosen.join(", ")
                    ));
                }
            }
            Ok(list.clone())
        }
    }
}

fn read_gpt(path: &str) -> Option<medium::GptIdentity> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = vec![0u8; 64 * 1024];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    head.truncate(n);
    medium::parse_gpt(&head, 512).or_else(|| medium::parse_gpt(&head, 4096))
}

/// What to tell the operator to check, from the agent's last words.
pub fn hint(error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if e.contains("fingerprint") {
        "check p2v.fingerprint= against `p2v-server fingerprint` on the server (or a machine in the middle)"
    } else if e.contains("401") || e.contains("token") || e.contains("unauthorized") {
        "check p2v.token= (create one with `p2v-server token create --name NAME`)"
    } else if e.contains("storage") || e.contains("507") {
        "the server's storage is full: free space there, then reboot this machine to resume"
    } else if e.contains("connect") || e.contains("timed out") || e.contains("unreachable") {
        "check that p2v-server is running and reachable from this network, then reboot to resume"
    } else {
        "read the error above; rebooting this machine resumes the capture where it stopped"
    }
}

/// Runs the agent, echoing its progress; Ok(report JSON) or Err(last error line).
fn capture(config: &Config, disks: &[String]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(AGENT);
    cmd.arg("--server")
        .arg(&config.server)
        .arg("--fingerprint")
        .arg(&config.fingerprint)
        .arg("--json")
        .args(disks)
        .env("P2V_TOKEN", &config.token)
        .env("P2V_LOG", if config.debug { "debug" } else { "info" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("starting {AGENT}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let mut last_error = String::new();
    let stderr = child.stderr.take().expect("piped");
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("error") || line.contains("ERROR") {
            last_error = line.clone();
        }
        say!("agent: {line}");
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the agent: {e}"))?;
    let stdout = out_thread.join().unwrap_or_default();
    if !status.success() {
        if last_error.is_empty() {
            last_error = format!("the agent exited with {status}");
        }
        return Err(last_error);
    }
    serde_json::from_slice(&stdout).map_err(|e| format!("the agent's report: {e}"))
}

fn fail(what: &str, hint: &str) -> ! {
    say!("capture FAILED: {what}");
    say!("what to check: {hint}");
    say!("this machine stays on so you can read this; power it off or reboot it by hand");
    stay()
}

/// PID 1's main.
pub fn main() -> ! {
    let t0 = Instant::now();
    mount_all();
    crate::console::init();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    say!("P2V live image {} starting", env!("CARGO_PKG_VERSION"));
    match cmdline::mode(&cmdline) {
        Ok(cmdline::Mode::Capture) => {}
        Ok(cmdline::Mode::Convert) => {
            if !cmdline::debug(&cmdline) {
                let _ = std::fs::write("/proc/sys/kernel/printk", "3 4 1 3");
            }
            match Loader::open(cmdline::debug(&cmdline)) {
                Ok(l) => crate::appliance::main(Arc::new(l), t0),
                Err(e) => {
                    say!("conversion FAILED: reading the module index: {e}");
                    let e = sys::halt(sys::Halt::Poweroff);
                    say!("could not power off: {e}");
                    stay()
                }
            }
        }
        Err(e) => fail(&e.to_string(), "fix p2v.mode= in the boot entry"),
    }
    let config = match cmdline::parse(&cmdline) {
        Ok(c) => c,
        Err(errors) => {
            say!("configuration error in the kernel command line:");
            for e in &errors {
                say!("  {e}");
            }
            say!("kernel command line: {}", cmdline.trim());
            fail(
                "bad or missing p2v.* kernel arguments",
                "fix the boot entry (iPXE script, grub.cfg on the stick) and boot again",
            );
        }
    };
    if !config.debug {
        // Keep kernel chatter off the console the operator reads.
        let _ = std::fs::write("/proc/sys/kernel/printk", "3 4 1 3");
    }
    let _ = std::fs::create_dir_all("/etc");
    let _ = std::fs::write("/etc/resolv.conf", "");

    let loader = match Loader::open(config.debug) {
        Ok(l) => Arc::new(l),
        Err(e) => fail(
            &format!("reading the module index: {e}"),
            "the image is broken: rebuild it with p2v-image",
        ),
    };
    say!("detecting hardware");
    coldplug::run(
        loader.clone(),
        Settle {
            quiet: Duration::from_secs(2),
            bound: Duration::from_secs(60),
        },
        || !hw::disks().is_empty() && !hw::nics().is_empty(),
    );
    say!(
        "hardware settled after {:.1} s ({} modules loaded)",
        t0.elapsed().as_secs_f64(),
        loader.loaded_count()
    );
    for line in hw::summary() {
        say!("{line}");
    }
    let disks = match choose_disks(&config) {
        Ok(d) => d,
        Err(e) => fail(
            &e,
            "check p2v.disks= and that the disks' controller is supported",
        ),
    };
    say!("disks to capture: {}", disks.join(" "));
    let _network = net::bring_up(&config);
    say!("capture starting (server {})", config.server);
    match capture(&config, &disks) {
        Ok(report) => {
            let machine = report["machine_id"].as_str().unwrap_or("?");
            if let Some(list) = report["disks"].as_array() {
                for d in list {
                    say!(
                        "captured {} -> {} ({})",
                        d["path"].as_str().unwrap_or("?"),
                        d["disk_id"].as_str().unwrap_or("?"),
                        hw::human(d["size_bytes"].as_u64().unwrap_or(0))
                    );
                }
            }
            say!(
                "capture complete machine={machine} in {:.0} s",
                t0.elapsed().as_secs_f64()
            );
            match config.post {
                Post::Stay => {
                    say!("p2v.post=stay: staying on");
                    stay()
                }
                Post::Poweroff | Post::Reboot => {
                    let how = if config.post == Post::Reboot {
                        sys::Halt::Reboot
                    } else {
                        sys::Halt::Poweroff
                    };
                    say!(
                        "{}",
                        if config.post == Post::Reboot {
                            "rebooting"
                        } else {
                            "powering off"
                        }
                    );
                    let e = sys::halt(how);
                    say!("could not power off: {e}");
                    stay()
                }
            }
        }
        Err(e) => {
            let h = hint(&e);
            fail(&e, h)
        }
    }
}
