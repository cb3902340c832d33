//! The `runlet` command: parse the flags, set up logging and the async runtime, run the
//! command (`cmd`), and turn its error into a message and an exit status: bad input (clap's
//! refusals included) exits 64 with the field named, anything else 1.

mod cmd;

use std::ffi::OsStr;
use std::io::IsTerminal;
use std::time::Duration;

use runlet::api::client::ClientError;
use runlet::cli::{Cli, Command};
use runlet::log_format::{self, LogFormat};
use runlet::spec::SpecError;

/// mimalloc rather than glibc's malloc: the data path allocates a few small buffers per
/// request (header maps, the request's task), and glibc's malloc and free were 9% of the
/// daemon's CPU under load (perf, see docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for bad input (EX_USAGE).
const EXIT_USAGE: i32 = 64;

fn main() {
    let args = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = Cli::parse_from_args(args).unwrap_or_else(|e| {
        // clap's own refusals (a number too large for its type, an unknown flag) are bad
        // input like runlet's: 64, not clap's 2. --help and --version exit 0.
        let _ = e.print();
        std::process::exit(if e.use_stderr() { EXIT_USAGE } else { 0 })
    });
    let (filter, bad_filter) = match tracing_subscriber::EnvFilter::try_new(&cli.global.log_level) {
        Ok(f) => (f, None),
        Err(e) => (tracing_subscriber::EnvFilter::new("info"), Some(e)),
    };
    match cli.global.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR").as_deref(),
            ))
            .with_target(false)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(log_format::SpanFields)
            .event_format(log_format::CloudJson)
            .init(),
    }
    if let Some(e) = bad_filter {
        tracing::warn!(
            "--log-level {:?} is not a log filter ({e}): logging at info",
            cli.global.log_level
        );
    }
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
            Command::Secrets(c) => cmd::secrets::run(&cli.global, c),
            Command::Setup(c) => cmd::setup::run(c),
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

/// Whether runlet's log is coloured: only on a terminal, and not when `NO_COLOR` is set to
/// anything (<https://no-color.org>); a file or a pipe gets plain text.
fn colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
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
    fn colour_only_on_a_terminal_without_no_color() {
        let table = [
            (true, None, true),
            (true, Some(""), true),
            (true, Some("1"), false),
            (false, None, false),
            (false, Some("1"), false),
        ];
        for (terminal, no_color, want) in table {
            assert_eq!(
                colour(terminal, no_color.map(OsStr::new)),
                want,
                "{terminal} {no_color:?}"
            );
        }
    }

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
