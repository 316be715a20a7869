//! Bringing up the hardware without udev: every device's `modalias` under `/sys` is matched
//! against `modules.alias` and the modules are loaded with their dependencies from
//! `modules.dep` (what `udevadm trigger` + `modprobe` do). Uevents from a netlink socket opened
//! *before* the sysfs walk catch the devices that appear as drivers probe (disks behind a
//! controller, USB devices behind a host controller), until nothing new happens for a while.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::modules::{AliasIndex, DepIndex};
use crate::sys::{finit_module, UeventSocket};
use crate::uevent;

/// Modules loaded whatever the hardware says: disk class drivers have aliases too, but
/// loading them up front saves a round of events.
pub const ALWAYS: &[&str] = &["sd_mod", "nvme", "virtio_blk", "usb_storage", "uas"];

/// The module store of the running kernel.
#[derive(Debug)]
pub struct Loader {
    root: PathBuf,
    deps: DepIndex,
    aliases: AliasIndex,
    done: Mutex<HashSet<String>>,
    debug: bool,
}

impl Loader {
    /// Reads `/lib/modules/<release>/modules.{dep,alias}`.
    pub fn open(debug: bool) -> std::io::Result<Self> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
        let root = Path::new("/lib/modules").join(release.trim());
        let deps = DepIndex::parse(&std::fs::read_to_string(root.join("modules.dep"))?);
        let aliases = AliasIndex::parse(&std::fs::read_to_string(root.join("modules.alias"))?);
        Ok(Self {
            root,
            deps,
            aliases,
            done: Mutex::new(HashSet::new()),
            debug,
        })
    }

    /// Loads a module and its dependencies; unknown names (built in, or not in the image)
    /// are skipped quietly. Returns whether anything new was loaded.
    pub fn load(&self, name: &str) -> bool {
        if !self.deps.contains(name) {
            return false;
        }
        let mut new = false;
        for rel in self.deps.load_order(name) {
            let mname = crate::modules::module_name(&rel);
            {
                let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
                if !done.insert(mname.clone()) {
                    continue;
                }
            }
            let path = self.root.join(&rel);
            let result = std::fs::File::open(&path).and_then(|f| finit_module(&f));
            match result {
                Ok(()) => {
                    new = true;
                    if self.debug {
                        crate::say!("loaded {mname}");
                    }
                }
                // ENODEV/ENXIO: the driver found no device of its own; not worth a line.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENXIO)) => {}
                Err(e) => crate::say!("module {mname}: {e}"),
            }
        }
        new
    }

    /// Loads every module whose alias matches.
    pub fn load_for(&self, modalias: &str) -> bool {
        let mut new = false;
        for m in self.aliases.lookup(modalias) {
            new |= self.load(m);
        }
        new
    }

    pub fn loaded_count(&self) -> usize {
        self.done.lock().map(|d| d.len()).unwrap_or(0)
    }
}

/// Every `modalias` file under `dir` (symlinks are not followed, so each device once).
pub fn modaliases(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            modaliases(&entry.path(), out);
        } else if ft.is_file() && entry.file_name() == "modalias" {
            if let Ok(s) = std::fs::read_to_string(entry.path()) {
                let s = s.trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
            }
        }
    }
}

/// One pass over sysfs; returns whether a module was loaded.
pub fn scan(loader: &Loader) -> bool {
    let mut all = Vec::new();
    modaliases(Path::new("/sys/devices"), &mut all);
    all.sort();
    all.dedup();
    let mut new = false;
    for m in &all {
        new |= loader.load_for(m);
    }
    new
}

/// When to stop waiting for hardware.
#[derive(Debug, Clone, Copy)]
pub struct Settle {
    /// Quiet time: no new uevent for this long...
    pub quiet: Duration,
    /// ...and at least one disk and one NIC, or this much time in all.
    pub bound: Duration,
}

/// Coldplug then follow uevents until settled; afterwards a thread keeps loading drivers for
/// late devices (a disk shelf spinning up, a USB NIC plugged in).
pub fn run(loader: Arc<Loader>, settle: Settle, ready: impl Fn() -> bool) {
    let start = Instant::now();
    let socket = UeventSocket::open()
        .map_err(|e| crate::say!("uevent socket: {e} (drivers of late devices will be missed)"))
        .ok();
    for m in ALWAYS {
        loader.load(m);
    }
    // Two passes: drivers loaded in the first (a PCI bridge, a USB host) expose new devices.
    scan(&loader);
    scan(&loader);
    let Some(socket) = socket else {
        std::thread::sleep(settle.quiet);
        scan(&loader);
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_event = Instant::now();
    loop {
        let elapsed = start.elapsed();
        let quiet = last_event.elapsed() >= settle.quiet;
        if (quiet && ready()) || elapsed >= settle.bound {
            break;
        }
        match socket.recv(&mut buf, Duration::from_millis(250)) {
            Ok(Some(0)) => {
                scan(&loader);
            }
            Ok(Some(n)) => {
                if let Some(ev) = uevent::parse(&buf[..n]) {
                    last_event = Instant::now();
                    if ev.action == "add" {
                        if let Some(m) = ev.modalias() {
                            loader.load_for(m);
                        }
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                crate::say!("uevent socket: {e}");
                break;
            }
        }
    }
    std::thread::spawn(move || loop {
        match socket.recv(&mut buf, Duration::from_secs(3600)) {
            Ok(Some(n)) if n > 0 => {
                if let Some(ev) = uevent::parse(&buf[..n]) {
                    if ev.action == "add" {
                        if let Some(m) = ev.modalias() {
                            loader.load_for(m);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    });
}
