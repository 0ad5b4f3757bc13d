//! The `broker` binary: `broker --config server.properties [--override key=value ...]`.
//! Flags override properties; SIGTERM/SIGINT shut down gracefully: a controlled shutdown first
//! (the controller moves this broker's leaderships elsewhere, bounded by
//! `controlled.shutdown.timeout.ms`), then logs flushed and closed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use broker::clock::{Clock, SystemClock};
use broker::config::BrokerConfig;
use broker::server::{net, Broker};
use clap::Parser;

#[global_allocator]
static GLOBAL: broker::alloc::GuardedAlloc = broker::alloc::GuardedAlloc;

/// A Kafka-compatible broker with a durable segmented log.
#[derive(Debug, Parser)]
#[command(name = "broker", version, about)]
struct Args {
    /// Kafka server.properties file.
    #[arg(long, required_unless_present_any = ["list_bugs", "list_config_keys", "list_releases"])]
    config: Option<PathBuf>,
    /// Print the bug modes as JSON (`[{"name": ..., "source": ...}]`) and exit: how test
    /// harnesses learn them without linking this crate.
    #[arg(long)]
    list_bugs: bool,
    /// Print every configuration key this broker knows as a JSON array and exit.
    #[arg(long)]
    list_config_keys: bool,
    /// Print the Kafka releases `kafka.release` accepts, each with the rules it follows, and
    /// the default, as JSON (`{"default": ..., "releases": [{"release": ..., ...}]}`) and exit.
    #[arg(long)]
    list_releases: bool,
    /// Override a property, `key=value` (repeatable; wins over the file).
    #[arg(long = "override", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Shorthand for `--override node.id=N`.
    #[arg(long)]
    node_id: Option<i32>,
    /// Shorthand for `--override listeners=...`.
    #[arg(long)]
    listeners: Option<String>,
    /// Shorthand for `--override log.dirs=...`.
    #[arg(long)]
    log_dirs: Option<String>,
    /// Shorthand for `--override metrics.listener=...`.
    #[arg(long)]
    metrics_listener: Option<String>,
    /// Switch on a historical data-loss bug (repeatable; refused unless named exactly; the
    /// names and their sources are in docs/BUGS.md, e.g. hw-truncation, ack-before-isr,
    /// restart-without-fencing). Never in production.
    #[arg(long = "bug", value_name = "NAME")]
    bugs: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // No colour codes when stderr is a log file (the usual case under the harness).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if args.list_bugs || args.list_config_keys || args.list_releases {
        let json = if args.list_releases {
            broker::release::releases_json()
        } else if args.list_bugs {
            serde_json::Value::Array(
                broker::replication::bugs::BUG_NAMES
                    .iter()
                    .map(|(name, source)| serde_json::json!({"name": name, "source": source}))
                    .collect(),
            )
        } else {
            serde_json::json!(broker::config::known_keys().collect::<Vec<_>>())
        };
        println!("{json}");
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn overrides(args: &Args) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for o in &args.overrides {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--override `{o}` is not KEY=VALUE"))?;
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    let direct = [
        ("node.id", args.node_id.map(|n| n.to_string())),
        ("listeners", args.listeners.clone()),
        ("log.dirs", args.log_dirs.clone()),
        ("metrics.listener", args.metrics_listener.clone()),
    ];
    for (k, v) in direct {
        if let Some(v) = v {
            out.push((k.to_string(), v));
        }
    }
    Ok(out)
}

fn run(args: Args) -> Result<()> {
    let path = args
        .config
        .clone()
        .context("--config is required (or --list-bugs / --list-config-keys / --list-releases)")?;
    let config = BrokerConfig::load(&path, &overrides(&args)?)
        .with_context(|| format!("loading {}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut bugs = broker::replication::ReplicationBugs::none();
    for name in &args.bugs {
        bugs.enable(name).context("--bug")?;
    }
    runtime.block_on(async_main(config, bugs))
}

async fn async_main(
    config: BrokerConfig,
    bugs: broker::replication::ReplicationBugs,
) -> Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let rules = config.rules();
    tracing::info!(
        kafka.release = %config.release,
        rules = ?rules,
        transaction.partition.verification.enable = config.txn_partition_verification,
        eligible.leader.replicas.enable = config.eligible_leader_replicas,
        "following Kafka {}'s replication rules (kafka.release)",
        config.release
    );
    let listener_cfg = config.listeners[0].clone();
    let metrics_addr = config.metrics_listener;
    let broker = Broker::open(config, clock, bugs)
        .await
        .context("opening broker state")?;
    let listener = tokio::net::TcpListener::bind(listener_cfg.bind_addr())
        .await
        .with_context(|| format!("binding listener {}", listener_cfg.bind_addr()))?;
    tracing::info!(node = broker.config.node_id, listener = %listener_cfg.bind_addr(), "broker listening");
    if let Some(addr) = metrics_addr {
        let std_listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding metrics listener {addr}"))?;
        drop(std_listener);
        let b = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = broker::metrics::serve(addr, b).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let background = broker.spawn_background();
    let server = tokio::spawn(net::serve(broker.clone(), listener));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    let started = std::time::Instant::now();
    let moved = broker.controlled_shutdown().await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if moved {
        tracing::info!(elapsed_ms, "controlled shutdown: this broker leads nothing");
    } else {
        tracing::warn!(
            elapsed_ms,
            "controlled shutdown timed out: stopping with leaderships not moved"
        );
    }
    server.abort();
    for t in background {
        t.abort();
    }
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.shutdown())
        .await
        .context("shutting down")?;
    Ok(())
}
