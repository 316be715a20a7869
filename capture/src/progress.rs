//! Console progress of a disk capture: a redrawn bar on a terminal, plain lines otherwise (a
//! serial console or a log file), both on stderr.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::Counters;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, else a line every 10 seconds.
    Auto,
    /// Nothing.
    Off,
}

/// Human size with binary units.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// One line of progress: `sda  1.2 GiB / 4.0 GiB  30%  95.3 MiB/s  ETA 0m30s  wire 400.0 MiB`.
pub fn progress_line(name: &str, done: u64, total: u64, elapsed: Duration, wire: u64) -> String {
    let percent = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let eta = if rate > 0.0 && done < total {
        human_duration(Duration::from_secs_f64((total - done) as f64 / rate))
    } else {
        "-".to_string()
    };
    format!(
        "{name}  {} / {}  {percent:.0}%  {}/s  ETA {eta}  wire {}",
        human_bytes(done),
        human_bytes(total),
        human_bytes(rate as u64),
        human_bytes(wire)
    )
}

/// A text bar of `width` cells, `[#####-----]`.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        ((done as f64 / total as f64) * width as f64) as usize
    }
    .min(width);
    format!("[{}{}]", "#".repeat(filled), "-".repeat(width - filled))
}

/// Shows progress of one disk until dropped.
#[derive(Debug)]
pub struct ProgressDisplay {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressDisplay {
    pub fn start(mode: ProgressMode, name: String, total: u64, counters: Arc<Counters>) -> Self {
        if mode == ProgressMode::Off {
            return Self { task: None };
        }
        let tty = std::io::stderr().is_terminal();
        let started = Instant::now();
        let task = tokio::spawn(async move {
            let period = if tty {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(10)
            };
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let done = counters.done_bytes.load(Ordering::Relaxed);
                let line = progress_line(
                    &name,
                    done,
                    total,
                    started.elapsed(),
                    counters.wire_bytes.load(Ordering::Relaxed),
                );
                let mut err = std::io::stderr().lock();
                if tty {
                    let _ = write!(err, "\r\x1b[2K{} {line}", bar(done, total, 24));
                } else {
                    let _ = writeln!(err, "{line}");
                }
                let _ = err.flush();
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            if std::io::stderr().is_terminal() {
                eprint!("\r\x1b[2K");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(4 << 30), "4.0 GiB");
    }

    #[test]
    fn bar_fills() {
        assert_eq!(bar(0, 100, 4), "[----]");
        assert_eq!(bar(50, 100, 4), "[##--]");
        assert_eq!(bar(100, 100, 4), "[####]");
        assert_eq!(bar(5, 0, 2), "[##]");
    }

    #[test]
    fn line_has_rate_and_eta() {
        let line = progress_line("sda", 50 << 20, 100 << 20, Duration::from_secs(5), 10 << 20);
        assert!(line.contains("50%"), "{line}");
        assert!(line.contains("10.0 MiB/s"), "{line}");
        assert!(line.contains("ETA 0m05s"), "{line}");
    }
}
