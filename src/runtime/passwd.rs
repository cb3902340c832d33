//! The user an image runs as: its `User` field resolved against the image's own /etc/passwd
//! and /etc/group as Docker does ([`resolve`]), and those files read from the image's
//! unpacked layers without trusting them ([`read_in_layers`]).
//!
//! Docker's rules (libcontainer's `user.GetExecUser`): `USER` is `user[:group]`, each a
//! name or a number. The user is looked up in passwd by name, or by uid when numeric; an
//! empty `USER` is uid 0 looked up the same way. Without an explicit group the primary group
//! is the passwd entry's (0 when there is no entry), and the supplementary groups are every
//! group of /etc/group that lists the user's name as a member. An explicit group replaces
//! the primary group and adds no supplementary groups. A name that is not in the files is
//! an error; a number need not be.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

use super::ocispec::SpecError;

/// The largest /etc/passwd or /etc/group runlet reads (as containerd's and Docker's readers
/// bound them): a bigger one is treated as absent.
pub const MAX_FILE: u64 = 4 << 20;

/// The numeric identity a container's process runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (OCI `additionalGids`).
    pub additional_gids: Vec<u32>,
}

impl ImageUser {
    /// uid and gid `uid`:`gid` without supplementary groups.
    pub fn ids(uid: u32, gid: u32) -> ImageUser {
        ImageUser {
            uid,
            gid,
            additional_gids: vec![],
        }
    }
}

/// A passwd entry: name, uid, gid.
fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3).then_some(())?;
        Some((f[0], f[2].trim().parse().ok()?, f[3].trim().parse().ok()?))
    })
}

/// A group entry: name, gid, members.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 2).then_some(())?;
        let members = f
            .get(3)
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some((f[0], f[2].trim().parse().ok()?, members))
    })
}

/// Resolves an image's `User` field with the image's /etc/passwd and /etc/group text (see
/// the module's documentation for the rules).
pub fn resolve(
    image: &str,
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ImageUser, SpecError> {
    let unknown = || SpecError::UnknownUser {
        image: image.to_string(),
        user: user.to_string(),
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g).filter(|g| !g.is_empty())),
        None => (user, None),
    };
    let numeric = if u.is_empty() {
        Some(0)
    } else {
        u.parse::<u32>().ok()
    };
    let entry = passwd.and_then(|p| {
        passwd_entries(p).find(|&(name, uid, _)| match numeric {
            Some(n) => uid == n,
            None => name == u,
        })
    });
    let (uid, primary, name) = match (entry, numeric) {
        (Some((name, uid, gid)), _) => (uid, gid, Some(name)),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => return Err(unknown()),
    };
    if let Some(g) = g {
        let gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .and_then(|t| group_entries(t).find(|(n, _, _)| *n == g))
                .map(|(_, gid, _)| gid)
                .ok_or_else(unknown)?,
        };
        return Ok(ImageUser::ids(uid, gid));
    }
    let additional_gids = match (name, group) {
        (Some(name), Some(text)) => group_entries(text)
            .filter(|(_, _, members)| members.contains(&name))
            .map(|(_, gid, _)| gid)
            .collect(),
        _ => vec![],
    };
    Ok(ImageUser {
        uid,
        gid: primary,
        additional_gids,
    })
}

/// Reads `path` (absolute, as the container sees it) from an image's layer directories,
/// searched top first, as the file the container would see: the first layer that has an
/// entry at `path` decides. The entry is read only when it is a regular file of at most
/// [`MAX_FILE`] bytes; anything else there (a FIFO, a device, an overlay whiteout, a
/// directory) or a bigger file means absent. Symbolic links are followed only inside the
/// layer's directory (`RESOLVE_IN_ROOT`: `../..` and absolute targets stay in it), so a
/// link to the host's /dev/zero or /etc/shadow reads nothing of the host; nothing is opened
/// in a way that could block (a FIFO is never opened for reading).
pub fn read_in_layers(layers: &[impl AsRef<Path>], path: &str) -> Option<Vec<u8>> {
    let rel = path.trim_start_matches('/');
    for layer in layers {
        match read_in_layer(layer.as_ref(), rel) {
            Ok(found) => return found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::debug!(layer = %layer.as_ref().display(), path, "cannot read: {e}");
                return None;
            }
        }
    }
    None
}

