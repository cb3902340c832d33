//! `runlet job ...` command-line structures.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run one execution of a job in the foreground.
    Execute {
        /// Job name.
        name: Option<String>,
        #[arg(long)]
        image: Option<String>,
    },
}
