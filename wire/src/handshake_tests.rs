use super::*;
use crate::token::PROOF_LEN;
use crate::LEN_PREFIX;

fn token(s: &str) -> ClusterToken {
    ClusterToken::from_bytes(s.as_bytes()).expect("token")
}

/// Runs a whole opening in memory; returns the peer's and the node's outcome.
fn open(peer_token: Option<&ClusterToken>, node_token: Option<ClusterToken>, role: Role) -> (Result<u64, HandshakeError>, Admission) {
    let mut greeter = Greeter::new(role, 0, peer_token);
    let mut door = Doorman::new("store", node_token);
    let (mut enc, mut to_node, mut to_peer) = (FrameEncoder::new(), Vec::new(), Vec::new());
    greeter.hello(&mut enc, &mut to_node);
    loop {
        to_peer.clear();
        let verdict = door.on_frame(&to_node[LEN_PREFIX..], 7, &mut enc, &mut to_peer);
        to_node.clear();
        match greeter.on_answer(&to_peer[LEN_PREFIX..], &mut enc, &mut to_node) {
            Ok(Some(cluster_id)) => return (Ok(cluster_id), verdict),
            Ok(None) => assert_eq!(verdict, Admission::Wait, "the node waits for the token proof it asked for"),
            Err(e) => return (Err(e), verdict),
        }
    }
}

#[test]
fn an_open_node_admits_a_peer_without_a_token() {
    let (peer, node) = open(None, None, Role::Client);
    assert_eq!(peer.expect("admitted"), 7);
    assert_eq!(node, Admission::Admitted(Role::Client));
}

#[test]
fn the_same_token_on_both_sides_admits_the_peer_in_its_role() {
    let t = token("a-secret-of-enough-length");
    let (peer, node) = open(Some(&t), Some(t.clone()), Role::Store);
    assert_eq!(peer.expect("admitted"), 7);
    assert_eq!(node, Admission::Admitted(Role::Store));
}

#[test]
fn a_wrong_or_missing_token_is_an_authentication_failure_on_both_sides() {
    let (node_t, peer_t) = (token("a-secret-of-enough-length"), token("another-secret-of-length"));
    // The peer sees first that the node does not hold its token, and never sends a proof.
    let (peer, node) = open(Some(&peer_t), Some(node_t.clone()), Role::Admin);
    assert!(peer.as_ref().is_err_and(HandshakeError::is_authentication), "{peer:?}");
    assert_eq!(node, Admission::Wait);
    let (peer, _) = open(None, Some(node_t.clone()), Role::Admin);
    assert!(peer.is_err_and(|e| e.is_authentication() && e.to_string().contains("requires a token")));
    // A peer with a token refuses an open node: it could be anyone.
    let (peer, _) = open(Some(&peer_t), None, Role::Client);
    assert!(peer.is_err_and(|e| e.is_authentication()));
}

#[test]
fn a_request_instead_of_the_proof_is_refused() {
    let t = token("a-secret-of-enough-length");
    let mut door = Doorman::new("master", Some(t));
    let (mut enc, mut input, mut out) = (FrameEncoder::new(), Vec::new(), Vec::new());
    Greeter::new(Role::Store, 0, None).hello(&mut enc, &mut input);
    assert_eq!(door.on_frame(&input[LEN_PREFIX..], 7, &mut enc, &mut out), Admission::Wait);
    input.clear();
    enc.delete_keyspace(&mut input, 1, "victim");
    assert!(matches!(door.on_frame(&input[LEN_PREFIX..], 7, &mut enc, &mut out), Admission::Refused(_)));
    assert_eq!(door.admitted(), None);
    // A forged proof of the right length fails the same way.
    let mut door = Doorman::new("master", Some(token("a-secret-of-enough-length")));
    input.clear();
    Greeter::new(Role::Store, 0, None).hello(&mut enc, &mut input);
    door.on_frame(&input[LEN_PREFIX..], 7, &mut enc, &mut out);
    input.clear();
    enc.auth(&mut input, &[0u8; PROOF_LEN]);
    assert!(matches!(door.on_frame(&input[LEN_PREFIX..], 7, &mut enc, &mut out), Admission::Refused(_)));
}

#[test]
fn versions_clusters_and_first_frames_are_checked_before_the_token() {
    let mut door = Doorman::new("store", None);
    let (mut enc, mut input, mut out) = (FrameEncoder::new(), Vec::new(), Vec::new());
    Greeter::new(Role::Store, 9, None).hello(&mut enc, &mut input);
    assert!(matches!(door.on_frame(&input[LEN_PREFIX..], 7, &mut enc, &mut out), Admission::Refused(m) if m.contains("cluster")));
    let mut door = Doorman::new("store", None);
    input.clear();
    enc.delete_keyspace(&mut input, 1, "victim");
    assert!(matches!(door.on_frame(&input[LEN_PREFIX..], 7, &mut enc, &mut out), Admission::Refused(_)));
}
