//! Slow or broken clients do not stall the others, and are cut off after the time limits: a TCP
//! connection that never starts TLS, a TLS connection that never sends its headers, and a chunk
//! upload whose body stops half-way.

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2v_protocol::api::paths;
use p2v_protocol::ChunkHash;
use p2v_server::Limits;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn short_limits() -> Limits {
    Limits {
        tls_handshake_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        body_idle_timeout: Duration::from_secs(1),
        body_total_timeout: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// Reads until the peer closes; returns what arrived and how long it took.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server did not close a stalled connection within {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_cut_off_and_do_not_block_others() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_with(tmp.path(), short_limits()).await;
    let addr = server.local_addr();

    // Connections that never even start TLS.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // A TLS connection that sends half a request head and stops.
    let config =
        p2v_transport::client_config(&p2v_transport::ServerTrust::Pinned(server.fingerprint()))
            .unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut half_head = connector
        .connect(name.clone(), TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    half_head
        .write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    half_head.flush().await.unwrap();
    // A chunk upload whose body stops after 100 of 65536 bytes.
    let mut api = Api::admin(&server);
    let session = start_session(&mut api, "m").await.session_id;
    let disk = announce(&mut api, session, "sda", 4 * CHUNK).await.disk_id;
    let mut half_body = connector
        .connect(name, TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nx-p2v-chunk-hash: {}\r\n\
         x-p2v-chunk-encoding: raw\r\nContent-Length: {CHUNK}\r\n\r\n",
        paths::disk_chunk(disk, 0),
        server.admin_token(),
        ChunkHash::of(&vec![1u8; CHUNK as usize]).to_hex()
    );
    half_body.write_all(head.as_bytes()).await.unwrap();
    half_body.write_all(&[1u8; 100]).await.unwrap();
    half_body.flush().await.unwrap();

    // Meanwhile everybody else is served at once.
    let started = Instant::now();
    let source = sample_image(4, 0);
    for index in 0..4 {
        ok::<serde_json::Value>(api.upload(disk, &source, index, Some(session)).await);
    }
    let _: serde_json::Value = api.get_ok(paths::HEALTH).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "served in {:?}",
        started.elapsed()
    );

    // And the stalled ones are closed after their limits.
    for stream in &mut silent {
        let (_, took) = read_until_closed(stream, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(5));
    }
    read_until_closed(&mut half_head, Duration::from_secs(5)).await;
    let (answer, _) = read_until_closed(&mut half_body, Duration::from_secs(5)).await;
    // Either an error answer or a plain close; never an acknowledgement.
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The half-sent chunk was not stored: the chunk list has the full upload's hash, not it.
    let list = api.chunk_list(disk).await;
    assert_eq!(list[0], ChunkHash::of(chunk_of(&source, 0).1).0);
    server.shutdown().await.unwrap();
}
