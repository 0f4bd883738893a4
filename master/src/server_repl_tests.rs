//! End-to-end tests of the replication state: stores subscribing to routing tables on their
//! own connection, and `catching_up` derived from the lags in their heartbeats.
use super::*;

/// Replica `replica` of the single shard of keyspace "ks" (1 shard, 2 replicas).
fn held(replica: u32) -> Arc<Mutex<BTreeSet<ShardInfo>>> {
    let info = ShardInfo { keyspace: "ks".into(), shard: 0, shards: 1, replica, replicas: 2, committed: 1, committed_at_ms: 1, ..Default::default() };
    Arc::new(Mutex::new(BTreeSet::from([info])))
}

fn lag(peer: &str, caught_up: bool) -> ReplicaLag {
    ReplicaLag { keyspace: "ks".into(), shard: 0, peer: peer.into(), entries: 12, lag_ms: 80, caught_up, ..Default::default() }
}

async fn subscribe(client: &mut TcpStream, keyspace: &str) {
    let mut out = Vec::new();
    FrameEncoder::new().subscribe(&mut out, keyspace);
    request(client, out).await;
}

#[tokio::test]
async fn a_store_subscribes_on_its_own_connection() {
    let addr = start().await;
    let mut s1 = FakeStore::start(addr, "s1", held(0)).await;
    s1.subscribe("ks").await;
    let t = s1.table_where(|t| t.exists).await;
    assert_eq!((t.keyspace.as_str(), t.shards, t.replicas), ("ks", 1, 2));
    assert_eq!(t.routes[0][0].store_id, "s1");
    assert!(t.routes[0][0].up && !t.routes[0][1].up, "replica 1 is not reported yet");

    // An unknown keyspace is answered too.
    s1.subscribe("nope").await;
    assert!(!s1.table_where(|t| t.keyspace == "nope").await.exists);

    // Changes are pushed to the store like to any subscriber: here its peer registering.
    let s2 = FakeStore::start(addr, "s2", held(1)).await;
    let t2 = s1.table_where(|t| t.keyspace == "ks" && t.routes[0].iter().all(|r| r.up)).await;
    assert!(t2.version > t.version);
    assert_eq!(t2.routes[0][1].address, "s2.example:7000");

    // Subscribing did not disturb the store connections: both stores are still up.
    let mut admin = connect(addr, Role::Admin).await;
    wait_stores_up(&mut admin, 2).await;
    s1.kill();
    s2.kill();
}

#[tokio::test]
async fn catching_up_follows_the_heartbeats() {
    let addr = start().await;
    let s1 = FakeStore::start(addr, "s1", held(0)).await;
    let mut s2 = FakeStore::start(addr, "s2", held(1)).await;
    let mut client = connect(addr, Role::Client).await;
    subscribe(&mut client, "ks").await;
    // Each store counts as catching up until a heartbeat reports it caught up with its peer
    // (heartbeats without lags, as the fake stores have sent so far, do not).
    table_where(&mut client, |t| t.exists && t.routes[0].iter().all(|r| r.up && r.catching_up)).await;
    s1.set_lags(vec![lag("s2", true)]).await;
    s2.set_lags(vec![lag("s1", true)]).await;
    let (t0, _) = table_where(&mut client, |t| t.exists && t.routes[0].iter().all(|r| r.up && !r.catching_up)).await;
    s2.subscribe("ks").await;

    // s2 reports that it has not caught up with s1 yet.
    s2.set_lags(vec![lag("s1", false)]).await;
    let (t1, _) = table_where(&mut client, |t| t.routes[0][1].catching_up).await;
    assert!(t1.version > t0.version);
    assert!(t1.routes[0][1].up && !t1.routes[0][0].catching_up);
    let mine = s2.table_where(|t| t.version == t1.version).await;
    assert!(mine.routes[0][1].catching_up, "the store sees its own table too");

    let mut admin = connect(addr, Role::Admin).await;
    let st = status(&mut admin).await;
    let route = &st.keyspaces[0].routes[0][1];
    assert!(route.catching_up);
    assert_eq!(
        route.lags,
        vec![LagStatus { peer: "s1".into(), entries: 12, lag_ms: 80, caught_up: false, incarnation: format!("{:016x}", 0), ..Default::default() }]
    );

    // Caught up: the flag clears with a new version.
    s2.set_lags(vec![lag("s1", true)]).await;
    let (t2, _) = table_where(&mut client, |t| !t.routes[0][1].catching_up).await;
    assert!(t2.version > t1.version);
    assert!(t2.routes[0].iter().all(|r| r.up));

    // Heartbeats that change nothing push nothing.
    let mut buf = Vec::new();
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(700);
    while let Ok(read) = tokio::time::timeout_at(quiet_until, read_frame(&mut client, &mut buf, DEFAULT_MAX_FRAME)).await {
        read.expect("frame");
        // Only the master's keep-alives may arrive.
        assert_eq!(parse_frame(&buf).expect("parse").body_type(), vasto_wire::Body::Heartbeat, "no table expected while nothing changes");
    }

    // Behind again, then the peer dies: not catching up with a peer that is down.
    s2.set_lags(vec![lag("s1", false)]).await;
    table_where(&mut client, |t| t.routes[0][1].catching_up).await;
    s1.kill();
    let (t3, _) = table_where(&mut client, |t| !t.routes[0][0].up).await;
    assert!(t3.routes[0][1].up && !t3.routes[0][1].catching_up);
    s2.kill();
}
