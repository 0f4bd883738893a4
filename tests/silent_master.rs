//! End-to-end: a master that goes silent without closing its connections (the process hung,
//! or the network dropped its packets) is noticed by the stores and the clients, which dial it
//! again instead of waiting forever on a dead connection.
mod common;

use common::{free_port, Proc};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;
use vasto_wire::{read_frame_blocking, Admission, Doorman, FrameEncoder, Role, DEFAULT_MAX_FRAME};

/// A master that admits every peer and then never sends anything, holding each connection
/// open; every admitted connection's role is sent on the returned channel.
fn silent_master() -> (String, mpsc::Receiver<Role>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || admit_then_hang(stream, tx));
        }
    });
    (addr, rx)
}

fn admit_then_hang(mut stream: TcpStream, admitted: mpsc::Sender<Role>) {
    let (mut door, mut enc, mut buf, mut out) = (Doorman::new("master", None), FrameEncoder::new(), Vec::new(), Vec::new());
    if read_frame_blocking(&mut stream, &mut buf, DEFAULT_MAX_FRAME).is_err() {
        return;
    }
    let Admission::Admitted(role) = door.on_frame(&buf, 0x5ca1ab1e, &mut enc, &mut out) else { return };
    if stream.write_all(&out).is_err() || admitted.send(role).is_err() {
        return;
    }
    // Swallow the registration, heartbeats and subscriptions; never answer.
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

fn next_connection(admitted: &mpsc::Receiver<Role>, what: &str) -> Role {
    admitted.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| panic!("{what} within 30 s"))
}

#[test]
fn a_store_dials_a_silent_master_again() {
    let (master, admitted) = silent_master();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let store_dir = dir.path().join("store").display().to_string();
    let log = dir.path().join("store.log");
    let _store = Proc::spawn("store", &["store", "--master", &master, "--listen", &listen, "--dir", &store_dir, "--threads", "1"], &log);
    assert_eq!(next_connection(&admitted, "the store's first connection"), Role::Store);
    // The first connection stays open but silent: the store must give up on it and dial again.
    assert_eq!(next_connection(&admitted, "the store to dial the silent master again"), Role::Store);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("no frame from the master"), "the store says why it reconnected:\n{text}");
}

#[tokio::test]
async fn a_client_dials_a_silent_master_again() {
    let (master, admitted) = silent_master();
    let client = vasto_client::Client::connect(&master).await.expect("the client connects");
    let first = tokio::task::spawn_blocking(move || {
        assert_eq!(next_connection(&admitted, "the client's first connection"), Role::Client);
        next_connection(&admitted, "the client to dial the silent master again")
    });
    assert_eq!(first.await.expect("waiter"), Role::Client);
    drop(client);
}
