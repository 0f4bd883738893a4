//! Retiring replicas that may hold writes nobody else has (a cancelled replace's new copies, a
//! stray left by an interrupted one): freeze them, then wait until every replica that stays has
//! applied their change logs up to the final heads the freezes answered, and only then drop
//! them.
//!
//! Every replica that stays must confirm, down ones included: a change log carries only the
//! writes its replica took, so a replica that missed a retired one's last writes could never get
//! them from anyone else.
use crate::admin::{poll_until, run_commands, Done, DRAIN_TIMEOUT};
use crate::hub::Shared;
use crate::state::{Reject, State};
use vasto_wire::fb::ShardCommandKind;
use vasto_wire::ShardInfo;

/// Freezes `victims` and waits (up to the drain timeout) until every other replica of their
/// shards, slot holders and joining stores, is up and has applied each victim's log up to its
/// final head.
pub(crate) async fn freeze_and_drain(shared: &Shared, name: &str, victims: &[(String, ShardInfo)]) -> Result<(), Reject> {
    if victims.is_empty() {
        return Ok(());
    }
    let frozen = run_commands(shared, ShardCommandKind::Freeze, victims, "freezing").await?;
    tracing::info!(keyspace = name, replicas = frozen.len(), "frozen for retirement; waiting for the other replicas to apply them");
    tokio::time::sleep(shared.config.drain_settle).await;
    poll_until(shared, name, "retirement", DRAIN_TIMEOUT, false, |state| Ok(all_applied(state, name, &frozen))).await
}

/// Freezes, drains (see [`freeze_and_drain`]) and drops `victims`.
pub(crate) async fn retire(shared: &Shared, name: &str, victims: &[(String, ShardInfo)]) -> Result<(), Reject> {
    freeze_and_drain(shared, name, victims).await?;
    run_commands(shared, ShardCommandKind::Drop, victims, "dropping").await.map(drop)
}

/// True when, for every frozen victim, every other replica of its shard in the keyspace's
/// placement and joins (not another victim) is up and reports the victim's log applied up to
/// the victim's final head.
fn all_applied(state: &State, name: &str, frozen: &[Done]) -> bool {
    let Some(ks) = state.keyspaces.get(name) else { return false };
    let victim = |store: &str, shard: u32| frozen.iter().any(|d| d.store == store && d.info.shard == shard);
    frozen.iter().all(|d| {
        let shard = d.info.shard;
        let row = ks.placement.get(shard as usize).map(Vec::as_slice).unwrap_or_default();
        let joining = ks.joining.iter().filter(|j| j.shard == shard).map(|j| &j.store);
        let mut stays = row.iter().chain(joining).filter(|s| !victim(s, shard)).peekable();
        stays.peek().is_some() && stays.all(|s| state.stores.get(s).is_some_and(|r| r.up) && state.reports_past(s, name, shard, &d.store, d.mark))
    })
}
