//! `cargo xtask`: every way of building, running and testing skiff, from a fresh machine.

mod bench;
mod build;
mod certs;
mod cmd;
mod fuzz;
mod peers;
mod run;
mod test;
mod toolchain;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, run and test skiff", long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF programs for bpfel-unknown-none, installing the toolchain parts first.
    BuildEbpf,
    /// Build the eBPF programs and release binaries of both programs.
    Build,
    /// Run the agent on a demo log folder and the webhook on https://127.0.0.1:8443.
    Run {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Print the events as NDJSON, also in a terminal (always when piped).
        #[arg(long)]
        json: bool,
    },
    /// fmt, clippy, then every test with the real peers up (peers down afterwards).
    Test {
        /// Extra arguments handed to `cargo test` (after `--`).
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// The whole-system end-to-end test alone, with the peers it needs up (then down).
    E2e,
    /// Run the benchmarks; each writes target/bench/NAME.json.
    Bench {
        /// Only this benchmark (e.g. `agent`, `webhook`, `process`, `output`).
        name: Option<String>,
    },
    /// Build the fuzz targets of fuzz/ (cargo-fuzz, installed on demand) and run each in turn.
    Fuzz {
        /// Only this target (e.g. `parsers`, `event_json`, `admission_review`; default: all).
        target: Option<String>,
        /// Run each target this long (default: 60).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Build, start, check or stop the real test peers.
    Peers {
        #[command(subcommand)]
        action: peers::Action,
        /// Only these peers (default: all).
        #[arg(long, value_delimiter = ',', global = true)]
        only: Vec<String>,
    },
    /// Create a CA and the webhook's serving certificate, and print the caBundle.
    Certs {
        /// Where to write them.
        #[arg(long, default_value = "target/certs")]
        out: std::path::PathBuf,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = cmd::workspace_root();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::BuildEbpf => toolchain::build_ebpf(&root),
        Task::Build => build::release(&root),
        Task::Run { seconds, json } => {
            run::demo(&root, seconds.map(std::time::Duration::from_secs), json)
        }
        Task::Test { cargo_args } => test::all(&root, &cargo_args),
        Task::E2e => test::e2e(&root),
        Task::Bench { name } => bench::run(&root, name.as_deref()),
        Task::Fuzz { target, seconds } => fuzz::run(&root, target.as_deref(), seconds),
        Task::Peers { action, only } => peers::dispatch(&root, action, &only),
        Task::Certs { out } => {
            let certs = certs::webhook(&root.join(out))?;
            println!("{}", certs.ca_bundle);
            Ok(())
        }
    }
}
