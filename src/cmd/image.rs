//! `runlet image load|pull|push|ls|rm`: runlet's image store in containerd. An archive is read and
//! checked, and names are normalised, before containerd is reached.

use anyhow::Result;

use runlet::cli::registry::PullArgs;
use runlet::cli::{GlobalArgs, ImageCommand};
use runlet::image::archive::{self, Progress};
use runlet::image::reference;
use runlet::image::registry::push::PushProgress;
use runlet::image::registry::{self, PullProgress};
use runlet::image::ImageInfo;
use runlet::runtime::containerd::Containerd;
use tokio_util::sync::CancellationToken;

use super::with_containerd;

pub async fn run(global: &GlobalArgs, cmd: &ImageCommand) -> Result<i32> {
    match cmd {
        ImageCommand::Load { file, tag, quiet } => {
            let quiet = *quiet;
            // Everything is read and checked before containerd is touched.
            let mut progress = Printer::new(quiet);
            let plan = archive::plan_import(file, tag.as_deref(), &mut progress)?;
            progress.done();
            with_containerd(global, |c| async move {
                let mut progress = Printer::new(quiet);
                let names = c.import(&plan, &mut progress).await?;
                progress.done();
                for n in names {
                    println!("Loaded image: {n}");
                }
                Ok(())
            })
            .await?;
        }
        ImageCommand::Pull {
            image,
            quiet,
            registry: reg,
        } => {
            let name = reference::normalize(image)?;
            let opts = reg.options();
            let quiet = *quiet;
            with_containerd(global, |c| async move {
                let cancel = interrupt_token();
                // clippy.toml bans std::time::Instant for virtual time; a wall-clock
                // duration for the summary is what is wanted here.
                let started = std::time::SystemTime::now();
                let progress = PullOutput::new(quiet);
                let pulled = registry::pull(&c, &opts, &name, progress.sink(), &cancel).await;
                progress.finish();
                let pulled = pulled?;
                let took = started.elapsed().unwrap_or_default();
                println!(
                    "Pulled {}: {} in {:.1}s ({} fetched), digest {}",
                    pulled.name,
                    human(pulled.size as i64),
                    took.as_secs_f64(),
                    human(pulled.fetched as i64),
                    pulled.digest
                );
                Ok(())
            })
            .await?;
        }
        ImageCommand::Push {
            image,
            target,
            quiet,
            registry: reg,
        } => {
            let opts = reg.options();
            let quiet = *quiet;
            let (image, target) = (image.clone(), target.clone());
            with_containerd(global, |c| async move {
                // A wall-clock duration for the summary (see `Pull`).
                let started = std::time::SystemTime::now();
                let pushed = registry::push_image(
                    &c,
                    &opts,
                    &image,
                    target.as_deref(),
                    &LinePrinter { quiet },
                )
                .await?;
                let took = started.elapsed().unwrap_or_default();
                println!(
                    "Pushed {}: {} in {:.1}s ({} uploaded), digest {}",
                    pushed.name,
                    human(pushed.size as i64),
                    took.as_secs_f64(),
                    human(pushed.uploaded as i64),
                    pushed.digest
                );
                Ok(())
            })
            .await?;
        }
        ImageCommand::Ls => {
            with_containerd(global, |c| async move {
                let images = c.list_images().await?;
                println!("{:<60} {:<20} {:>10}", "IMAGE", "DIGEST", "SIZE");
                for i in images {
                    let short = i
                        .digest
                        .trim_start_matches("sha256:")
                        .chars()
                        .take(12)
                        .collect::<String>();
                    println!("{:<60} sha256:{:<13} {:>10}", i.name, short, human(i.size));
                }
                Ok(())
            })
            .await?;
        }
        ImageCommand::Rm { images } => {
            let names: Vec<String> = images
                .iter()
                .map(|i| reference::normalize(i))
                .collect::<Result<_, _>>()?;
            with_containerd(global, |c| async move {
                for n in names {
                    c.remove_image(&n).await?;
                    println!("Deleted: {n}");
                }
                Ok(())
            })
            .await?;
        }
    }
    Ok(0)
}

/// A token cancelled at Ctrl-C or SIGTERM, so that a pull cleans up after itself.
fn interrupt_token() -> CancellationToken {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        super::wait_for_signal().await;
        c.cancel();
    });
    cancel
}

