//! `runlet-conformance`: command-line entry point of the conformance tooling.
//!
//! Subcommands:
//! * `build-images --out DIR [--probe PATH] [--busybox PATH]` – writes the
//!   test image archives (see [`runlet_conformance::imagebuild`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use runlet_conformance::imagebuild::{build_test_images, TestImageSources};

/// Conformance tooling for runlet.
#[derive(Debug, Parser)]
#[command(name = "runlet-conformance", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the test image archives (OCI and docker-save tars) into a directory.
    BuildImages {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The probe binary to put at /probe.
        #[arg(
            long,
            default_value = "target/x86_64-unknown-linux-gnu/release/runlet-probe"
        )]
        probe: PathBuf,
        /// A static busybox binary for the busybox image.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::BuildImages {
            out,
            probe,
            busybox,
        } => {
            let written = build_test_images(&out, &TestImageSources { probe, busybox })?;
            for archive in written {
                println!(
                    "{}\t{} bytes\t{}\t({})",
                    archive.path.display(),
                    archive.size,
                    archive.image,
                    archive.description
                );
            }
        }
    }
    Ok(())
}
