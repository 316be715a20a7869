//! The live image's configuration: kernel arguments (`/proc/cmdline`) in the field's habit,
//! `p2v.server=`, `p2v.fingerprint=`, `p2v.token=`, `p2v.disks=`, `p2v.net=`, `p2v.post=`,
//! `p2v.medium=`, `p2v.debug`, and `p2v.mode=convert` for the conversion appliance (which needs
//! none of the capture arguments: its job comes on a disk). Parsing is pure: a string in, a [`Config`] or a list of
//! problems (every one, so the operator fixes them in one go) out.

use std::net::Ipv4Addr;

/// What the image is booted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A physical machine to capture (the default).
    Capture,
    /// The conversion appliance: the server boots the image in a VM with a guest's disks and a
    /// job disk attached (`p2v-convert appliance`).
    Convert,
}

/// The mode from `p2v.mode=` (default: capture).
pub fn mode(cmdline: &str) -> Result<Mode, ArgError> {
    let mut mode = Mode::Capture;
    for word in words(cmdline) {
        if let Some(v) = word.strip_prefix("p2v.mode=") {
            mode = match v {
                "capture" => Mode::Capture,
                "convert" => Mode::Convert,
                _ => {
                    return Err(err(
                        "p2v.mode",
                        format!("{v:?}: expected capture or convert"),
                    ))
                }
            };
        }
    }
    Ok(mode)
}

/// Whether `p2v.debug` is on (for modes that need nothing else from the command line).
pub fn debug(cmdline: &str) -> bool {
    words(cmdline)
        .iter()
        .any(|w| w == "p2v.debug" || (w.starts_with("p2v.debug=") && w != "p2v.debug=0"))
}

/// What to do after a successful capture (after a failure the machine always stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Post {
    Poweroff,
    Reboot,
    Stay,
}

/// How to configure the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// DHCP on every interface with carrier.
    Dhcp,
    /// One static address.
    Static(StaticNet),
}

/// `p2v.net=192.0.2.10/24,gw=192.0.2.1,dns=192.0.2.53,dev=eth0`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNet {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The interface; default: the first one with carrier.
    pub device: Option<String>,
}

/// The disks to capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disks {
    /// Every disk but the boot medium.
    All,
    /// These (`sda`, `/dev/nvme0n1`), as device paths.
    List(Vec<String>),
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: String,
    /// Host and port of the server (for the reachability check).
    pub server_host: String,
    pub server_port: u16,
    pub fingerprint: String,
    pub token: String,
    pub disks: Disks,
    pub net: Net,
    pub post: Post,
    /// GPT disk GUID of the boot medium (set by the USB stick's boot loader).
    pub medium: Option<String>,
    pub debug: bool,
}

/// A problem with one argument, explained for the console.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{arg}: {message}")]
pub struct ArgError {
    pub arg: &'static str,
    pub message: String,
}

fn err(arg: &'static str, message: impl Into<String>) -> ArgError {
    ArgError {
        arg,
        message: message.into(),
    }
}

/// Splits a kernel command line into words, honouring double quotes as the kernel does.
pub fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Parses `https://host:port[/]` into host and port (443 by default).
pub fn parse_server(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} must start with https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url:?}: bad port {p:?}"))?,
        None => 443,
    };
    Ok((host, port))
}

/// Parses `p2v.net=`.
pub fn parse_net(value: &str) -> Result<Net, String> {
    if value.eq_ignore_ascii_case("dhcp") {
        return Ok(Net::Dhcp);
    }
    let mut parts = value.split(',');
    let first = parts.next().unwrap_or_default();
    let (addr, prefix) = first
        .split_once('/')
        .ok_or_else(|| format!("{first:?}: expected dhcp or ADDRESS/PREFIX (192.0.2.10/24)"))?;
    let address: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{prefix:?} is not a prefix length (0-32)"))?;
    let mut net = StaticNet {
        address,
        prefix,
        gateway: None,
        dns: Vec::new(),
        device: None,
    };
    for part in parts {
        let (key, val) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected gw=, dns= or dev="))?;
        let ip = || {
            val.parse::<Ipv4Addr>()
                .map_err(|_| format!("{key}={val:?} is not an IPv4 address"))
        };
        match key {
            "gw" => net.gateway = Some(ip()?),
            "dns" => net.dns.push(ip()?),
            "dev" => net.device = Some(val.to_string()),
            _ => return Err(format!("unknown key {key:?} (gw=, dns=, dev=)")),
        }
    }
    Ok(Net::Static(net))
}

