//! End to end: real `p2v-server` and `p2v-capture` processes over TLS on loopback, real fixture
//! disks, and `qemu-img` as the independent judge of the rebuilt images.

use std::path::Path;
use std::time::{Duration, Instant};

use p2v_protocol::api::{DiskState, DiskSummary};
use p2v_protocol::layout::{PartitionKind, PartitionTable, ProtectiveMbr};
use p2v_tests::*;
use tempfile::TempDir;

fn report_disk(report: &serde_json::Value) -> &serde_json::Value {
    &report["disks"][0]
}

fn disk_by_id(server: &Server, id: &str) -> DiskSummary {
    server
        .disks()
        .unwrap()
        .into_iter()
        .find(|d| d.disk_id.to_string() == id)
        .unwrap_or_else(|| panic!("disk {id} not listed"))
}

/// Captures `source` (a fixture or a block device) and returns the agent's report.
fn capture(server: &Server, token: &str, source: &Path, extra: &[&str]) -> serde_json::Value {
    capture_json(server, token, source, extra)
}

/// Exports `disk` in every format and checks each against `source` with qemu-img.
fn check_all_exports(server: &Server, disk: &str, source: &Path, work: &Path) {
    let source_size = std::fs::metadata(source).map(|m| m.len()).unwrap();
    for format in ["qcow2", "raw", "vmdk", "vhdx", "vhd"] {
        let out = work.join(format!("export.{format}"));
        server.export(disk, format, &out).unwrap();
        let qemu_format = if format == "vhd" { "vpc" } else { format };
        qemu_img_compare(source, "raw", &out, qemu_format)
            .unwrap_or_else(|e| panic!("{format} export differs from the source: {e:#}"));
        let info: serde_json::Value = serde_json::from_str(
            &run(
                "qemu-img",
                &[
                    "info",
                    "--output=json",
                    "-f",
                    qemu_format,
                    out.to_str().unwrap(),
                ],
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(info["format"], qemu_format, "{info}");
        assert!(
            info["virtual-size"].as_u64().unwrap() >= source_size,
            "{format}: {info}"
        );
        if format == "vmdk" {
            let subformat = info["format-specific"]["data"]["create-type"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(subformat, "streamOptimized", "{info}");
        }
        if matches!(format, "qcow2" | "vmdk" | "vhdx") {
            run(
                "qemu-img",
                &["check", "-f", qemu_format, out.to_str().unwrap()],
            )
            .unwrap_or_else(|e| panic!("qemu-img check of the {format} export: {e:#}"));
        }
        std::fs::remove_file(&out).unwrap();
    }
}

/// A fresh server, one capture of `source`, and the server's view of the disk.
struct Fresh {
    work: TempDir,
    server: Server,
    disk: String,
    summary: DiskSummary,
}

fn capture_fresh(source: &Path) -> Fresh {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let report = capture(&server, &token, source, &[]);
    let disk = report_disk(&report)["disk_id"]
        .as_str()
        .unwrap()
        .to_string();
    let summary = disk_by_id(&server, &disk);
    Fresh {
        work,
        server,
        disk,
        summary,
    }
}

/// Exports as qcow2: identical to `source` per `qemu-img compare`, clean per `qemu-img check`.
fn assert_qcow2_export_identical(f: &Fresh, source: &Path) {
    let out = f.work.path().join("export.qcow2");
    f.server.export(&f.disk, "qcow2", &out).unwrap();
    qemu_img_compare(source, "raw", &out, "qcow2").unwrap();
    run("qemu-img", &["check", out.to_str().unwrap()]).unwrap();
}

#[test]
fn gpt_disk_with_esp_ext4_and_swap_round_trips() {
    let source = fixtures().join("gpt.img");
    let fresh = capture_fresh(&source);
    let summary = &fresh.summary;
    assert_eq!(summary.state, DiskState::Complete);
    assert_eq!(summary.durable_chunks, summary.chunk_count);
    let PartitionTable::Gpt {
        partitions,
        mbr,
        backup_header_ok,
        ..
    } = &summary.layout
    else {
        panic!("expected GPT, got {:?}", summary.layout)
    };
    assert_eq!(*mbr, ProtectiveMbr::Protective);
    assert!(backup_header_ok);
    let types: Vec<_> = partitions
        .iter()
        .map(|p| p.type_name.as_deref().unwrap_or("?"))
        .collect();
    assert_eq!(types, ["EFI System", "Linux filesystem", "Linux swap"]);
    assert_eq!(partitions[0].start_bytes, 1 << 20);

    check_all_exports(&fresh.server, &fresh.disk, &source, fresh.work.path());
}

#[test]
fn mbr_disk_with_extended_and_logical_partitions_round_trips() {
    let source = fixtures().join("mbr.img");
    let fresh = capture_fresh(&source);
    let summary = &fresh.summary;
    let PartitionTable::Mbr { partitions, .. } = &summary.layout else {
        panic!("expected MBR, got {:?}", summary.layout)
    };
    let shape: Vec<_> = partitions
        .iter()
        .map(|p| (p.number, p.kind, p.bootable))
        .collect();
    assert_eq!(
        shape,
        [
            (1, PartitionKind::Primary, true),
            (2, PartitionKind::Extended, false),
            (5, PartitionKind::Logical, false),
            (6, PartitionKind::Logical, false),
        ]
    );
    assert_qcow2_export_identical(&fresh, &source);
}

/// A 4Kn disk as a real block device: a loop device with 4096-byte logical sectors, so the agent
/// learns the sector size from sysfs like on hardware.
#[test]
fn disk_with_4096_byte_sectors_round_trips_from_a_block_device() {
    let source = fixtures().join("gpt-4k.img");
    let device = LoopDevice::attach(&source, 4096).unwrap();
    let fresh = capture_fresh(&device.path);
    let summary = &fresh.summary;
    assert_eq!(summary.info.logical_sector_size, 4096);
    assert_eq!(
        summary.info.source,
        p2v_protocol::inventory::DiskSource::BlockDevice
    );
    let PartitionTable::Gpt { partitions, .. } = &summary.layout else {
        panic!("expected GPT, got {:?}", summary.layout)
    };
    assert_eq!(partitions.len(), 1);
    assert_eq!(partitions[0].start_bytes, 1 << 20, "4Kn LBA 256 is 1 MiB");
    assert_qcow2_export_identical(&fresh, &source);
}

#[test]
fn server_killed_half_way_then_rerun_sends_only_the_rest() {
    let work = TempDir::new().unwrap();
    let data = work.path().join("data");
    let mut server = Server::start(&data).unwrap();
    let token = server.create_token().unwrap();
    let source = fixtures().join("big-random.img");

    // zstd level 19 makes the capture slow enough to interrupt it in the middle.
    let mut args = server.agent_args(&token);
    args.extend(
        [
            "--level",
            "19",
            "--retry-for",
            "2s",
            "--no-progress",
            "--json",
        ]
        .map(String::from),
    );
    args.push(source.display().to_string());
    let agent = spawn_agent(&args).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (count, durable_at_kill) = loop {
        assert!(
            Instant::now() < deadline,
            "capture never got half-way:\n{}",
            server.log()
        );
        if let Some(d) = server.disks().unwrap().first() {
            if d.durable_chunks * 10 >= d.chunk_count * 4 {
                break (d.chunk_count, d.durable_chunks);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    server.kill9();
    let first = agent.wait_output(Duration::from_secs(120)).unwrap();
    assert!(
        !first.status.success(),
        "the agent cannot have finished without its server"
    );

    let server = Server::start(&data).unwrap();
    let after_restart = server.disks().unwrap().remove(0);
    assert!(
        after_restart.durable_chunks >= durable_at_kill,
        "acknowledged chunks were lost: {} durable before SIGKILL, {} after",
        durable_at_kill,
        after_restart.durable_chunks
    );
    assert!(
        after_restart.durable_chunks < count,
        "nothing was left to resume"
    );
    assert_eq!(after_restart.state, DiskState::Receiving);

    let report = capture(&server, &token, &source, &["--level", "19"]);
    let disk = report_disk(&report);
    let missing_bytes = (count - after_restart.durable_chunks) * p2v_protocol::CHUNK_SIZE;
    let sent = disk["raw_bytes_sent"].as_u64().unwrap();
    assert!(
        sent as f64 <= missing_bytes as f64 * 1.05,
        "re-run sent {sent} bytes for {missing_bytes} missing"
    );
    assert_eq!(
        disk["chunks_skipped"].as_u64().unwrap(),
        after_restart.durable_chunks,
        "every durable chunk is skipped"
    );
    let out = work.path().join("resumed.qcow2");
    server
        .export(disk["disk_id"].as_str().unwrap(), "qcow2", &out)
        .unwrap();
    qemu_img_compare(&source, "raw", &out, "qcow2").unwrap();
}

#[test]
fn four_agents_capture_four_disks_at_once() {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let names = ["gpt.img", "mbr.img", "gpt-4k.img", "big-random.img"];
    let agents: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut args = server.agent_args(&token);
            args.extend(
                [
                    "--json",
                    "--no-progress",
                    "--threads",
                    "1",
                    "--connections",
                    "2",
                ]
                .map(String::from),
            );
            args.extend(["--machine-key".to_string(), format!("rack-test-{i}")]);
            args.push(fixtures().join(name).display().to_string());
            spawn_agent(&args).unwrap()
        })
        .collect();
    let reports: Vec<_> = agents
        .into_iter()
        .map(|a| agent_report(&a.wait_output(Duration::from_secs(600)).unwrap()).unwrap())
        .collect();
    let machines = server.machines().unwrap();
    assert_eq!(machines.len(), 4, "four machines on the server");
    for (name, report) in names.iter().zip(&reports) {
        let disk = report_disk(report)["disk_id"].as_str().unwrap();
        let out = work.path().join(format!("{name}.raw"));
        server.export(disk, "raw", &out).unwrap();
        qemu_img_compare(&fixtures().join(name), "raw", &out, "raw")
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
}

#[test]
fn wrong_fingerprint_sends_nothing_and_says_why() {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let output = run_agent(&[
        "--server",
        &server.url,
        "--fingerprint",
        &wrong,
        "--token",
        &token,
        "--no-progress",
        fixtures().join("gpt.img").to_str().unwrap(),
    ])
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not trusted") && stderr.contains(&wrong),
        "{stderr}"
    );
    assert!(
        stderr.contains(&server.fingerprint),
        "names the fingerprint it saw: {stderr}"
    );
    assert!(
        server.machines().unwrap().is_empty(),
        "nothing reached the server"
    );
    assert!(server.sessions().unwrap().is_empty());
}

#[test]
fn wrong_token_is_refused_and_nothing_is_stored() {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let output = run_agent(
        &[
            &server.agent_args("not-a-token")[..],
            &[
                "--no-progress".to_string(),
                fixtures().join("gpt.img").display().to_string(),
            ],
        ]
        .concat(),
    )
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("token"),
        "{stderr}"
    );
    assert!(server.machines().unwrap().is_empty());
    assert!(server.disks().unwrap().is_empty());
}

/// The server's data dir on a tmpfs too small for the disk: the capture stops with a clear error
/// on both sides, what was acknowledged stays, and after the tmpfs grows the same command
/// completes the capture.
#[test]
fn server_storage_full_stops_cleanly_and_resumes_after_space_is_freed() {
    let work = TempDir::new().unwrap();
    let mount = work.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=24m",
            "p2v-test",
            mount.to_str().unwrap(),
        ],
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let server = Server::start(&mount.join("data")).unwrap();
    let token = server.create_token().unwrap();
    let source = fixtures().join("big-random.img");
    let mut args = server.agent_args(&token);
    args.extend(["--no-progress".into(), source.display().to_string()]);

    let output = run_agent(&args).unwrap();
    assert!(!output.status.success(), "the disk cannot fit");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("storage is full"), "{stderr}");
    assert!(
        server.log().to_lowercase().contains("full"),
        "the server says so too:\n{}",
        server.log()
    );
    let before = server.disks().unwrap().remove(0);
    assert!(before.durable_chunks > 0 && before.durable_chunks < before.chunk_count);

    run(
        "mount",
        &["-o", "remount,size=400m", mount.to_str().unwrap()],
    )
    .unwrap();
    args.push("--json".into());
    let report = agent_report(&run_agent(&args).unwrap()).unwrap();
    let disk = report_disk(&report);
    assert!(
        disk["chunks_skipped"].as_u64().unwrap() >= before.durable_chunks,
        "nothing acknowledged was lost"
    );
    let out = work.path().join("after-full.qcow2");
    server
        .export(disk["disk_id"].as_str().unwrap(), "qcow2", &out)
        .unwrap();
    qemu_img_compare(&source, "raw", &out, "qcow2").unwrap();
}

/// `p2v-capture --inventory` against independent views of this machine: lsblk for disks, nproc
/// and /proc/meminfo for CPUs and memory, ip(8) for NIC MACs.
#[test]
fn inventory_matches_lsblk_nproc_and_ip() {
    let output = run_agent(&["--inventory"]).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let inventory: p2v_protocol::inventory::Inventory =
        serde_json::from_slice(&output.stdout).unwrap();

    let nproc: u32 = run("nproc", &["--all"]).unwrap().trim().parse().unwrap();
    assert_eq!(inventory.cpu.threads, nproc);
    assert!(inventory.cpu.cores >= 1 && inventory.cpu.cores <= nproc);
    assert!(inventory.memory_bytes > 256 << 20);

    let lsblk: serde_json::Value = serde_json::from_str(
        &run(
            "lsblk",
            &[
                "--json",
                "--bytes",
                "--nodeps",
                "-o",
                "NAME,SIZE,TYPE,LOG-SEC",
            ],
        )
        .unwrap(),
    )
    .unwrap();
    let expected: Vec<(String, u64, u64)> = lsblk["blockdevices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["type"] == "disk" && d["size"].as_u64().unwrap_or(0) > 0)
        .filter(|d| {
            let name = d["name"].as_str().unwrap();
            !["zram", "nbd", "loop", "ram", "md"]
                .iter()
                .any(|p| name.starts_with(p))
        })
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["size"].as_u64().unwrap(),
                d["log-sec"].as_u64().unwrap(),
            )
        })
        .collect();
    let ours: Vec<(String, u64, u64)> = inventory
        .disks
        .iter()
        .map(|d| {
            (
                d.name.clone(),
                d.size_bytes,
                u64::from(d.logical_sector_size),
            )
        })
        .collect();
    assert_eq!(ours, expected, "disks as lsblk sees them");
    assert!(
        inventory
            .disks
            .iter()
            .all(|d| d.controller_driver.is_some()),
        "{:?}",
        inventory.disks
    );

    let links: serde_json::Value =
        serde_json::from_str(&run("ip", &["-json", "link"]).unwrap()).unwrap();
    for nic in &inventory.nics {
        let found = links
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["ifname"] == nic.name && l["address"] == nic.mac);
        assert!(found, "{nic:?} not in ip link");
    }
}

