//! The `runlet` command: parse the flags, set up logging and the async runtime, run the
//! command (`cmd`), and turn its error into a message and an exit status: bad input exits 64
//! with the field named, anything else 1.

mod cmd;

use std::time::Duration;

use clap::Parser;

use runlet::api::client::ClientError;
use runlet::cli::{Cli, Command};
use runlet::spec::SpecError;

/// mimalloc rather than glibc's malloc: the data path allocates a few small buffers per
/// request (header maps, the request's task), and glibc's malloc and free were 9% of the
/// daemon's CPU under load (perf, see docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for bad input (EX_USAGE).
const EXIT_USAGE: i32 = 64;

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.global.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = std::env::var("RUNLET_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.worker_threads(n);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runlet: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        let result = match &cli.command {
            Command::Serve(args) => cmd::serve::run(&cli.global, args).await,
            Command::Image(c) => cmd::image::run(&cli.global, c).await,
            Command::Job(c) => cmd::job::run(&cli.global, c).await,
            Command::Jobs(c) => cmd::jobs::run(&cli.global, c).await,
            Command::Daemon(args) => cmd::daemon::run(&cli.global, args).await,
            Command::Deploy(args) => cmd::deploy::run(&cli.global, args).await,
            Command::Services(c) => cmd::services::run(&cli.global, c).await,
            Command::Revisions(c) => cmd::revisions::run(&cli.global, c).await,
            Command::Status(args) => cmd::status::run(&cli.global, args).await,
        };
        result.unwrap_or_else(|e| {
            // The error and each of its causes, once: `: `-separated.
            eprintln!("runlet: error: {e:#}");
            exit_code(&e)
        })
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

/// 64 for bad input (ours, or the daemon's INVALID_ARGUMENT), 1 for anything else.
fn exit_code(e: &anyhow::Error) -> i32 {
    let refused = e
        .downcast_ref::<ClientError>()
        .is_some_and(ClientError::is_usage);
    if e.downcast_ref::<SpecError>().is_some() || refused {
        EXIT_USAGE
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_input_exits_64_anything_else_1() {
        let usage = anyhow::Error::new(SpecError {
            field: "--tasks",
            detail: "0 is out of range".into(),
        });
        assert_eq!(exit_code(&usage), EXIT_USAGE);
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let other = anyhow::Error::new(io).context("loading the image");
        assert_eq!(exit_code(&other), 1);
        // What the edge prints: each cause once.
        assert_eq!(format!("{other:#}"), "loading the image: no such file");
    }
}
