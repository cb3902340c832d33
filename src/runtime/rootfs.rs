//! The writable layer of a container's root filesystem, in memory: a tmpfs per container,
//! with the overlay's `upper/` and `work/` in it. tmpfs pages are charged to the memory
//! cgroup of the process that writes them, so root filesystem writes count against the
//! container's memory limit (FS-2) and vanish with it (FS-3).
//!
//! [`RootFs`] is what the container lifecycle needs from it; [`MemoryFs`] is the host's
//! implementation, [`super::fake::FakeRootFs`] a recording one for tests.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

/// Prepares and removes the writable layer of one container's root filesystem.
pub trait RootFs: Send + Sync + 'static {
    /// Makes the writable layer at `dir`, holding at most `size` bytes; returns the
    /// directory to give the runtime (`upper/` and `work/` in it).
    fn mount(&self, dir: &Path, size: u64) -> impl Future<Output = io::Result<PathBuf>> + Send;
    /// Undoes [`mount`](Self::mount); safe on what was never mounted.
    fn unmount(&self, dir: &Path) -> impl Future<Output = ()> + Send;
}

/// The host's in-memory root filesystems (a tmpfs mount each).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFs;

impl RootFs for MemoryFs {
    async fn mount(&self, dir: &Path, size: u64) -> io::Result<PathBuf> {
        mount_memory_fs(dir, size)
    }

    async fn unmount(&self, dir: &Path) {
        let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Mounts a tmpfs of `size` bytes at `dir` with `upper/` and `work/` in it.
fn mount_memory_fs(dir: &Path, size: u64) -> io::Result<PathBuf> {
    use nix::mount::{mount, MsFlags};
    std::fs::create_dir_all(dir)?;
    let opts = format!("size={size},mode=0755");
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some(opts.as_str()),
    )
    .map_err(io::Error::from)?;
    std::fs::create_dir_all(dir.join("upper"))?;
    std::fs::create_dir_all(dir.join("work"))?;
    Ok(dir.to_path_buf())
}