/// Parses a command line. Arguments that are not `p2v.*` are ignored; unknown `p2v.*` ones
/// are errors (a typo must not silently change what is captured).
pub fn parse(cmdline: &str) -> Result<Config, Vec<ArgError>> {
    let mut errors = Vec::new();
    let (mut server, mut fingerprint, mut token) = (None, None, None);
    let mut disks = Disks::All;
    let mut net = Net::Dhcp;
    let mut post = Post::Poweroff;
    let mut medium = None;
    let mut debug = false;
    for word in words(cmdline) {
        let Some(rest) = word.strip_prefix("p2v.") else {
            continue;
        };
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (rest, None),
        };
        let need = |arg: &'static str| -> Result<&str, ArgError> {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| err(arg, "needs a value"))
        };
        let result = match key {
            "server" => need("p2v.server").and_then(|v| {
                parse_server(v)
                    .map(|hp| server = Some((v.trim_end_matches('/').to_string(), hp)))
                    .map_err(|m| err("p2v.server", m))
            }),
            "fingerprint" => need("p2v.fingerprint").and_then(|v| {
                let hex = v.strip_prefix("sha256:").unwrap_or(v);
                if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    fingerprint = Some(format!("sha256:{}", hex.to_ascii_lowercase()));
                    Ok(())
                } else {
                    Err(err(
                        "p2v.fingerprint",
                        format!("{v:?} is not sha256:<64 hex digits> (run `p2v-server fingerprint`)"),
                    ))
                }
            }),
            "token" => need("p2v.token").map(|v| token = Some(v.to_string())),
            "disks" => need("p2v.disks").map(|v| {
                disks = if v == "all" {
                    Disks::All
                } else {
                    Disks::List(
                        v.split(',')
                            .filter(|d| !d.is_empty())
                            .map(|d| {
                                if d.starts_with('/') {
                                    d.to_string()
                                } else {
                                    format!("/dev/{d}")
                                }
                            })
                            .collect(),
                    )
                }
            }),
            "net" => need("p2v.net")
                .and_then(|v| parse_net(v).map(|n| net = n).map_err(|m| err("p2v.net", m))),
            "post" => need("p2v.post").and_then(|v| {
                post = match v {
                    "poweroff" => Post::Poweroff,
                    "reboot" => Post::Reboot,
                    "stay" => Post::Stay,
                    _ => {
                        return Err(err(
                            "p2v.post",
                            format!("{v:?}: expected poweroff, reboot or stay"),
                        ))
                    }
                };
                Ok(())
            }),
            "medium" => need("p2v.medium").map(|v| medium = Some(v.to_ascii_lowercase())),
            "debug" => {
                debug = value.is_none_or(|v| v != "0");
                Ok(())
            }
            // Checked by `mode()`; only capture mode gets here.
            "mode" => Ok(()),
            _ => Err(ArgError {
                arg: "p2v.*",
                message: format!(
                    "unknown argument {word:?} (known: server, fingerprint, token, disks, net, post, medium, debug, mode)"
                ),
            }),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    if server.is_none() {
        errors.push(err(
            "p2v.server",
            "missing: p2v.server=https://HOST:PORT (as `p2v-server serve` prints it)",
        ));
    }
    if fingerprint.is_none() {
        errors.push(err(
            "p2v.fingerprint",
            "missing: p2v.fingerprint=sha256:... (run `p2v-server fingerprint` on the server)",
        ));
    }
    if token.is_none() {
        errors.push(err(
            "p2v.token",
            "missing: p2v.token=... (run `p2v-server token create --name NAME` on the server)",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (server, (server_host, server_port)) = server.expect("checked");
    Ok(Config {
        server,
        server_host,
        server_port,
        fingerprint: fingerprint.expect("checked"),
        token: token.expect("checked"),
        disks,
        net,
        post,
        medium,
        debug,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn base() -> String {
        format!("BOOT_IMAGE=/vmlinuz console=ttyS0 p2v.server=https://10.0.2.2:8443 p2v.fingerprint={FP} p2v.token=abc quiet")
    }

    #[test]
    fn minimal() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.server, "https://10.0.2.2:8443");
        assert_eq!((c.server_host.as_str(), c.server_port), ("10.0.2.2", 8443));
        assert_eq!(c.fingerprint, FP);
        assert_eq!(c.token, "abc");
        assert_eq!(c.disks, Disks::All);
        assert_eq!(c.net, Net::Dhcp);
        assert_eq!(c.post, Post::Poweroff);
        assert!(!c.debug);
    }

    #[test]
    fn everything() {
        let c = parse(&format!(
            "{} p2v.disks=sda,/dev/nvme0n1 p2v.post=stay p2v.debug p2v.medium=ABC \
             p2v.net=192.0.2.10/24,gw=192.0.2.1,dns=192.0.2.53,dev=eth1",
            base()
        ))
        .unwrap();
        assert_eq!(
            c.disks,
            Disks::List(vec!["/dev/sda".into(), "/dev/nvme0n1".into()])
        );
        assert_eq!(c.post, Post::Stay);
        assert!(c.debug);
        assert_eq!(c.medium.as_deref(), Some("abc"));
        assert_eq!(
            c.net,
            Net::Static(StaticNet {
                address: "192.0.2.10".parse().unwrap(),
                prefix: 24,
                gateway: Some("192.0.2.1".parse().unwrap()),
                dns: vec!["192.0.2.53".parse().unwrap()],
                device: Some("eth1".into()),
            })
        );
    }

    #[test]
    fn problems_are_all_reported() {
        let errors =
            parse("p2v.server=http://x p2v.post=halt p2v.bogus=1 p2v.net=10.0.0.1").unwrap_err();
        let args: Vec<_> = errors.iter().map(|e| e.arg).collect();
        assert_eq!(
            args,
            [
                "p2v.server",
                "p2v.post",
                "p2v.*",
                "p2v.net",
                "p2v.server",
                "p2v.fingerprint",
                "p2v.token"
            ]
        );
        let errors = parse("p2v.fingerprint=sha256:12").unwrap_err();
        assert!(errors[0].to_string().contains("64 hex"), "{errors:?}");
    }

    #[test]
    fn modes() {
        assert_eq!(mode(&base()).unwrap(), Mode::Capture);
        assert_eq!(mode("quiet p2v.mode=convert").unwrap(), Mode::Convert);
        assert!(mode("p2v.mode=fix")
            .unwrap_err()
            .to_string()
            .contains("capture or convert"));
        assert!(parse(&format!("{} p2v.mode=capture", base())).is_ok());
        assert!(debug("a p2v.debug b") && debug("p2v.debug=1") && !debug("p2v.debug=0 x"));
    }

    #[test]
    fn words_and_quotes() {
        assert_eq!(words(" a  b=\"c d\" e "), ["a", "b=c d", "e"]);
        assert_eq!(words(""), Vec::<String>::new());
    }

    #[test]
    fn servers() {
        assert_eq!(parse_server("https://h").unwrap(), ("h".into(), 443));
        assert_eq!(parse_server("https://[::1]:9/").unwrap(), ("::1".into(), 9));
        assert!(parse_server("https://h:x").is_err());
        assert!(parse_server("https://").is_err());
    }
}
