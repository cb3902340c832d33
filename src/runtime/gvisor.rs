//! The first-generation execution environment (`--execution-environment gen1`, SBX-1):
//! containers run under gVisor's `runsc` instead of runc.
//!
//! Debian's `runsc` package has no containerd shim of its own, so runlet uses containerd's
//! runc shim (`io.containerd.runc.v2`) with its runtime-binary option (`BinaryName` of
//! `containerd.runc.v1.Options`) pointing at `runsc`, as Docker does with
//! `--runtime=runsc`: runsc takes runc's command line. Each container is then its own gVisor
//! sandbox.
//!
//! runsc needs one flag the shim cannot pass, so the binary the shim runs is a two-line
//! wrapper runlet writes to its state directory ([`install`]): `--network=host`, i.e.
//! gVisor's sentry uses the network stack of the namespace it runs in, which is the
//! instance's own (the OCI spec's network namespace path, made by CNI). runlet therefore
//! reaches the app at `127.0.0.1:PORT` inside that namespace exactly as under runc, and the
//! namespace's iptables rules (metadata DNAT, isolation) still see the app's traffic. gVisor's
//! own network stack (`--network=sandbox`) would hide the app's loopback from runlet and
//! bypass those rules.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The name of gVisor's OCI runtime binary (Debian package `runsc`).
pub const RUNSC: &str = "runsc";

/// Where the wrapper goes, under runlet's state directory.
const WRAPPER: &str = "gvisor/runsc";

#[derive(Debug, Error)]
pub enum GvisorError {
    #[error("--execution-environment gen1 runs containers under gVisor, but gVisor's runsc is not installed (not found in PATH); install it (Debian: apt-get install runsc, or deploy/install-deps.sh) or use gen2")]
    Missing,
    #[error("writing the runsc wrapper {path}: {source}")]
    Wrapper {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The wrapper script that runs `runsc` with runlet's flags and then the shim's arguments.
pub fn wrapper_script(runsc: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by runlet (src/runtime/gvisor.rs): gVisor's runsc as the runc shim's runtime\n\
         # binary, with the instance's network namespace as gVisor's host network.\n\
         exec {} --network=host \"$@\"\n",
        runsc.display()
    )
}

/// Finds `runsc` in `PATH`.
pub fn find_runsc() -> Result<PathBuf, GvisorError> {
    super::embedded::find_binary(RUNSC).ok_or(GvisorError::Missing)
}

/// Writes the wrapper under `state_dir` (unless it is there already with the same content)
/// and returns its path: the runtime binary of gen1 containers. Fails with
/// [`GvisorError::Missing`] when runsc is not installed.
pub fn install(state_dir: &Path) -> Result<PathBuf, GvisorError> {
    let runsc = find_runsc()?;
    let path = state_dir.join(WRAPPER);
    let text = wrapper_script(&runsc);
    let err = |source| GvisorError::Wrapper {
        path: path.display().to_string(),
        source,
    };
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Written aside and renamed: a shim running the old one never sees half a script.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &text).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_passes_the_shims_arguments_after_runlets_flags() {
        let s = wrapper_script(Path::new("/usr/bin/runsc"));
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(
            s.ends_with("exec /usr/bin/runsc --network=host \"$@\"\n"),
            "{s}"
        );
    }

    #[test]
    fn the_missing_runsc_error_names_it_and_how_to_install_it() {
        let e = GvisorError::Missing.to_string();
        assert!(
            e.contains("runsc") && e.contains("apt-get install runsc"),
            "{e}"
        );
    }
}
