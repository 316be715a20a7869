//! A data directory on a small tmpfs: when it fills up, uploads get 507 `storage_full`, the
//! server keeps running, and the same uploads succeed once space is freed, both when the raw
//! image write fails and when the metadata commit does. Skipped (with the reason printed) where
//! a tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use http::StatusCode;
use p2v_protocol::api::{paths, CreateToken, DiskCompleted, ErrorCode};
use p2v_protocol::{ChunkEncoding, ChunkHash};
use p2v_server::Limits;

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Self {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Fills the filesystem with real (allocated) bytes until at most `leave` bytes are free.
fn fill(dir: &Path, name: &str, leave: u64) -> PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0x5au8; 64 * 1024];
    while free_bytes(dir) > leave {
        if file.write_all(&block).is_err() {
            break;
        }
    }
    let _ = file.flush();
    path
}

fn random_chunk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_storage_is_507_and_uploads_resume_after_freeing_space() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = match Tmpfs::mount(&tmp.path().join("mnt"), "24m") {
        Ok(mount) => mount,
        Err(reason) => {
            println!("SKIPPED full_storage_is_507...: cannot mount a tmpfs: {reason}");
            return;
        }
    };
    let data_dir = mount.path.join("data");
    // No reserve: the filesystem's own ENOSPC must give the 507.
    let limits = Limits {
        storage_reserve_bytes: 0,
        ..Limits::default()
    };
    let server = start_with(&data_dir, limits).await;
    let mut api = Api::admin(&server);
    let session = start_session(&mut api, "machine-full").await.session_id;
    let size = 4 * CHUNK * 16; // 4 MiB
    let disk = announce(&mut api, session, "sda", size).await.disk_id;

    let filler = fill(&mount.path, "filler", 16 * 1024);
    let chunk = random_chunk(CHUNK as usize, 7);
    let hash = ChunkHash::of(&chunk);
    let mut refused = 0;
    let mut offset = 0;
    // The few KiB left may hold a page or two; the next chunks cannot fit.
    while refused == 0 && offset < size {
        let response = api
            .put_chunk(
                disk,
                offset,
                ChunkEncoding::Raw,
                hash,
                chunk.clone(),
                Some(session),
            )
            .await;
        if response.status.as_u16() == 507 {
            let message = expect_error(&response, 507, ErrorCode::StorageFull);
            assert!(message.contains("storage is full"), "{message}");
            assert!(message.contains("resumes once space is freed"), "{message}");
            refused += 1;
        } else {
            assert_eq!(response.status, StatusCode::OK, "{}", text(&response));
            offset += CHUNK;
        }
    }
    assert_eq!(refused, 1, "the filesystem never filled up");
    let failed_offset = offset;
    // Not recorded, and the server still answers.
    let list = api.chunk_list(disk).await;
    assert_eq!(list[(failed_offset / CHUNK) as usize], [0u8; 32]);
    let _: serde_json::Value = api.get_ok(paths::HEALTH).await;

    // Free the space: the very same upload now succeeds.
    std::fs::remove_file(&filler).unwrap();
    let response = api
        .put_chunk(
            disk,
            failed_offset,
            ChunkEncoding::Raw,
            hash,
            chunk.clone(),
            Some(session),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", text(&response));
    let list = api.chunk_list(disk).await;
    assert_eq!(list[(failed_offset / CHUNK) as usize], hash.0);

    // The metadata database running out of space: fill everything, then commit until a commit
    // fails. redb then refuses all work until it is reopened, which the server does by itself.
    let filler = fill(&mount.path, "filler2", 0);
    let mut db_full = None;
    for i in 0..2000 {
        let name = format!("token-{i}-{}", "n".repeat(100));
        let response = api.post(paths::TOKENS, &CreateToken { name }).await;
        if response.status.as_u16() == 507 {
            db_full = Some(expect_error(&response, 507, ErrorCode::StorageFull));
            break;
        }
        assert_eq!(response.status, StatusCode::OK, "{}", text(&response));
    }
    std::fs::remove_file(&filler).unwrap();
    match db_full {
        Some(message) => {
            assert!(message.contains("metadata database"), "{message}");
            // Uploads and commits work again after the space is freed, without a restart.
            ok::<p2v_protocol::api::TokenCreated>(
                api.post(
                    paths::TOKENS,
                    &CreateToken {
                        name: "after".into(),
                    },
                )
                .await,
            );
        }
        None => println!("note: the metadata database never ran out of space in 2000 commits"),
    }
    for index in 0..size / CHUNK {
        let response = api
            .put_chunk(
                disk,
                index * CHUNK,
                ChunkEncoding::Raw,
                hash,
                chunk.clone(),
                Some(session),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", text(&response));
    }
    ok::<DiskCompleted>(api.post_raw(&paths::disk_complete(disk), Vec::new()).await);
    server.shutdown().await.unwrap();

    // The default reserve (here 2% of 24 MiB, about 490 KiB) refuses a chunk that would still
    // fit, before the filesystem is completely full.
    let server = start(&data_dir).await;
    let mut api = Api::admin(&server);
    let session = start_session(&mut api, "machine-full").await.session_id;
    let disk2 = announce(&mut api, session, "sdb", size).await.disk_id;
    ok::<serde_json::Value>(
        api.put_chunk(
            disk2,
            0,
            ChunkEncoding::Raw,
            hash,
            chunk.clone(),
            Some(session),
        )
        .await,
    );
    let filler = fill(&mount.path, "filler3", 300 * 1024);
    assert!(free_bytes(&mount.path) > 2 * CHUNK, "the chunk would fit");
    let response = api
        .put_chunk(
            disk2,
            CHUNK,
            ChunkEncoding::Raw,
            hash,
            chunk.clone(),
            Some(session),
        )
        .await;
    let message = expect_error(&response, 507, ErrorCode::StorageFull);
    assert!(message.contains("kept free"), "{message}");
    std::fs::remove_file(&filler).unwrap();
    ok::<serde_json::Value>(
        api.put_chunk(
            disk2,
            CHUNK,
            ChunkEncoding::Raw,
            hash,
            chunk.clone(),
            Some(session),
        )
        .await,
    );
    server.shutdown().await.unwrap();
    drop(mount);
}
