//! Exports through the API, downloaded with the operator client, checked with `qemu-img`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use p2v_protocol::api::{paths, DiskCompleted, ErrorCode, ExportFormat};
use p2v_protocol::DiskId;
use p2v_server::operator::Operator;
use p2v_server::RunningServer;

/// Uploads `source` as a new disk and completes it.
async fn complete_disk(server: &RunningServer, source: &[u8], key: &str) -> DiskId {
    let mut api = Api::admin(server);
    let session = start_session(&mut api, key).await.session_id;
    let disk = announce(&mut api, session, "sda", source.len() as u64)
        .await
        .disk_id;
    for index in 0..(source.len() as u64).div_ceil(CHUNK) {
        ok::<serde_json::Value>(api.upload(disk, source, index, Some(session)).await);
    }
    ok::<DiskCompleted>(api.post_raw(&paths::disk_complete(disk), Vec::new()).await);
    disk
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img is installed")
}

fn virtual_size(path: &Path, format: &str) -> u64 {
    let out = qemu_img(&[
        "info",
        "--output=json",
        "-f",
        format,
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    info["virtual-size"].as_u64().unwrap()
}

fn assert_identical(source: &Path, image: &Path, format: &str) {
    let out = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        format,
        source.to_str().unwrap(),
        image.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "qemu-img compare: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Images are identical"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_match_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(&tmp.path().join("data")).await;
    let source = sample_image(20, 0); // 1.25 MiB: not a whole MiB, so vhd is rounded up
    let source_path = tmp.path().join("source.raw");
    std::fs::write(&source_path, &source).unwrap();
    let disk = complete_disk(&server, &source, "machine-export").await;
    let operator = Operator::new(
        server.local_url(),
        server.fingerprint(),
        server.admin_token().to_string(),
    )
    .unwrap();

    for format in [
        ExportFormat::Qcow2,
        ExportFormat::Vmdk,
        ExportFormat::Vhdx,
        ExportFormat::Raw,
    ] {
        let out = tmp.path().join(format!("out.{}", format.as_str()));
        let bytes = operator.export(disk, format, false, &out).await.unwrap();
        assert_eq!(bytes, std::fs::metadata(&out).unwrap().len());
        assert_eq!(
            virtual_size(&out, format.qemu_format()),
            source.len() as u64,
            "{format:?}"
        );
        assert_identical(&source_path, &out, format.qemu_format());
    }
    let qcow2 = tmp.path().join("out.qcow2");
    let magic = std::fs::read(&qcow2).unwrap();
    assert_eq!(&magic[..4], b"QFI\xfb", "not a qcow2 file");

    // vhd: fixed, rounded up to a whole MiB, and the same bytes followed by zeros.
    let vhd = tmp.path().join("out.vhd");
    operator
        .export(disk, ExportFormat::Vhd, false, &vhd)
        .await
        .unwrap();
    let rounded = (source.len() as u64).div_ceil(1 << 20) << 20;
    assert_eq!(virtual_size(&vhd, "vpc"), rounded);
    // A fixed VHD is the data followed by a 512-byte footer ("conectix").
    let bytes = std::fs::read(&vhd).unwrap();
    assert_eq!(bytes.len() as u64, rounded + 512);
    assert_eq!(&bytes[bytes.len() - 512..][..8], b"conectix");
    assert!(bytes[..source.len()] == source[..]);
    assert!(bytes[source.len()..rounded as usize]
        .iter()
        .all(|b| *b == 0));

    // The converted files are cached under their final names, and nothing temporary is left.
    let exports = server.data_dir().exports_dir();
    let mut names: Vec<String> = std::fs::read_dir(&exports)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["qcow2", "vhd", "vhdx", "vmdk"]
            .map(|ext| format!("{disk}.{ext}"))
            .to_vec()
    );
    let before = std::fs::metadata(exports.join(format!("{disk}.qcow2")))
        .unwrap()
        .modified()
        .unwrap();
    operator
        .export(disk, ExportFormat::Qcow2, false, &qcow2)
        .await
        .unwrap();
    let after = std::fs::metadata(exports.join(format!("{disk}.qcow2")))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "an unchanged disk must reuse its export");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_need_a_complete_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut api = Api::admin(&server);
    let session = start_session(&mut api, "m").await.session_id;
    let disk = announce(&mut api, session, "sda", 4 * CHUNK).await.disk_id;
    let response = api
        .get(&paths::disk_export(disk, ExportFormat::Qcow2))
        .await;
    let message = expect_error(&response, 409, ErrorCode::Conflict);
    assert!(message.contains("not complete"), "{message}");
    let response = api
        .get(&format!("{}/export?format=iso", paths::disk(disk)))
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    let response = api.get(&format!("{}/export", paths::disk(disk))).await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    // The operator client reports the server's reason and leaves no file behind.
    let operator = Operator::new(
        server.local_url(),
        server.fingerprint(),
        server.admin_token().to_string(),
    )
    .unwrap();
    let out = tmp.path().join("never.qcow2");
    let err = operator
        .export(disk, ExportFormat::Qcow2, false, &out)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert!(!out.exists());
    // Enrollment tokens cannot export.
    let mut admin = Api::admin(&server);
    let token: p2v_protocol::api::TokenCreated = admin
        .post_ok(
            paths::TOKENS,
            &p2v_protocol::api::CreateToken { name: "t".into() },
        )
        .await;
    let mut agent = Api::new(&server, Some(&token.token));
    let response = agent
        .get(&paths::disk_export(disk, ExportFormat::Raw))
        .await;
    expect_error(&response, 401, ErrorCode::Unauthorized);
    server.shutdown().await.unwrap();
}
