//! End-to-end: the cluster token and roles. A secured cluster serves the holders of its token
//! (CLI, native client, import, replication between stores) and refuses everyone else before
//! they can register, tail or delete; roles are checked even in an open cluster.
mod common;

use common::{free_port, run_bounded, vasto, wait_for, write_token, Cluster, Raw};
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use vasto_wire::{parse_frame, read_frame_blocking, FrameEncoder, Role, ShardInfo, Status, DEFAULT_MAX_FRAME};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Opens a connection as `role` without a token and checks that the node challenges it.
fn unauthenticated(addr: &str, role: Role) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut out = Vec::new();
    FrameEncoder::new().hello(&mut out, role, 0, &[7; 16]);
    s.write_all(&out).expect("hello");
    let mut buf = Vec::new();
    read_frame_blocking(&mut s, &mut buf, DEFAULT_MAX_FRAME).expect("hello reply");
    let reply = parse_frame(&buf).expect("frame").body_as_hello_reply().expect("a hello reply");
    assert_eq!(reply.status(), Status::Ok);
    assert_eq!(reply.nonce().map(<[u8]>::len), Some(16), "a secured node challenges every peer");
    s
}

/// Sends `frame` instead of the token's proof and checks it is refused and the connection closed
/// without any other answer.
fn refused_before_the_proof(mut s: TcpStream, frame: &[u8]) {
    s.write_all(frame).expect("send");
    let mut buf = Vec::new();
    read_frame_blocking(&mut s, &mut buf, DEFAULT_MAX_FRAME).expect("an answer");
    let f = parse_frame(&buf).expect("frame");
    let reply = f.body_as_auth_reply().unwrap_or_else(|| panic!("expected a refusal, got {:?}", f.body_type()));
    assert_eq!(reply.status(), Status::Unauthorized);
    assert!(read_frame_blocking(&mut s, &mut buf, DEFAULT_MAX_FRAME).is_err(), "the connection is closed after the refusal");
}