/// `Err(NotFound)` when the layer has no entry at `rel`; `Ok(None)` when its entry is not a
/// regular file of at most [`MAX_FILE`] bytes.
fn read_in_layer(layer: &Path, rel: &str) -> io::Result<Option<Vec<u8>>> {
    let dir = File::open(layer)?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(dir.as_raw_fd(), rel, how).map_err(io::Error::from)?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let opath = unsafe { OwnedFd::from_raw_fd(fd) };
    let meta = nix::sys::stat::fstat(opath.as_raw_fd()).map_err(io::Error::from)?;
    let regular = SFlag::from_bits_truncate(meta.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG;
    if !regular || meta.st_size < 0 || meta.st_size as u64 > MAX_FILE {
        return Ok(None);
    }
    // Reopen the very inode checked above for reading (O_NONBLOCK: never wait).
    let fd = nix::fcntl::open(
        format!("/proc/self/fd/{}", opath.as_raw_fd()).as_str(),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(io::Error::from)?;
    // SAFETY: as above.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut out = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut out)?;
    Ok((out.len() as u64 <= MAX_FILE).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        nobody:x:65534:65534::/:/bin/false\n\
        app:x:1000:1001::/app:/bin/sh\n\
        broken line\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app,root\nwheel:x:10:root\n\
        appgrp:x:1001:\nextra:x:2000: app \nnogroup:x:65534:\n";

    #[test]
    fn users_resolve_as_docker_does() {
        type Want = (u32, u32, &'static [u32]);
        let table: &[(&str, Want)] = &[
            ("", (0, 0, &[50, 10])),
            ("0", (0, 0, &[50, 10])),
            ("root", (0, 0, &[50, 10])),
            ("1000", (1000, 1001, &[50, 2000])),
            ("app", (1000, 1001, &[50, 2000])),
            ("app:staff", (1000, 50, &[])),
            ("app:7", (1000, 7, &[])),
            ("1234", (1234, 0, &[])),
            ("1234:77", (1234, 77, &[])),
            ("nobody", (65534, 65534, &[])),
            ("65534:65534", (65534, 65534, &[])),
            ("root:", (0, 0, &[50, 10])),
        ];
        for (user, (uid, gid, extra)) in table {
            let want = ImageUser {
                uid: *uid,
                gid: *gid,
                additional_gids: extra.to_vec(),
            };
            assert_eq!(
                resolve("img", user, Some(PASSWD), Some(GROUP)).unwrap(),
                want,
                "{user:?}"
            );
        }
        for bad in ["ghost", "app:ghosts", "ghost:50"] {
            assert!(
                matches!(
                    resolve("img", bad, Some(PASSWD), Some(GROUP)),
                    Err(SpecError::UnknownUser { .. })
                ),
                "{bad}"
            );
        }
        // Without the files: numbers only.
        assert_eq!(
            resolve("img", "", None, None).unwrap(),
            ImageUser::ids(0, 0)
        );
        assert_eq!(
            resolve("img", "7:8", None, None).unwrap(),
            ImageUser::ids(7, 8)
        );
        assert!(resolve("img", "app", None, None).is_err());
    }

    /// Two layers, top first: what each `path` reads.
    #[test]
    fn files_are_read_only_when_regular_small_and_inside_the_layer() {
        use std::os::unix::fs::symlink;
        let tmp = tempfile::tempdir().unwrap();
        let (top, low) = (tmp.path().join("top"), tmp.path().join("low"));
        for d in [&top, &low] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
        }
        std::fs::write(low.join("etc/passwd"), "low\n").unwrap();
        std::fs::write(low.join("etc/group"), "low group\n").unwrap();
        std::fs::write(top.join("etc/passwd"), "top\n").unwrap();
        // A symlink inside the layer is followed within it.
        std::fs::write(top.join("etc/real"), "real\n").unwrap();
        symlink("/etc/real", top.join("etc/inside")).unwrap();
        // Hostile entries.
        symlink("/dev/zero", top.join("etc/zero")).unwrap();
        symlink(
            "../../../../../../../../etc/hostname",
            top.join("etc/escape"),
        )
        .unwrap();
        nix::unistd::mkfifo(&top.join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let big = std::fs::File::create(top.join("etc/big")).unwrap();
        big.set_len(5 << 20).unwrap();
        std::fs::write(top.join("etc/limit"), vec![b'x'; MAX_FILE as usize]).unwrap();
        // An overlay whiteout hides the lower layer's file... (a directory stands in for the
        // 0:0 device, which needs CAP_MKNOD: the same "not a regular file" rule).
        std::fs::create_dir(top.join("etc/group")).unwrap();
        std::fs::write(low.join("etc/shadowed"), "low\n").unwrap();

        let layers = [&top, &low];
        let table: &[(&str, Option<&[u8]>)] = &[
            ("/etc/passwd", Some(b"top\n")),
            ("/etc/inside", Some(b"real\n")),
            ("/etc/shadowed", Some(b"low\n")),
            ("/etc/group", None),
            ("/etc/zero", None),
            ("/etc/escape", None),
            ("/etc/fifo", None),
            ("/etc/big", None),
            ("/etc/missing", None),
        ];
        for (path, want) in table {
            let got = read_in_layers(&layers, path);
            assert_eq!(got.as_deref(), *want, "{path}");
        }
        assert_eq!(
            read_in_layers(&layers, "/etc/limit").map(|b| b.len() as u64),
            Some(MAX_FILE)
        );
    }
}
