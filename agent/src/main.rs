//! skiff-agent: finds log files as they appear, harvests them line by line, enriches each
//! line into an event and ships it.

use anyhow::Result;
use clap::{Parser, Subcommand};
use skiff_agent::{config::Config, pipeline};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Harvest and ship logs until SIGTERM or Ctrl-C.
    Run {
        /// The configuration file.
        #[arg(long, env = "SKIFF_CONFIG", default_value = "/etc/skiff/agent.yml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
}

/// Events are trees of small maps and strings: mimalloc allocates and frees them far faster
/// than glibc's malloc (see benches/process.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    // Logs go to stderr: stdout belongs to the console output's events.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("SKIFF_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            raise_open_files_limit();
            tokio::runtime::Runtime::new()?.block_on(pipeline::run(config))
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            print!("{}", serde_yaml::to_string(&config)?);
            Ok(())
        }
    }
}

/// Every harvested file is an open descriptor, and a node has thousands of log files: the
/// default soft limit of 1,024 is raised to the hard limit.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE)
        .and_then(|(_, hard)| setrlimit(Resource::RLIMIT_NOFILE, hard, hard))
    {
        Ok(()) => {}
        Err(err) => tracing::warn!(%err, "cannot raise the open files limit"),
    }
}
