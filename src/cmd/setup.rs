//! `runlet setup gcloud`: writes the gcloud configuration and the hosts block that
//! [`runlet::setup::gcloud`] describes (or removes them with `--undo`).

use std::fs;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use runlet::cli::setup::{GcloudArgs, SetupCommand};
use runlet::daemon::hosts::check_host_name;
use runlet::setup::gcloud::{self, Setup};

pub fn run(c: &SetupCommand) -> Result<i32> {
    match c {
        SetupCommand::Gcloud(a) => setup_gcloud(a),
    }
}

/// gcloud's configuration directory: `$CLOUDSDK_CONFIG`, or `~/.config/gcloud`.
fn config_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("CLOUDSDK_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "neither CLOUDSDK_CONFIG nor HOME is set: cannot find gcloud's configuration directory",
    )?;
    Ok(Path::new(&home).join(".config").join("gcloud"))
}

/// gcloud's rule for configuration names.
fn check_configuration(name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if !ok {
        bail!("invalid --configuration {name:?}: lowercase letters, digits and hyphens, starting with a letter");
    }
    Ok(())
}

fn setup_gcloud(a: &GcloudArgs) -> Result<i32> {
    check_configuration(&a.configuration)?;
    let names = gcloud::host_names(&a.regions);
    for n in &names {
        check_host_name(n).with_context(|| format!("invalid --region: {n} is not a host name"))?;
    }
    let dir = config_dir()?;
    let config = dir
        .join("configurations")
        .join(format!("config_{}", a.configuration));
    let active = dir.join("active_config");
    if a.undo {
        edit_hosts(&a.hosts_file, None)?;
        match fs::remove_file(&config) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", config.display())),
        }
        let was_active = fs::read_to_string(&active)
            .map(|s| s.trim() == a.configuration)
            .unwrap_or(false);
        if was_active {
            fs::write(&active, "default")
                .with_context(|| format!("writing {}", active.display()))?;
        }
        println!(
            "Removed runlet's host names from {} and the gcloud configuration {:?}{}.",
            a.hosts_file.display(),
            a.configuration,
            if was_active {
                "; the configuration \"default\" is active again"
            } else {
                ""
            }
        );
        return Ok(0);
    }
    let setup = Setup {
        api_port: a.api_port,
        project: a.project.clone(),
        regions: a.regions.clone(),
    };
    fs::create_dir_all(config.parent().expect("has a parent"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let existing = match fs::read_to_string(&config) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", config.display())),
    };
    let text = gcloud::set_properties(&existing, &gcloud::properties(&setup));
    fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    fs::write(&active, &a.configuration)
        .with_context(|| format!("writing {}", active.display()))?;
    let block = gcloud::hosts_block(IpAddr::V4(Ipv4Addr::LOCALHOST), &names);
    edit_hosts(&a.hosts_file, Some(&block))?;
    println!(
        "gcloud configuration {:?} is active ({}): project {}, region {}, Cloud Run API {} (no credentials).",
        a.configuration,
        config.display(),
        a.project,
        a.regions.first().map_or("", String::as_str),
        gcloud::endpoint(a.api_port),
    );
    println!(
        "{} maps {} to 127.0.0.1.",
        a.hosts_file.display(),
        names.join(", ")
    );
    println!("With `runlet daemon --api-listen 127.0.0.1:{}` running, try: gcloud run deploy hello --image IMAGE", a.api_port);
    println!("To switch back: gcloud config configurations activate default");
    Ok(0)
}

/// Puts the block in the hosts file (or removes it): a temp file renamed over it, or, where
/// that cannot be (a bind-mounted /etc/hosts), written in place.
fn edit_hosts(path: &Path, block: Option<&str>) -> Result<()> {
    let existing = match fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let new = gcloud::render_hosts(&existing, block);
    if new == existing {
        return Ok(());
    }
    let denied = |e: std::io::Error| {
        if e.kind() == ErrorKind::PermissionDenied {
            anyhow::anyhow!(
                "{} is not writable ({e}): run this command as root (sudo -E keeps CLOUDSDK_CONFIG and HOME), or add the lines yourself:\n{}",
                path.display(),
                block.unwrap_or("")
            )
        } else {
            anyhow::Error::new(e).context(format!("writing {}", path.display()))
        }
    };
    let tmp = path.with_file_name(format!(
        ".{}.runlet-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("hosts"),
        std::process::id()
    ));
    let renamed = (|| -> std::io::Result<()> {
        fs::write(&tmp, &new)?;
        if let Ok(meta) = fs::metadata(path) {
            fs::set_permissions(&tmp, meta.permissions())?;
        }
        fs::rename(&tmp, path)
    })();
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
        fs::write(path, &new).map_err(denied)?;
    }
    Ok(())
}