/// The server rejects the first chunks as corrupted (422, through its fault-injection switch);
/// the agent sends them again and the capture is still identical.
#[test]
fn chunks_rejected_as_corrupted_are_sent_again() {
    let work = TempDir::new().unwrap();
    let server =
        Server::start_with(&work.path().join("data"), &["--inject-corrupt-chunks", "3"]).unwrap();
    let token = server.create_token().unwrap();
    let source = fixtures().join("gpt.img");
    let report = capture(&server, &token, &source, &[]);
    let disk = report_disk(&report)["disk_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        server.log().matches("treating the chunk at offset").count(),
        3,
        "{}",
        server.log()
    );
    let out = work.path().join("resent.qcow2");
    server.export(&disk, "qcow2", &out).unwrap();
    qemu_img_compare(&source, "raw", &out, "qcow2").unwrap();
}

/// Starts a slow capture of big-random.img and returns the agent once the server holds at least
/// `percent` of its chunks durably.
fn start_slow_capture(
    server: &Server,
    token: &str,
    retry_for: &str,
    percent: u64,
) -> (Guarded, u64) {
    let mut args = server.agent_args(token);
    args.extend(
        [
            "--level",
            "19",
            "--retry-for",
            retry_for,
            "--no-progress",
            "--json",
        ]
        .map(String::from),
    );
    args.push(fixtures().join("big-random.img").display().to_string());
    let agent = spawn_agent(&args).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            Instant::now() < deadline,
            "capture never got to {percent}%:\n{}",
            server.log()
        );
        if let Some(d) = server.disks().unwrap().first() {
            if d.durable_chunks * 100 >= d.chunk_count * percent {
                return (agent, d.durable_chunks);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn agent_killed_half_way_then_rerun_completes() {
    let work = TempDir::new().unwrap();
    let server = Server::start(&work.path().join("data")).unwrap();
    let token = server.create_token().unwrap();
    let (mut agent, _) = start_slow_capture(&server, &token, "5m", 40);
    agent.kill9();
    let before = server.disks().unwrap().remove(0);
    assert_eq!(before.state, DiskState::Receiving);

    let source = fixtures().join("big-random.img");
    let report = capture(&server, &token, &source, &[]);
    let disk = report_disk(&report);
    assert!(disk["chunks_skipped"].as_u64().unwrap() >= before.durable_chunks);
    let out = work.path().join("after-agent-kill.raw");
    server
        .export(disk["disk_id"].as_str().unwrap(), "raw", &out)
        .unwrap();
    qemu_img_compare(&source, "raw", &out, "raw").unwrap();
}

/// The server goes away and comes back on the same address while the agent is retrying: the
/// same run of the agent completes, no re-run needed.
#[test]
fn agent_rides_out_a_server_restart() {
    let work = TempDir::new().unwrap();
    let data = work.path().join("data");
    let mut server = Server::start(&data).unwrap();
    let token = server.create_token().unwrap();
    let listen = server.url.trim_start_matches("https://").to_string();
    let (agent, _) = start_slow_capture(&server, &token, "2m", 30);
    server.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let server = Server::start_with(&data, &["--listen", &listen]).unwrap();
    let output = agent.wait_output(Duration::from_secs(600)).unwrap();
    let report =
        agent_report(&output).unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", server.log()));
    // One session: the same run carried on (whether it had to retry depends on whether an upload
    // fell in the outage; at level 19 the uploaders may all be waiting for compression).
    assert_eq!(server.sessions().unwrap().len(), 1, "no re-run happened");
    let disk = report_disk(&report);
    let out = work.path().join("ride-out.raw");
    server
        .export(disk["disk_id"].as_str().unwrap(), "raw", &out)
        .unwrap();
    qemu_img_compare(&fixtures().join("big-random.img"), "raw", &out, "raw").unwrap();
}
