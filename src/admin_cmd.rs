//! `vasto admin`: keyspace management and the cluster status table.
use anyhow::Context;
use clap::Subcommand;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;
use vasto_client::AdminClient;
use vasto_master::ClusterStatus;

/// Admin actions.
#[derive(Subcommand)]
pub enum AdminAction {
    /// Create a keyspace (idempotent with the same parameters).
    CreateKeyspace {
        /// Keyspace name ([A-Za-z0-9_.-], up to 64 characters).
        name: String,
        /// Number of shards.
        #[arg(long)]
        shards: u32,
        /// Copies of each shard, on distinct stores (in distinct zones where stores give them).
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// Refuse the keyspace unless the replicas of every shard can be put in distinct zones
        /// (without it such a keyspace is created with a warning).
        #[arg(long)]
        require_zones: bool,
    },
    /// Start a full compaction of every replica of a keyspace (it runs in the stores'
    /// background: drops overwritten and deleted values, expired keys and old tombstones).
    Compact {
        /// Keyspace name.
        keyspace: String,
    },
    /// Delete a keyspace and all its data.
    DeleteKeyspace {
        /// Keyspace name.
        name: String,
    },
    /// Move every replica of a keyspace from one store to another (ids or addresses); returns
    /// once the new store has copied the data, caught up and taken over.
    ReplaceStore {
        /// Keyspace name.
        keyspace: String,
        /// The store to empty.
        #[arg(long)]
        from: String,
        /// The store that takes over.
        #[arg(long)]
        to: String,
    },
    /// Grow or shrink a keyspace while clients keep working.
    Resize {
        /// Keyspace name.
        keyspace: String,
        /// The new shard count.
        #[arg(long)]
        shards: u32,
    },
    /// Cancel the replace-store or resize in progress on a keyspace (it rolls back).
    Cancel {
        /// Keyspace name.
        keyspace: String,
    },
    /// Back up a keyspace: one replica of every shard writes a RocksDB checkpoint (hard links on
    /// the store's data filesystem, copies otherwise) once it holds every write acknowledged
    /// before the backup began; then each is read back and a manifest written last. DIR must be
    /// reachable under the same path by the stores and by this machine (one machine, or a
    /// shared mount).
    Backup {
        /// Keyspace name.
        keyspace: String,
        /// The backup directory (created; it must not exist or be empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Load a backup into a keyspace of any shard count, on this cluster or another (through
    /// the import path). A damaged or incomplete backup is refused before anything is loaded.
    Restore(crate::backup_cmd::RestoreArgs),
    /// Show stores, keyspaces, and where every shard lives.
    Status {
        /// Print the raw JSON document instead of tables.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(master: &str, token: &crate::token_arg::TokenArg, action: AdminAction) -> anyhow::Result<()> {
    // A replace returns only once the new store has copied everything: allow it time.
    let long = matches!(action, AdminAction::ReplaceStore { .. } | AdminAction::Resize { .. });
    let timeout = if long { Duration::from_secs(3600) } else { Duration::from_secs(10) };
    let connect = || async move { AdminClient::connect_with(master, &token.client(timeout)?).await.context("connecting to the master") };
    match action {
        AdminAction::CreateKeyspace { name, shards, replicas, require_zones } => {
            let said = connect().await?.create_keyspace_placed(&name, shards, replicas, require_zones).await?;
            println!("keyspace {name}: {shards} shards x {replicas} replicas");
            if let Some((_, warning)) = said.split_once(vasto_master::ZONE_WARNING) {
                eprintln!("warning: {warning}");
            }
        }
        AdminAction::Compact { keyspace } => {
            println!("{}", connect().await?.compact_keyspace(&keyspace).await?);
        }
        AdminAction::DeleteKeyspace { name } => {
            connect().await?.delete_keyspace(&name).await?;
            println!("keyspace {name} deleted");
        }
        AdminAction::ReplaceStore { keyspace, from, to } => {
            println!("{}", connect().await?.replace_store(&keyspace, &from, &to).await?);
        }
        AdminAction::Resize { keyspace, shards } => {
            println!("{}", connect().await?.resize_keyspace(&keyspace, shards).await?);
        }
        AdminAction::Cancel { keyspace } => {
            println!("{}", connect().await?.cancel(&keyspace).await?);
        }
        AdminAction::Backup { keyspace, to } => crate::backup_cmd::backup(master, token, &keyspace, to).await?,
        AdminAction::Restore(args) => crate::backup_cmd::restore(master, token, args).await?,
        AdminAction::Status { json } => {
            let doc = connect().await?.status_json().await?;
            if json {
                println!("{doc}");
            } else {
                let status: ClusterStatus = serde_json::from_str(&doc).context("the master sent an unreadable status")?;
                print!("{}", render(&status));
            }
        }
    }
    Ok(())
}

/// Renders the status as readable tables.
pub fn render(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "STORES ({})", s.stores.len());
    let _ = writeln!(out, "  {:<22} {:<22} {:<10} {:<5} {:>9} {:>19}", "ID", "ADDRESS", "ZONE", "STATE", "REPLICAS", "DISK FREE/SIZE");
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    for st in &s.stores {
        let state = if st.up { "up" } else { "DOWN" };
        let zone = if st.zone.is_empty() { "-" } else { &st.zone };
        let full = if st.disk_full { "  DISK FULL: takes no new replicas" } else { "" };
        let disk = format!("{:.1}G/{:.1}G", gib(st.free_bytes), gib(st.capacity_bytes));
        let _ = writeln!(out, "  {:<22} {:<22} {:<10} {:<5} {:>9} {:>19}{full}", st.id, st.address, zone, state, st.replicas, disk);
    }
    let _ = writeln!(out, "KEYSPACES ({})", s.keyspaces.len());
    for ks in &s.keyspaces {
        let _ = writeln!(out, "  {} - {} shards x {} replicas, routing version {}", ks.name, ks.shards, ks.replicas, ks.version);
        if let Some(op) = &ks.operation {
            let _ = writeln!(
                out,
                "    {}: {} for {:.1} s; copies caught up {}/{}, {} entries behind",
                op.kind,
                op.phase,
                op.running_ms as f64 / 1000.0,
                op.copies_caught_up,
                op.copies,
                op.entries_behind
            );
        }
        let _ = writeln!(out, "    {:<6} REPLICAS (primary first)", "SHARD");
        for (shard, replicas) in ks.routes.iter().enumerate() {
            let list: Vec<String> = replicas
                .iter()
                .map(|r| {
                    let addr = if r.address.is_empty() { "?" } else { &r.address };
                    let state = if !r.up {
                        " (DOWN)"
                    } else if r.catching_up {
                        " (catching up)"
                    } else {
                        ""
                    };
                    // Lag behind each peer: sequence numbers not yet applied, and for how long.
                    let lags: Vec<String> = r.lags.iter().map(|l| format!("behind {}: {} entries, {} ms", l.peer, l.entries, l.lag_ms)).collect();
                    let lags = if lags.is_empty() { String::new() } else { format!(" [{}]", lags.join("; ")) };
                    format!("{}@{}{}{}", r.store_id, addr, state, lags)
                })
                .collect();
            let _ = writeln!(out, "    {:<6} {}", shard, list.join(", "));
        }
    }
    out
}
