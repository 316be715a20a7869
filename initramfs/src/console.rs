//! The operator's console. The kernel gives PID 1 `/dev/console` (the last `console=`), but an
//! operator may watch the screen while a test or a serial concentrator watches the serial
//! line, so every message goes to each enabled console in `/proc/consoles`.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;

/// Console names from `/proc/consoles` that are enabled but are not `/dev/console` itself
/// (that one is stdout). Pure, for tests.
pub fn extra_consoles(proc_consoles: &str) -> Vec<String> {
    proc_consoles
        .lines()
        .filter_map(|l| {
            let name = l.split_whitespace().next()?;
            let flags = l.split('(').nth(1)?.split(')').next()?;
            (flags.contains('E') && !flags.contains('C')).then(|| name.to_string())
        })
        .collect()
}

static EXTRA: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());

/// Opens the other consoles (after /proc and /dev are mounted).
pub fn init() {
    let Ok(text) = std::fs::read_to_string("/proc/consoles") else {
        return;
    };
    let mut extra = EXTRA.lock().unwrap_or_else(|e| e.into_inner());
    for name in extra_consoles(&text) {
        if let Ok(f) = OpenOptions::new().write(true).open(format!("/dev/{name}")) {
            extra.push(f);
        }
    }
}

/// Writes one line to every console.
pub fn line(text: &str) {
    let mut msg = text.replace('\n', "\r\n");
    msg.push_str("\r\n");
    let _ = std::io::stdout().lock().write_all(msg.as_bytes());
    let _ = std::io::stdout().flush();
    let mut extra = EXTRA.lock().unwrap_or_else(|e| e.into_inner());
    for f in extra.iter_mut() {
        let _ = f.write_all(msg.as_bytes());
    }
}

/// `p2v: ...` on every console.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::line(&format!("p2v: {}", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn consoles() {
        let text = "ttyS0                -W- (EC p a)    4:64\ntty0                 -WU (E  p  )    4:1\nnetcon0 -W- (  )\n";
        assert_eq!(super::extra_consoles(text), ["tty0"]);
    }
}