fn stores_up(cluster: &Cluster) -> Vec<String> {
    let s = cluster.status().expect("status");
    s["stores"].as_array().expect("stores").iter().filter(|st| st["up"] == true).map(|st| st["id"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn a_secured_cluster_serves_token_holders_and_refuses_strangers() {
    let cluster = Cluster::start_secured(2);
    let token = cluster.token();
    // Creating a keyspace of 2 replicas makes the stores replicate to each other: both prove
    // the token to the master and to each other.
    cluster.create_keyspace("sec", 2, 2);
    let ks = ["--master", cluster.master_addr.as_str(), "--keyspace", "sec"];
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
        let out = cluster.vasto(&[&["put"], &ks[..], &[k, v]].concat());
        assert!(out.status.success(), "put with the token: {}", text(&out.stderr));
    }
    // Bulk import proves the token too (to the master, and to every store as an importer).
    let input = cluster.dir.path().join("in.tsv");
    std::fs::write(&input, (0..500).map(|i| format!("imp:{i}\tv{i}\n")).collect::<String>()).expect("input");
    let input_arg = input.display().to_string();
    let out = cluster.vasto(&[&["import"], &ks[..], &["--input", &input_arg]].concat());
    assert!(out.status.success(), "import with the token: {}", text(&out.stderr));
    // Every replica holds every write: replication between the stores works with the token.
    let (shards, table) = cluster.routes("sec");
    let keys: Vec<Vec<u8>> = ["a", "b", "c", "imp:0", "imp:499"].iter().map(|k| k.as_bytes().to_vec()).collect();
    for (shard, addrs) in table.iter().enumerate() {
        let mine: Vec<Vec<u8>> = keys.iter().filter(|k| vasto_hash::shard_of(k, shards) == shard as u32).cloned().collect();
        for addr in addrs {
            wait_for(&format!("{addr} to hold shard {shard}'s keys"), Duration::from_secs(30), || {
                let mut raw = Raw::connect_as(addr, Role::Client, token.as_ref()).expect("a token holder is admitted");
                raw.get_many("sec", shard as u32, &mine).iter().all(Option::is_some).then_some(())
            });
        }
    }

    // The CLI without the token, or with another one: "authentication failed", exit code 2.
    let other = write_token(&cluster.dir.path().join("other-token"));
    for token_file in [None, Some(&other)] {
        let mut cmd = Command::new(vasto());
        cmd.args([&["get"], &ks[..], &["a"]].concat()).env_remove("VASTO_TOKEN_FILE");
        if let Some(f) = token_file {
            cmd.arg("--token-file").arg(f);
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("authentication failed"), "{}", text(&out.stderr));
    }
    // A store address is no way around it.
    assert!(Raw::connect_as(&cluster.store_addrs[0], Role::Client, None).is_err_and(|e| e.is_authentication()));

    let mut enc = FrameEncoder::new();
    // A forged registration claiming to hold every shard, with the real store's id and a
    // newer layout: refused before it is read, so the master keeps the real replicas.
    let real_id = stores_up(&cluster)[0].clone();
    let mut forged = Vec::new();
    let info =
        ShardInfo { keyspace: "sec".into(), shard: 0, shards: 2, replica: 0, replicas: 2, committed: 2, committed_at_ms: u64::MAX / 2, ..Default::default() };
    enc.register(&mut forged, &real_id, "127.0.0.1:1", "", vasto_wire::DiskReport::default(), &[info], 1);
    refused_before_the_proof(unauthenticated(&cluster.master_addr, Role::Store), &forged);
    // A tail and a snapshot request to a store: no change or data leaves it.
    let mut tail = Vec::new();
    enc.tail(&mut tail, "sec", 0, 0, 0, "thief", None);
    refused_before_the_proof(unauthenticated(&cluster.store_addrs[0], Role::Store), &tail);
    let mut snapshot = Vec::new();
    enc.snapshot_request(&mut snapshot, "sec", 0, "thief", None);
    refused_before_the_proof(unauthenticated(&cluster.store_addrs[1], Role::Store), &snapshot);
    // A delete of the keyspace.
    let mut delete = Vec::new();
    enc.delete_keyspace(&mut delete, 1, "sec");
    refused_before_the_proof(unauthenticated(&cluster.master_addr, Role::Admin), &delete);
    // A made-up proof is refused the same way.
    let mut proof = Vec::new();
    enc.auth(&mut proof, &[0; 32]);
    refused_before_the_proof(unauthenticated(&cluster.master_addr, Role::Admin), &proof);

    // Nothing changed: both stores up at their real addresses, the keyspace and its data intact.
    assert_eq!(stores_up(&cluster).len(), 2);
    let (_, table) = cluster.routes("sec");
    assert!(table.iter().flatten().all(|a| cluster.store_addrs.contains(a)), "{table:?}");
    let out = cluster.vasto(&[&["get"], &ks[..], &["b"]].concat());
    assert_eq!(text(&out.stdout), "2", "{}", text(&out.stderr));

    // A store started with another token never joins: the master refuses it and it says why.
    let mut cluster = cluster;
    let i = cluster.store_addrs.len();
    cluster.store_addrs.push(format!("127.0.0.1:{}", free_port()));
    cluster.stores.push(None);
    let real = cluster.token_file.replace(other.clone());
    cluster.start_store(i);
    cluster.token_file = real;
    let log = cluster.dir.path().join(format!("store-{i}.log"));
    wait_for("the store with the wrong token to log its refusal", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("authentication failed")).map(drop)
    });
    assert_eq!(stores_up(&cluster).len(), 2, "the store with the wrong token is not registered");
}