/// The image `name` as `--pull` wants it (looked up, pulled when missing, or pulled every
/// time), with a pull's progress on stderr. For `serve` and `job execute`.
pub async fn resolve_or_pull(c: &Containerd, name: &str, args: &PullArgs) -> Result<ImageInfo> {
    let cancel = interrupt_token();
    let progress = PullOutput::new(false);
    let image = c
        .resolve_or_pull(
            name,
            args.pull,
            &args.registry.options(),
            progress.sink(),
            &cancel,
        )
        .await;
    progress.finish();
    Ok(image?)
}

/// Where a pull's progress goes: bars on a terminal, one line per layer otherwise.
enum PullOutput {
    Bars(super::pull_bars::Bars),
    Lines(LinePrinter),
}

impl PullOutput {
    fn new(quiet: bool) -> PullOutput {
        use std::io::IsTerminal;
        if !quiet && std::io::stderr().is_terminal() {
            PullOutput::Bars(super::pull_bars::Bars::new())
        } else {
            PullOutput::Lines(LinePrinter { quiet })
        }
    }

    fn sink(&self) -> &dyn PullProgress {
        match self {
            PullOutput::Bars(b) => b,
            PullOutput::Lines(l) => l,
        }
    }

    fn finish(&self) {
        if let PullOutput::Bars(b) = self {
            b.finish();
        }
    }
}

/// A pull's progress off a terminal: one line per layer, on stderr.
struct LinePrinter {
    quiet: bool,
}

impl PullProgress for LinePrinter {
    fn fetching(&self, digest: &str, size: u64, from: u64) {
        if self.quiet {
            return;
        }
        let short = &digest[..digest.len().min(19)];
        if from > 0 {
            eprintln!(
                "{short}: resuming at {} of {}",
                human(from as i64),
                human(size as i64)
            );
        } else {
            eprintln!("{short}: fetching {}", human(size as i64));
        }
    }
    fn stored(&self, digest: &str, size: u64, fetched: u64) {
        if self.quiet {
            return;
        }
        let short = &digest[..digest.len().min(19)];
        if fetched == 0 {
            eprintln!("{short}: already present ({})", human(size as i64));
        } else {
            eprintln!("{short}: done ({} fetched)", human(fetched as i64));
        }
    }
}

impl PushProgress for LinePrinter {
    fn blob(&self, digest: &str, size: u64, present: bool) {
        if self.quiet {
            return;
        }
        let short = &digest[..digest.len().min(19)];
        if present {
            eprintln!("{short}: already in the registry ({})", human(size as i64));
        } else {
            eprintln!("{short}: uploading {}", human(size as i64));
        }
    }
}

/// A size for people: `512 B`, `1.5 KiB`, `12.0 MiB`, `1.1 GiB`.
fn human(n: i64) -> String {
    let n = n as f64;
    if n >= (1 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1 << 20) as f64 {
        format!("{:.1} MiB", n / (1u64 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// Prints progress of long work to stderr: a line at most every 10% for large inputs.
struct Printer {
    quiet: bool,
    last: Option<(String, u64)>,
}

impl Printer {
    fn new(quiet: bool) -> Self {
        Printer { quiet, last: None }
    }
    fn done(&mut self) {
        self.last = None;
    }
}

impl Progress for Printer {
    fn step(&mut self, what: &str, done: u64, total: u64) {
        if self.quiet || total < (8 << 20) || total == 0 {
            return;
        }
        let pct = done.saturating_mul(100) / total;
        let bucket = pct / 10 * 10;
        let new = match &self.last {
            Some((w, b)) => w != what || *b != bucket,
            None => true,
        };
        if new {
            eprintln!(
                "{what}: {bucket:>3}% ({} of {})",
                human(done as i64),
                human(total as i64)
            );
            self.last = Some((what.to_string(), bucket));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes_read_well() {
        let table = [
            (512, "512 B"),
            (1536, "1.5 KiB"),
            (12 << 20, "12.0 MiB"),
            (3 << 29, "1.5 GiB"),
        ];
        for (n, want) in table {
            assert_eq!(human(n), want, "{n}");
        }
    }
}
