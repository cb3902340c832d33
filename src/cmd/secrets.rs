//! `runlet secrets ...`: the local secret store, written directly under its lock (not
//! through the daemon, which only reads it when it creates a container). Prints names,
//! version numbers and times, never a value.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

use runlet::cli::secrets::{SecretsCommand, VersionsCommand};
use runlet::cli::GlobalArgs;
use runlet::secrets::store::SecretError;
use runlet::secrets::SecretStore;
use runlet::spec::secrets::{check_project, check_secret_id};
use runlet::spec::SpecError;

use super::print;

/// RFC 3339 in UTC, to the second (gcloud's `CREATED` column).
fn short_time(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn run(global: &GlobalArgs, c: &SecretsCommand) -> Result<i32> {
    let store = SecretStore::new(&global.state_dir);
    match c {
        SecretsCommand::Create {
            secret,
            data_file,
            project,
        } => {
            let p = checked(&project.project, secret)?;
            let data = data_file.as_deref().map(read_data).transpose()?;
            store
                .create(p, secret, data.as_deref())
                .map_err(user_error)?;
            eprintln!("Created secret [{secret}].");
            if data.is_some() {
                eprintln!("Created version [1] of the secret [{secret}].");
            }
        }
        SecretsCommand::List { project } => {
            check_project("--project", &project.project)?;
            let list = store.list(&project.project).map_err(user_error)?;
            if list.is_empty() {
                eprintln!("Listed 0 items.");
                return Ok(0);
            }
            let width = list.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(4);
            let mut out = format!("{:<width$}  CREATED\n", "NAME");
            for (name, created) in list {
                out.push_str(&format!("{name:<width$}  {}\n", short_time(created)));
            }
            print(&out);
        }
        SecretsCommand::Delete {
            secret, project, ..
        } => {
            let p = checked(&project.project, secret)?;
            store.delete(p, secret).map_err(user_error)?;
            eprintln!("Deleted secret [{secret}].");
        }
        SecretsCommand::Versions(VersionsCommand::Add {
            secret,
            data_file,
            project,
        }) => {
            let p = checked(&project.project, secret)?;
            let data = read_data(data_file)?;
            let n = store.add_version(p, secret, &data).map_err(user_error)?;
            eprintln!("Created version [{n}] of the secret [{secret}].");
        }
        SecretsCommand::Versions(VersionsCommand::List { secret, project }) => {
            let p = checked(&project.project, secret)?;
            let versions = store.versions(p, secret).map_err(user_error)?;
            let mut out = String::from("NAME  STATE    CREATED\n");
            for v in versions.iter().rev() {
                out.push_str(&format!(
                    "{:<4}  enabled  {}\n",
                    v.number,
                    short_time(v.created)
                ));
            }
            if versions.is_empty() {
                eprintln!("Listed 0 items.");
            } else {
                print(&out);
            }
        }
    }
    Ok(0)
}

/// Checks the project and the secret's id (exit 64 naming the field).
fn checked<'a>(project: &'a str, secret: &str) -> Result<&'a str, SpecError> {
    check_project("--project", project)?;
    check_secret_id("SECRET", secret)?;
    Ok(project)
}

/// A missing, existing or oversized secret is the user's mistake: exit 64 like bad input,
/// the secret named (`projects/P/secrets/S`).
fn user_error(e: SecretError) -> anyhow::Error {
    match e {
        SecretError::Io { .. } => anyhow::Error::new(e).context("the secret store"),
        SecretError::Name(s) => s.into(),
        other => SpecError {
            field: "SECRET",
            detail: other.to_string(),
        }
        .into(),
    }
}

/// `--data-file`: a file, or `-` for stdin.
fn read_data(p: &Path) -> Result<Vec<u8>> {
    if p == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading the secret from stdin")?;
        return Ok(buf);
    }
    std::fs::read(p).map_err(|e| {
        SpecError {
            field: "--data-file",
            detail: format!("cannot read {}: {e}", p.display()),
        }
        .into()
    })
}