#[test]
fn roles_are_checked_at_one_point_even_in_an_open_cluster() {
    let cluster = Cluster::start(1);
    cluster.create_keyspace("roles", 1, 1);
    let store = &cluster.store_addrs[0];
    let mut enc = FrameEncoder::new();
    let refused = |role: Role, frame: &[u8]| {
        let mut raw = Raw::connect_as(store, role, None).expect("an open store admits anyone");
        raw.stream.write_all(frame).expect("send");
        let f = parse_frame(raw.read_frame()).expect("frame");
        let r = f.body_as_response().unwrap_or_else(|| panic!("expected a refusal, got {:?}", f.body_type()));
        assert_eq!(r.status(), Status::Unauthorized, "{role:?}: {}", r.message().unwrap_or_default());
    };
    // Replication is for stores, ingestion for importers.
    let (mut tail, mut snapshot, mut ingest) = (Vec::new(), Vec::new(), Vec::new());
    enc.tail(&mut tail, "roles", 0, 0, 0, "client", None);
    enc.snapshot_request(&mut snapshot, "roles", 0, "client", None);
    enc.ingest(&mut ingest, 9, "roles", 0, 1, 0, b"not an sst", true);
    refused(Role::Client, &tail);
    refused(Role::Admin, &snapshot);
    refused(Role::Client, &ingest);
    refused(Role::Store, &ingest);

    // Cluster changes are for admins: a client connection may subscribe but not delete.
    let mut raw = Raw::connect_as(&cluster.master_addr, Role::Client, None).expect("open master");
    let mut delete = Vec::new();
    enc.delete_keyspace(&mut delete, 5, "roles");
    raw.stream.write_all(&delete).expect("send");
    let f = loop {
        let f = parse_frame(raw.read_frame()).expect("frame");
        // The master's keep-alives may come first.
        if f.body_type() != vasto_wire::Body::Heartbeat {
            break f;
        }
    };
    let reply = f.body_as_admin_reply().expect("an admin reply");
    assert_eq!((f.id(), reply.status()), (5, Status::Unauthorized), "{}", reply.message().unwrap_or_default());
    let (shards, _) = cluster.routes("roles");
    assert_eq!(shards, 1, "the keyspace is still there");
    // The data path is untouched by all this.
    let out = cluster.vasto(&["put", "--master", &cluster.master_addr, "--keyspace", "roles", "k", "v"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn nodes_without_a_token_refuse_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("0.0.0.0:{}", free_port());
    let master_dir = dir.path().join("m").display().to_string();
    let store_dir = dir.path().join("s").display().to_string();
    for args in [vec!["master", "--listen", &listen, "--dir", &master_dir], vec!["store", "--listen", &listen, "--dir", &store_dir, "--master", "127.0.0.1:1"]]
    {
        let out = run_bounded(Command::new(vasto()).args(&args).env_remove("VASTO_TOKEN_FILE"), Duration::from_secs(30));
        assert!(!out.status.success(), "{args:?} must refuse");
        assert!(text(&out.stderr).contains("without a cluster token"), "{args:?}: {}", text(&out.stderr));
    }
    // A token file that is too short is refused with a clear message.
    let short = dir.path().join("short");
    std::fs::write(&short, "abc\n").expect("write");
    let out = run_bounded(
        Command::new(vasto()).args(["master", "--listen", "127.0.0.1:0", "--dir", &master_dir, "--token-file"]).arg(&short),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("at least 16"), "{}", text(&out.stderr));
}

#[test]
fn a_store_must_advertise_a_reachable_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = write_token(&dir.path().join("token"));
    let store_dir = dir.path().join("s").display().to_string();
    // A store that must refuse to start, before anything is bound, saying `why`.
    let refused = |listen: &str, master: &str, why: &str| {
        let out = run_bounded(
            Command::new(vasto()).args(["store", "--listen", listen, "--dir", &store_dir, "--master", master, "--token-file"]).arg(&token),
            Duration::from_secs(30),
        );
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    };
    // Listening on every interface without --advertise.
    refused(&format!("0.0.0.0:{}", free_port()), "127.0.0.1:1", "--advertise ADDR is required");
    // Listening on loopback while the master is on another host: the derived address would
    // reach only this machine.
    refused(&format!("127.0.0.1:{}", free_port()), "192.0.2.1:7000", "only this machine can reach");
    // An advertised address nothing listens on: the master says so when the store registers.
    let mut cluster = Cluster::start(0);
    cluster.store_addrs.push(format!("127.0.0.1:{}", free_port()));
    cluster.stores.push(None);
    let nowhere = format!("127.0.0.1:{}", free_port());
    cluster.start_store_with(0, &["--advertise", &nowhere]);
    let log = cluster.dir.path().join("master.log");
    wait_for("the master to warn about the unreachable address", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("cannot reach the address this store advertises")).map(drop)
    });
}
