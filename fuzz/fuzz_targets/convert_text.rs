//! Every text parser of the conversion's inspection on the same input: none may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use p2v_convert::inspect::{cmdline, fstab, modules, network, osrelease};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = osrelease::parse(&text);
    let _ = osrelease::assignments(&text, false);
    let _ = fstab::parse_fstab(&text);
    let _ = fstab::parse_crypttab(&text);
    let _ = cmdline::parse_grub_cfg(&text);
    let _ = cmdline::parse_default_grub(&text);
    let _ = cmdline::parse_extlinux(&text);
    let _ = cmdline::parse_loader_entry(&text);
    let _ = cmdline::parse_resume_conf(&text);
    let _ = cmdline::replace_arg(&text, "root", "/dev/sda1", "UUID=x");
    let _ = network::parse_interfaces(&text);
    let _ = network::parse_netplan(&text);
    let _ = network::parse_nm_keyfile(&text);
    let _ = network::parse_networkd(&text);
    let _ = network::parse_link(&text);
    let _ = network::parse_udev_rules(&text);
    let _ = modules::parse_modules_dep(&text);
    let _ = modules::parse_modules_builtin(&text);
});
