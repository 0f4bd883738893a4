//! `vasto gateway`: a RESP (Redis protocol) server in front of one keyspace, for redis-cli,
//! redis-py, redis-benchmark and other Redis clients.
use anyhow::Context;
use clap::Args;
use std::net::SocketAddr;
use vasto_client::{ClientConfig, ClusterToken};

/// `vasto gateway`.
#[derive(Args)]
pub struct GatewayArgs {
    /// Master address.
    #[arg(long, default_value = "127.0.0.1:8278")]
    master: String,
    /// Address Redis clients connect to; one other than loopback needs --token-file.
    #[arg(long, default_value = "127.0.0.1:6380")]
    listen: SocketAddr,
    /// The keyspace Redis commands work on (database 0; SELECT of any other fails).
    #[arg(long, default_value = "default")]
    keyspace: String,
    /// Redis clients served at once; one more gets "-ERR max number of clients reached".
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_clients: u64,
    /// Worker threads, each with its own connections to the stores (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    threads: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// The cluster token: the gateway proves it to the cluster, and Redis clients must give its
    /// text (the file's content without surrounding whitespace) as the password of AUTH or
    /// HELLO AUTH (user `default`).
    #[command(flatten)]
    token: crate::token_arg::TokenArg,
}

/// Runs the gateway until the process is stopped.
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let (token, password) = match &args.token.path {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("--token-file {}", path.display()))?;
            let token = ClusterToken::from_bytes(&bytes).with_context(|| format!("--token-file {}", path.display()))?;
            (Some(token), Some(bytes.trim_ascii().to_vec()))
        }
        None => (None, None),
    };
    let mut config = vasto_gateway::GatewayConfig::new(&args.master, args.listen, &args.keyspace);
    config.client = ClientConfig { token, ..ClientConfig::default() };
    config.password = password;
    config.max_clients = usize::try_from(args.max_clients).unwrap_or(usize::MAX);
    config.metrics_listen = args.metrics_listen;
    if let Some(threads) = args.threads {
        config.threads = usize::try_from(threads).unwrap_or(1);
    }
    let gateway = vasto_gateway::Gateway::start(config).await?;
    eprintln!("vasto gateway: RESP on {} for keyspace {:?} (master {})", gateway.local_addr(), args.keyspace, args.master);
    Ok(gateway.serve().await?)
}
