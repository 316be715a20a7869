//! The agent and operator API of an in-process server, over real HTTPS with a pinned
//! fingerprint: authentication, validation, uploads, resume, completion and its verification,
//! restarts.

mod common;

use common::*;
use http::{Method, StatusCode};
use p2v_protocol::api::{
    paths, AnnounceDisk, CreateToken, DiskCompleted, DiskState, DiskSummary, ErrorCode,
    FinishSession, MachineSummary, SessionSummary, TokenCreated, MAX_JSON_BODY,
};
use p2v_protocol::{ChunkEncoding, ChunkHash, DiskId, PROTOCOL_VERSION};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut api = Api::new(&server, None);
    let body: serde_json::Value = api.get_ok(paths::HEALTH).await;
    assert_eq!(body, serde_json::json!({ "ok": true }));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_token_is_401_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let body = start_session_body("machine-a");
    for token in [None, Some("wrong"), Some(&"0".repeat(64)[..])] {
        let mut api = Api::new(&server, token);
        let response = api.post(paths::SESSIONS, &body).await;
        let message = expect_error(&response, 401, ErrorCode::Unauthorized);
        assert!(
            message.contains("token") || message.contains("Authorization"),
            "{message}"
        );
        // A chunk upload is refused before the disk is even looked up.
        let response = api
            .put_chunk(
                DiskId::from_raw(1),
                0,
                ChunkEncoding::Zero,
                ChunkHash::of_zeros(CHUNK as usize),
                Vec::new(),
                None,
            )
            .await;
        expect_error(&response, 401, ErrorCode::Unauthorized);
        // Operator endpoints too.
        expect_error(
            &api.get(paths::MACHINES).await,
            401,
            ErrorCode::Unauthorized,
        );
    }
    let mut admin = Api::admin(&server);
    let machines: Vec<MachineSummary> = admin.get_ok(paths::MACHINES).await;
    assert!(machines.is_empty(), "{machines:?}");
    let sessions: Vec<SessionSummary> = admin.get_ok(paths::SESSIONS).await;
    assert!(sessions.is_empty());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_tokens_work_for_agents_only() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut admin = Api::admin(&server);
    let created: TokenCreated = admin
        .post_ok(
            paths::TOKENS,
            &CreateToken {
                name: "rack1".into(),
            },
        )
        .await;
    assert_eq!(created.name, "rack1");
    assert_eq!(created.token.len(), 64);
    let other: TokenCreated = admin
        .post_ok(
            paths::TOKENS,
            &CreateToken {
                name: "rack1".into(),
            },
        )
        .await;
    assert_ne!(other.token, created.token);

    let mut agent = Api::new(&server, Some(&created.token));
    let started = start_session(&mut agent, "machine-a").await;
    assert!(!started.known_machine);
    // Admin-only endpoints refuse an enrollment token.
    for path in [paths::MACHINES, paths::DISKS, paths::SESSIONS] {
        let message = expect_error(&agent.get(path).await, 401, ErrorCode::Unauthorized);
        assert!(message.contains("admin"), "{message}");
    }
    let response = agent
        .post(
            paths::TOKENS,
            &CreateToken {
                name: "mine".into(),
            },
        )
        .await;
    expect_error(&response, 401, ErrorCode::Unauthorized);
    let response = agent.get(&paths::machine(started.machine_id)).await;
    expect_error(&response, 401, ErrorCode::Unauthorized);
    // The token is stored only hashed: its text appears nowhere in the database file.
    let db = std::fs::read(server.data_dir().db_path()).unwrap();
    assert!(!db.windows(64).any(|w| w == created.token.as_bytes()));
    // The admin token also works for agents.
    start_session(&mut admin, "machine-b").await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_400() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut api = Api::admin(&server);

    // Unknown fields.
    let mut body = serde_json::to_value(start_session_body("m")).unwrap();
    body["admin"] = serde_json::json!(true);
    let message = expect_error(
        &api.post(paths::SESSIONS, &body).await,
        400,
        ErrorCode::BadRequest,
    );
    assert!(message.contains("unknown field"), "{message}");
    // Unknown fields deep inside.
    let mut body = serde_json::to_value(start_session_body("m")).unwrap();
    body["inventory"]["cpu"]["turbo"] = serde_json::json!(1);
    let message = expect_error(
        &api.post(paths::SESSIONS, &body).await,
        400,
        ErrorCode::BadRequest,
    );
    assert!(message.contains("unknown field"), "{message}");
    // Not JSON at all, and not declared as JSON.
    expect_error(
        &api.post_raw(paths::SESSIONS, b"hello".to_vec()).await,
        400,
        ErrorCode::BadRequest,
    );
    let response = api
        .request(
            Method::POST,
            paths::SESSIONS,
            &[("content-type", "text/plain".into())],
            b"{}".to_vec(),
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    // Oversized JSON.
    let mut big = serde_json::to_vec(&start_session_body("m")).unwrap();
    big.resize(MAX_JSON_BODY + 1, b' ');
    let message = expect_error(
        &api.post_raw(paths::SESSIONS, big).await,
        400,
        ErrorCode::BadRequest,
    );
    assert!(message.contains("larger"), "{message}");
    // The connection is still usable after the refused body.
    let _: serde_json::Value = api.get_ok(paths::HEALTH).await;
    // Wrong protocol version, empty or huge machine key.
    let mut body = start_session_body("m");
    body.protocol_version = PROTOCOL_VERSION + 1;
    let message = expect_error(
        &api.post(paths::SESSIONS, &body).await,
        400,
        ErrorCode::BadRequest,
    );
    assert!(message.contains("protocol version"), "{message}");
    for key in [String::new(), "k".repeat(257)] {
        let body = start_session_body(&key);
        expect_error(
            &api.post(paths::SESSIONS, &body).await,
            400,
            ErrorCode::BadRequest,
        );
    }

    // Bad ids in paths.
    for path in [
        "/v1/disks/d-xyz/chunks",
        "/v1/disks/d-../chunks",
        "/v1/machines/d-0000000000000001",
        "/v1/disks/D-0000000000000001",
    ] {
        let message = expect_error(&api.get(path).await, 400, ErrorCode::BadRequest);
        assert!(message.contains("invalid"), "{message}");
    }
    let response = api
        .post(
            &format!("{}/s-1/disks", paths::SESSIONS),
            &announce_body("sda", 10 * CHUNK),
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    // Unknown ids are 404.
    expect_error(
        &api.get(&paths::disk_chunks(DiskId::from_raw(5))).await,
        404,
        ErrorCode::NotFound,
    );
    // Unknown path 404, wrong method 405.
    expect_error(&api.get("/v1/nothing").await, 404, ErrorCode::NotFound);
    expect_error(&api.get("/").await, 404, ErrorCode::NotFound);
    let response = api
        .request(Method::DELETE, paths::DISKS, &[], Vec::new())
        .await;
    expect_error(&response, 405, ErrorCode::BadRequest);
    assert_eq!(response.headers.get("allow").unwrap(), "GET");

    // Disk announcements with absurd values.
    let session = start_session(&mut api, "m").await.session_id;
    type Change = fn(&mut AnnounceDisk);
    let cases: [(&str, Change); 8] = [
        ("absurd size", |a| a.info.size_bytes = 1 << 60),
        ("size not a multiple of 512", |a| {
            a.info.size_bytes = 10 * CHUNK + 1
        }),
        ("zero size", |a| a.info.size_bytes = 0),
        ("chunk size", |a| a.chunk_size = 3 * 1024 * 1024),
        ("sector size", |a| a.info.logical_sector_size = 520),
        ("huge sector size", |a| {
            a.info.physical_sector_size = 1 << 20
        }),
        ("empty key", |a| a.disk_key.clear()),
        ("long key", |a| a.disk_key = "k".repeat(513)),
    ];
    for (what, change) in cases {
        let mut body = announce_body("sda", 10 * CHUNK);
        change(&mut body);
        let response = api.post(&paths::session_disks(session), &body).await;
        assert_eq!(response.status.as_u16(), 400, "{what}: {}", text(&response));
        expect_error(&response, 400, ErrorCode::BadRequest);
    }
    let disks: Vec<DiskSummary> = api.get_ok(paths::DISKS).await;
    assert!(disks.is_empty(), "{disks:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_uploads_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut api = Api::admin(&server);
    let session = start_session(&mut api, "m").await.session_id;
    let size = 4 * CHUNK + 4096;
    let disk = announce(&mut api, session, "sda", size).await.disk_id;
    let data = vec![1u8; CHUNK as usize];
    let hash = ChunkHash::of(&data);

    // Offsets: not on a boundary, beyond the disk, not a number.
    for offset in [512, CHUNK + 1] {
        let response = api
            .put_chunk(disk, offset, ChunkEncoding::Raw, hash, data.clone(), None)
            .await;
        let message = expect_error(&response, 400, ErrorCode::BadRequest);
        assert!(message.contains("chunk boundary"), "{message}");
    }
    for offset in [5 * CHUNK, 100 * CHUNK] {
        let response = api
            .put_chunk(disk, offset, ChunkEncoding::Raw, hash, data.clone(), None)
            .await;
        let message = expect_error(&response, 400, ErrorCode::BadRequest);
        assert!(message.contains("beyond"), "{message}");
    }
    let response = api
        .request(
            Method::PUT,
            &format!("{}/chunks/-1", paths::disk(disk)),
            &[
                ("x-p2v-chunk-hash", hash.to_hex()),
                ("x-p2v-chunk-encoding", "raw".into()),
            ],
            data.clone(),
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    // Headers: missing or malformed hash, unknown encoding, bad session.
    let response = api
        .request(
            Method::PUT,
            &paths::disk_chunk(disk, 0),
            &[("x-p2v-chunk-encoding", "raw".into())],
            data.clone(),
        )
        .await;
    assert!(expect_error(&response, 400, ErrorCode::BadRequest).contains("x-p2v-chunk-hash"));
    let response = api
        .request(
            Method::PUT,
            &paths::disk_chunk(disk, 0),
            &[
                ("x-p2v-chunk-hash", "abc".into()),
                ("x-p2v-chunk-encoding", "raw".into()),
            ],
            data.clone(),
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    let response = api
        .request(
            Method::PUT,
            &paths::disk_chunk(disk, 0),
            &[
                ("x-p2v-chunk-hash", hash.to_hex()),
                ("x-p2v-chunk-encoding", "gzip".into()),
            ],
            data.clone(),
        )
        .await;
    assert!(expect_error(&response, 400, ErrorCode::BadRequest).contains("gzip"));
    let response = api
        .request(
            Method::PUT,
            &paths::disk_chunk(disk, 0),
            &[
                ("x-p2v-chunk-hash", hash.to_hex()),
                ("x-p2v-chunk-encoding", "raw".into()),
                ("x-p2v-session", "s-nothex".into()),
            ],
            data.clone(),
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    // Bodies of the wrong size.
    let response = api
        .put_chunk(
            disk,
            0,
            ChunkEncoding::Raw,
            hash,
            data[..1000].to_vec(),
            None,
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    let response = api
        .put_chunk(
            disk,
            0,
            ChunkEncoding::Raw,
            hash,
            vec![1u8; CHUNK as usize + 1],
            None,
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    let response = api
        .put_chunk(
            disk,
            0,
            ChunkEncoding::Zero,
            ChunkHash::of_zeros(CHUNK as usize),
            vec![0],
            None,
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    let too_big = vec![7u8; zstd::zstd_safe::compress_bound(CHUNK as usize) + 1];
    let response = api
        .put_chunk(disk, 0, ChunkEncoding::Zstd, hash, too_big, None)
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    // zstd that is not zstd, or that decompresses to more or less than the chunk.
    let response = api
        .put_chunk(
            disk,
            0,
            ChunkEncoding::Zstd,
            hash,
            b"not zstd".to_vec(),
            None,
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    let bomb = zstd::bulk::compress(&vec![1u8; 8 * CHUNK as usize], 3).unwrap();
    let response = api
        .put_chunk(disk, 0, ChunkEncoding::Zstd, hash, bomb, None)
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    let short = zstd::bulk::compress(&data[..4096], 3).unwrap();
    let response = api
        .put_chunk(disk, 0, ChunkEncoding::Zstd, hash, short, None)
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    // The last chunk is short: a raw body of a whole chunk is wrong there.
    let tail = vec![3u8; 4096];
    let response = api
        .put_chunk(
            disk,
            4 * CHUNK,
            ChunkEncoding::Raw,
            ChunkHash::of(&tail),
            data.clone(),
            None,
        )
        .await;
    expect_error(&response, 400, ErrorCode::BadRequest);
    let response = api
        .put_chunk(
            disk,
            4 * CHUNK,
            ChunkEncoding::Raw,
            ChunkHash::of(&tail),
            tail.clone(),
            None,
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", text(&response));

    // 422: the bytes do not match the hash; nothing is written or recorded.
    let mut wrong = data.clone();
    wrong[10] ^= 1;
    let response = api
        .put_chunk(disk, 0, ChunkEncoding::Raw, hash, wrong.clone(), None)
        .await;
    let message = expect_error(&response, 422, ErrorCode::HashMismatch);
    assert!(message.contains("hash"), "{message}");
    let (encoding, body) = encode(&wrong);
    let response = api.put_chunk(disk, CHUNK, encoding, hash, body, None).await;
    expect_error(&response, 422, ErrorCode::HashMismatch);
    let response = api
        .put_chunk(disk, 2 * CHUNK, ChunkEncoding::Zero, hash, Vec::new(), None)
        .await;
    expect_error(&response, 422, ErrorCode::HashMismatch);
    let list = api.chunk_list(disk).await;
    assert_eq!(list.len(), 5);
    assert_eq!(list[0], [0u8; 32], "chunk 0 must still be missing");
    assert_eq!(list[1], [0u8; 32]);
    assert_eq!(list[4], ChunkHash::of(&tail).0);
    let mut image = vec![0u8; CHUNK as usize];
    use std::os::unix::fs::FileExt;
    std::fs::File::open(image_path(&server, disk))
        .unwrap()
        .read_exact_at(&mut image, 0)
        .unwrap();
    assert!(
        image.iter().all(|b| *b == 0),
        "a chunk with a wrong hash was written"
    );
    // Unknown disk: 404.
    let response = api
        .put_chunk(
            DiskId::from_raw(42),
            0,
            ChunkEncoding::Raw,
            hash,
            data.clone(),
            None,
        )
        .await;
    expect_error(&response, 404, ErrorCode::NotFound);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_upload_complete_and_image_equals_source() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut api = Api::admin(&server);
    let started = start_session(&mut api, "machine-full").await;
    let source = sample_image(9, 4096);
    let accepted = announce(&mut api, started.session_id, "sda", source.len() as u64).await;
    assert_eq!(accepted.chunk_count, 10);
    assert_eq!(accepted.durable_chunks, 0);
    assert_eq!(accepted.state, DiskState::Receiving);
    let disk = accepted.disk_id;
    let mut encodings = std::collections::HashSet::new();
    for index in 0..10 {
        let (_, data) = chunk_of(&source, index);
        encodings.insert(encode(data).0.as_str());
        let response = api
            .upload(disk, &source, index, Some(started.session_id))
            .await;
        let ack: p2v_protocol::api::ChunkAck = ok(response);
        assert_eq!(ack.offset, index * CHUNK);
        assert!(ack.durable);
    }
    assert_eq!(
        encodings.len(),
        3,
        "the sample must use zero, zstd and raw: {encodings:?}"
    );
    // The same chunk again is acknowledged at once.
    ok::<serde_json::Value>(api.upload(disk, &source, 0, Some(started.session_id)).await);

    let list = api.chunk_list(disk).await;
    for (index, hash) in list.iter().enumerate() {
        assert_eq!(
            *hash,
            ChunkHash::of(chunk_of(&source, index as u64).1).0,
            "chunk {index}"
        );
    }
    let completed: DiskCompleted = api
        .post_ok(&paths::disk_complete(disk), &serde_json::json!({}))
        .await;
    assert_eq!(completed.state, DiskState::Complete);
    assert_eq!(completed.verified_chunks, 10);
    assert_eq!(completed.size_bytes, source.len() as u64);
    // Idempotent.
    let again: DiskCompleted = ok(api.post_raw(&paths::disk_complete(disk), Vec::new()).await);
    assert_eq!(again, completed);

    let image = std::fs::read(image_path(&server, disk)).unwrap();
    assert_eq!(image.len(), source.len());
    assert!(image == source, "the raw image differs from the source");

    // Operator views.
    let summary: DiskSummary = api.get_ok(&paths::disk(disk)).await;
    assert_eq!(summary.state, DiskState::Complete);
    assert_eq!(summary.durable_chunks, 10);
    assert_eq!(summary.durable_bytes, source.len() as u64);
    assert!(summary.received_bytes > 0 && summary.received_bytes < 2 * source.len() as u64);
    assert!(summary.last_chunk_at.is_some());
    assert_eq!(summary.machine_id, started.machine_id);
    let machine: MachineSummary = api.get_ok(&paths::machine(started.machine_id)).await;
    assert_eq!(machine.disks.len(), 1);
    assert_eq!(machine.sessions.len(), 1);
    assert_eq!(
        machine.inventory.system.hostname.as_deref(),
        Some("testhost")
    );

    let finished: serde_json::Value = api
        .post_ok(
            &paths::session_finish(started.session_id),
            &FinishSession {
                disks_completed: vec![disk],
                error: None,
            },
        )
        .await;
    assert_eq!(finished, serde_json::json!({ "ok": true }));
    // Accounting rides on the group commit; give the last (fire-and-forget) one a moment.
    let mut sessions: Vec<SessionSummary> = Vec::new();
    for _ in 0..50 {
        sessions = api.get_ok(paths::SESSIONS).await;
        if sessions[0].received_chunks == 11 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0].finished);
    assert_eq!(sessions[0].error, None);
    assert_eq!(sessions[0].received_chunks, 11);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_restart_and_missing_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let source = sample_image(7, 0);
    let (disk, machine, fingerprint, admin) = {
        let server = start(tmp.path()).await;
        let mut api = Api::admin(&server);
        let started = start_session(&mut api, "machine-resume").await;
        let disk = announce(&mut api, started.session_id, "sda", source.len() as u64)
            .await
            .disk_id;
        for index in [0, 2, 3, 6] {
            ok::<serde_json::Value>(
                api.upload(disk, &source, index, Some(started.session_id))
                    .await,
            );
        }
        // The chunk list shows exactly the uploaded chunks.
        let list = api.chunk_list(disk).await;
        for (index, hash) in list.iter().enumerate() {
            let expected = if [0, 2, 3, 6].contains(&index) {
                ChunkHash::of(chunk_of(&source, index as u64).1).0
            } else {
                [0u8; 32]
            };
            assert_eq!(*hash, expected, "chunk {index}");
        }
        let response = api.post_raw(&paths::disk_complete(disk), Vec::new()).await;
        let message = expect_error(&response, 409, ErrorCode::Conflict);
        assert_eq!(message, "3 of 7 chunks missing");
        let disk_state: DiskSummary = api.get_ok(&paths::disk(disk)).await;
        assert_eq!(disk_state.state, DiskState::Receiving);
        let out = (
            disk,
            started.machine_id,
            server.fingerprint(),
            server.admin_token().to_string(),
        );
        server.shutdown().await.unwrap();
        out
    };

    // Restart on the same data directory: identity, token and progress are kept.
    let server = start(tmp.path()).await;
    assert_eq!(server.fingerprint(), fingerprint);
    assert_eq!(server.admin_token(), admin);
    let mut api = Api::admin(&server);
    let started = start_session(&mut api, "machine-resume").await;
    assert!(started.known_machine);
    assert_eq!(started.machine_id, machine);
    let accepted = announce(&mut api, started.session_id, "sda", source.len() as u64).await;
    assert_eq!(
        accepted.disk_id, disk,
        "the same disk key resumes the same disk"
    );
    assert_eq!(accepted.durable_chunks, 4);
    // Another size for the same disk is a conflict that names both sizes.
    let response = api
        .post(
            &paths::session_disks(started.session_id),
            &announce_body("sda", source.len() as u64 + 512),
        )
        .await;
    let message = expect_error(&response, 409, ErrorCode::Conflict);
    assert!(
        message.contains(&source.len().to_string())
            && message.contains(&(source.len() + 512).to_string()),
        "{message}"
    );

    let list = api.chunk_list(disk).await;
    let missing: Vec<u64> = (0..7).filter(|i| list[*i as usize] == [0u8; 32]).collect();
    assert_eq!(missing, vec![1, 4, 5]);
    for index in missing {
        ok::<serde_json::Value>(
            api.upload(disk, &source, index, Some(started.session_id))
                .await,
        );
    }
    let completed: DiskCompleted = ok(api.post_raw(&paths::disk_complete(disk), Vec::new()).await);
    assert_eq!(completed.verified_chunks, 7);
    assert_eq!(std::fs::read(image_path(&server, disk)).unwrap(), source);
    let machines: Vec<MachineSummary> = api.get_ok(paths::MACHINES).await;
    assert_eq!(machines.len(), 1);
    assert_eq!(machines[0].sessions.len(), 2);
    server.shutdown().await.unwrap();

    // And once more: the completed state survives too.
    let server = start(tmp.path()).await;
    let mut api = Api::admin(&server);
    let summary: DiskSummary = api.get_ok(&paths::disk(disk)).await;
    assert_eq!(summary.state, DiskState::Complete);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_image_fails_completion_and_drops_the_chunk() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut api = Api::admin(&server);
    let started = start_session(&mut api, "machine-tamper").await;
    let source = sample_image(6, 0);
    let disk = announce(&mut api, started.session_id, "sda", source.len() as u64)
        .await
        .disk_id;
    for index in 0..6 {
        ok::<serde_json::Value>(api.upload(disk, &source, index, None).await);
    }
    // Damage chunk 2 (data) and chunk 1 (a hole: zeros) behind the server's back.
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(image_path(&server, disk))
            .unwrap();
        file.write_all_at(b"tampered", 2 * CHUNK + 1000).unwrap();
        file.write_all_at(b"x", CHUNK + 5).unwrap();
    }
    let response = api.post_raw(&paths::disk_complete(disk), Vec::new()).await;
    let message = expect_error(&response, 409, ErrorCode::Conflict);
    assert!(message.contains("2 of 6 chunks"), "{message}");
    assert!(message.contains(&(2 * CHUNK).to_string()), "{message}");
    let list = api.chunk_list(disk).await;
    for (index, hash) in list.iter().enumerate() {
        if index == 1 || index == 2 {
            assert_eq!(*hash, [0u8; 32], "chunk {index} must be dropped");
        } else {
            assert_eq!(
                *hash,
                ChunkHash::of(chunk_of(&source, index as u64).1).0,
                "chunk {index}"
            );
        }
    }
    let summary: DiskSummary = api.get_ok(&paths::disk(disk)).await;
    assert_eq!(summary.durable_chunks, 4);
    assert_eq!(summary.state, DiskState::Receiving);
    // The agent sends them again (a zero chunk over the damaged hole punches it again).
    for index in [1, 2] {
        ok::<serde_json::Value>(api.upload(disk, &source, index, None).await);
    }
    ok::<DiskCompleted>(api.post_raw(&paths::disk_complete(disk), Vec::new()).await);
    assert_eq!(std::fs::read(image_path(&server, disk)).unwrap(), source);

    // A different chunk on a complete disk puts it back to receiving; the old one back to complete.
    let mut changed = chunk_of(&source, 0).1.to_vec();
    changed[0] ^= 0xff;
    let response = api
        .put_chunk(
            disk,
            0,
            ChunkEncoding::Raw,
            ChunkHash::of(&changed),
            changed.clone(),
            None,
        )
        .await;
    ok::<serde_json::Value>(response);
    let summary: DiskSummary = api.get_ok(&paths::disk(disk)).await;
    assert_eq!(summary.state, DiskState::Receiving);
    assert_eq!(summary.durable_chunks, 6);
    ok::<serde_json::Value>(api.upload(disk, &source, 0, None).await);
    ok::<DiskCompleted>(api.post_raw(&paths::disk_complete(disk), Vec::new()).await);
    assert_eq!(std::fs::read(image_path(&server, disk)).unwrap(), source);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_chunk_over_data_clears_it() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut api = Api::admin(&server);
    let session = start_session(&mut api, "m").await.session_id;
    let disk = announce(&mut api, session, "sda", 2 * CHUNK).await.disk_id;
    let data = vec![0xabu8; CHUNK as usize];
    ok::<serde_json::Value>(
        api.put_chunk(
            disk,
            0,
            ChunkEncoding::Raw,
            ChunkHash::of(&data),
            data,
            None,
        )
        .await,
    );
    let zero = ChunkHash::of_zeros(CHUNK as usize);
    ok::<serde_json::Value>(
        api.put_chunk(disk, 0, ChunkEncoding::Zero, zero, Vec::new(), None)
            .await,
    );
    ok::<serde_json::Value>(
        api.put_chunk(disk, CHUNK, ChunkEncoding::Zero, zero, Vec::new(), None)
            .await,
    );
    let list = api.chunk_list(disk).await;
    assert_eq!(list, vec![zero.0, zero.0]);
    ok::<DiskCompleted>(api.post_raw(&paths::disk_complete(disk), Vec::new()).await);
    let image = std::fs::read(image_path(&server, disk)).unwrap();
    assert!(image.iter().all(|b| *b == 0));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_agents_upload_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path()).await;
    let mut admin = Api::admin(&server);
    let token: TokenCreated = admin
        .post_ok(
            paths::TOKENS,
            &CreateToken {
                name: "wave".into(),
            },
        )
        .await;
    let source = std::sync::Arc::new(sample_image(16, 512));
    let (url, fingerprint) = (server.local_url(), server.fingerprint());
    let mut tasks = Vec::new();
    for agent in 0..6 {
        let mut api = Api::connect(url.clone(), fingerprint, Some(&token.token));
        let mut second = Api::connect(url.clone(), fingerprint, Some(&token.token));
        let source = source.clone();
        tasks.push(tokio::spawn(async move {
            let started = start_session(&mut api, &format!("machine-{agent}")).await;
            let disk = announce(&mut api, started.session_id, "sda", source.len() as u64)
                .await
                .disk_id;
            // Each agent uses two connections, like the real agent's pipeline.
            let first = async {
                for index in (0..17).step_by(2) {
                    ok::<serde_json::Value>(
                        api.upload(disk, &source, index, Some(started.session_id))
                            .await,
                    );
                }
            };
            let other = async {
                for index in (1..17).step_by(2) {
                    ok::<serde_json::Value>(
                        second
                            .upload(disk, &source, index, Some(started.session_id))
                            .await,
                    );
                }
            };
            tokio::join!(first, other);
            ok::<DiskCompleted>(api.post_raw(&paths::disk_complete(disk), Vec::new()).await);
            disk
        }));
    }
    let mut disks = Vec::new();
    for task in tasks {
        disks.push(task.await.unwrap());
    }
    for disk in disks {
        assert!(std::fs::read(image_path(&server, disk)).unwrap() == *source);
    }
    let summaries: Vec<DiskSummary> = admin.get_ok(paths::DISKS).await;
    assert_eq!(summaries.len(), 6);
    assert!(summaries.iter().all(|d| d.state == DiskState::Complete));
    server.shutdown().await.unwrap();
}
