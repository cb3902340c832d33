//! Service host names the system resolver can find: the tagged block `runlet daemon` keeps
//! in the host's `/etc/hosts`, and the complete hosts file of an instance.
//!
//! The block, one line per name, all to one address:
//!
//! ```text
//! # BEGIN runlet (managed by runlet daemon, pid 1234; do not edit)
//! 127.0.0.1 hello.localhost
//! # END runlet
//! ```
//!
//! [`render`] is the whole decision, without I/O: every complete `BEGIN`..`END` span is
//! runlet's and is removed; the new block goes where the first span was, or at the end;
//! every other byte stays as it was. A `BEGIN` line with no `END` after it, or an `END`
//! with no `BEGIN`, is not a span and is left alone (deleting to the end of the file could
//! take lines that are not runlet's). The block's lines end the way the file's first line
//! does (`\r\n` or `\n`).
//!
//! Names are host names as they will appear in the file (`hello.localhost`): the caller
//! chooses the naming; this module refuses anything that is not a plain host name, so a
//! name cannot add lines of its own.

use std::collections::BTreeSet;
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use thiserror::Error;
use tracing::{debug, warn};

use crate::util::{random_suffix, Chain};

/// First words of the line that opens runlet's block.
pub const BEGIN: &str = "# BEGIN runlet";
/// The line that closes runlet's block.
pub const END: &str = "# END runlet";

/// Longest host name (RFC 1035, without the final dot).
const NAME_MAX: usize = 253;

/// Why a hosts file could not be updated.
#[derive(Debug, Error)]
pub enum HostsError {
    #[error("{name:?} is not a host name (1 to {NAME_MAX} letters, digits, '-', '_' and '.')")]
    BadName { name: String },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A hosts file (normally `/etc/hosts`) in which runlet keeps its block of names, all
/// mapped to one address.
#[derive(Debug, Clone)]
pub struct HostsFile {
    path: PathBuf,
    address: IpAddr,
}

impl HostsFile {
    /// Manages runlet's block in the hosts file at `path`, mapping names to `address`.
    pub fn new(path: PathBuf, address: IpAddr) -> Self {
        HostsFile { path, address }
    }

    /// The file this rewrites.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes runlet's block list exactly `names` (removing it if `names` is empty),
    /// leaving the rest of the file as it was. Does not write if nothing changes.
    ///
    /// The file is replaced atomically (temp file in the same directory, fsync, rename,
    /// with the old file's mode and owner) when it can be. Where `/etc/hosts` is a bind
    /// mount (containers), rename fails with `EBUSY` or `EXDEV`; where the directory is
    /// not writable, the temp file cannot be made: then the file is rewritten in place,
    /// new content first and truncated after, so a reader may briefly see old and new
    /// bytes mixed but never an empty file. A symlink is followed: its target is
    /// rewritten, the link stays.
    pub fn set(&self, names: &BTreeSet<String>) -> Result<(), HostsError> {
        let block = render_block(std::process::id(), self.address, names)?;
        self.rewrite(block.as_deref())
    }

    /// Removes runlet's block (for a clean stop); the same as `set` with no names.
    pub fn remove_block(&self) -> Result<(), HostsError> {
        self.rewrite(None)
    }

    fn rewrite(&self, block: Option<&str>) -> Result<(), HostsError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HostsError::Read { path, source }
        };
        let path = match fs::canonicalize(&self.path) {
            Ok(target) => target,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.path.clone(),
            Err(e) => return Err(read_err(&self.path)(e)),
        };
        let (existing, meta) = match fs::read(&path) {
            Ok(bytes) => {
                let meta = fs::metadata(&path).map_err(read_err(&path))?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    read_err(&path)(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not UTF-8; refusing to rewrite it",
                    ))
                })?;
                (text, Some(meta))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (String::new(), None),
            Err(e) => return Err(read_err(&path)(e)),
        };
        let new = render(&existing, block);
        if new == existing {
            return Ok(());
        }
        write_file(&path, new.as_bytes(), meta.as_ref()).map_err(|source| HostsError::Write {
            path: path.clone(),
            source,
        })
    }
}

/// runlet's block mapping each of `names` to `address`, tagged with the daemon's `pid`;
/// `None` for no names. Lines end in `\n` ([`render`] adapts them to the file).
pub fn render_block(
    pid: u32,
    address: IpAddr,
    names: &BTreeSet<String>,
) -> Result<Option<String>, HostsError> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut out = format!("{BEGIN} (managed by runlet daemon, pid {pid}; do not edit)\n");
    for name in names {
        check_host_name(name)?;
        out.push_str(&format!("{address} {name}\n"));
    }
    out.push_str(END);
    out.push('\n');
    Ok(Some(out))
}

/// `existing` with runlet's block replaced by `block` (or removed, for `None`); see the
/// module doc for the rules.
pub fn render(existing: &str, block: Option<&str>) -> String {
    let eol = match existing.find('\n') {
        Some(i) if existing[..i].ends_with('\r') => "\r\n",
        _ => "\n",
    };
    let lines: Vec<&str> = existing.split_inclusive('\n').collect();
    let spans = runlet_spans(&lines);
    let mut out = String::with_capacity(existing.len() + block.map_or(0, str::len));
    let push_block = |out: &mut String| {
        for line in block.into_iter().flat_map(str::lines) {
            out.push_str(line);
            out.push_str(eol);
        }
    };
    let mut i = 0;
    let mut placed = false;
    while i < lines.len() {
        if let Some(&(_, end)) = spans.iter().find(|(start, _)| *start == i) {
            if !placed {
                push_block(&mut out);
                placed = true;
            }
            i = end + 1;
            continue;
        }
        out.push_str(lines[i]);
        i += 1;
    }
    if !placed && block.is_some() {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        push_block(&mut out);
    }
    out
}

/// The line after which an instance's `/etc/hosts` lists the services (daemon instances
/// only); [`peers_block`] writes it, [`replace_peers`] finds it.
pub const PEERS_MARKER: &str = "# runlet services (kept current by runlet daemon)";

/// The lines a daemon instance's `/etc/hosts` ends with: the marker, then each of `names`
/// (`hello.localhost`) at `gateway`, where the daemon's ingress answers for every service.
pub fn peers_block(names: &BTreeSet<String>, gateway: IpAddr) -> Result<String, HostsError> {
    let mut out = format!("{PEERS_MARKER}\n");
    for name in names {
        check_host_name(name)?;
        out.push_str(&format!("{gateway}\t{name}\n"));
    }
    Ok(out)
}

/// `existing` (an instance's `/etc/hosts`) with everything from the marker on replaced by
/// `block`; `None` when it has no marker (not a daemon instance's file).
pub fn replace_peers(existing: &str, block: &str) -> Option<String> {
    let at = existing.find(PEERS_MARKER)?;
    Some(format!("{}{block}", &existing[..at]))
}

/// Rewrites, in place, the services block of every instance hosts file under
/// `instances_dir` (`<id>/etc/hosts`, bind-mounted into the running container, so the same
/// inode must be written: no rename). Files without the marker are left alone.
pub fn update_instances(instances_dir: &Path, block: &str) {
    let Ok(dirs) = fs::read_dir(instances_dir) else {
        return;
    };
    for d in dirs.filter_map(Result::ok) {
        let path = d.path().join("etc").join("hosts");
        let Ok(existing) = fs::read_to_string(&path) else {
            continue;
        };
        if let Some(new) = replace_peers(&existing, block) {
            if new != existing {
                if let Err(e) = fs::write(&path, new) {
                    tracing::warn!("updating {}: {e}", path.display());
                }
            }
        }
    }
}

/// Accepts a plain host name: 1 to 253 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`,
/// no empty label. Anything else (spaces, `#`, line breaks) could change the file's
/// meaning.
pub fn check_host_name(name: &str) -> Result<(), HostsError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && !name.starts_with(['.', '-'])
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(HostsError::BadName {
            name: name.to_string(),
        })
    }
}

/// Index pairs (BEGIN line, END line) of runlet's complete blocks in `lines`.
fn runlet_spans(lines: &[&str]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut open = None;
    for (i, line) in lines.iter().enumerate() {
        let text = line.trim_end_matches(['\n', '\r']);
        if text == BEGIN || text.starts_with(&format!("{BEGIN} ")) {
            // A later BEGIN wins: an earlier one without an END is not ours to span from.
            open = Some(i);
        } else if text.trim_end() == END {
            if let Some(start) = open.take() {
                spans.push((start, i));
            }
        }
    }
    spans
}

/// Whether the atomic way failed for a reason the in-place way does not share: a bind
/// mount (`EBUSY`, `EXDEV`) or a directory we may not write or chown in.
fn falls_back_in_place(e: &io::Error) -> bool {
    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(0));
    matches!(
        errno,
        Errno::EBUSY | Errno::EXDEV | Errno::EACCES | Errno::EPERM | Errno::EROFS
    )
}

fn write_file(path: &Path, content: &[u8], meta: Option<&Metadata>) -> io::Result<()> {
    match replace_by_rename(path, content, meta) {
        Ok(()) => Ok(()),
        Err(e) if falls_back_in_place(&e) => {
            debug!(path = %path.display(), error = %e, "cannot replace the file; writing it in place");
            write_in_place(path, content)
        }
        Err(e) => Err(e),
    }
}

fn replace_by_rename(path: &Path, content: &[u8], meta: Option<&Metadata>) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.runlet-{}-{}",
        file_name.as_deref().unwrap_or("hosts"),
        std::process::id(),
        random_suffix(8)
    ));
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let result = fill_and_rename(f, &tmp, path, content, meta);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // The new content is in place; a lost directory entry on power loss only means the
    // daemon rewrites the block on its next start.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(dir = %dir.display(), error = %Chain(&e), "syncing the directory");
    }
    Ok(())
}

fn fill_and_rename(
    mut f: File,
    tmp: &Path,
    path: &Path,
    content: &[u8],
    meta: Option<&Metadata>,
) -> io::Result<()> {
    let mode = meta.map_or(0o644, |m| m.permissions().mode() & 0o7777);
    f.set_permissions(Permissions::from_mode(mode))?;
    if let Some(m) = meta {
        let ours = f.metadata()?;
        if (ours.uid(), ours.gid()) != (m.uid(), m.gid()) {
            std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()))?;
        }
    }
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    fs::rename(tmp, path)
}

/// Overwrites `path` from its start, then cuts it to `content`'s length: never empty in
/// between, unlike truncate-then-write.
fn write_in_place(path: &Path, content: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)?;
    f.write_all(content)?;
    f.set_len(content.len() as u64)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn block(list: &[&str]) -> String {
        render_block(7, LOCAL, &names(list)).unwrap().unwrap()
    }

    const B: &str = "# BEGIN runlet (managed by runlet daemon, pid 7; do not edit)\n";
    const E: &str = "# END runlet\n";

    #[test]
    fn block_format() {
        assert_eq!(
            block(&["other.localhost", "hello.localhost"]),
            format!("{B}127.0.0.1 hello.localhost\n127.0.0.1 other.localhost\n{E}")
        );
        assert_eq!(render_block(7, LOCAL, &names(&[])).unwrap(), None);
    }

    #[test]
    fn render_table() {
        let new = block(&["hello.localhost"]);
        let new_crlf = new.replace('\n', "\r\n");
        let old = format!("{B}127.0.0.1 gone.localhost\n{E}");
        let base = "127.0.0.1 localhost\n::1 localhost\n";
        // (case, existing, block, expected)
        let table: Vec<(&str, String, Option<&str>, String)> = vec![
            ("empty file", "".into(), Some(&new), new.clone()),
            (
                "no block yet",
                base.into(),
                Some(&new),
                format!("{base}{new}"),
            ),
            (
                "block in the middle is replaced where it is",
                format!("a\n{old}b\n"),
                Some(&new),
                format!("a\n{new}b\n"),
            ),
            (
                "two stale blocks become one, at the first",
                format!("a\n{old}b\n{old}c\n"),
                Some(&new),
                format!("a\n{new}b\nc\n"),
            ),
            (
                "no trailing newline in the original",
                "a\tb".into(),
                Some(&new),
                format!("a\tb\n{new}"),
            ),
            (
                "CRLF lines kept, block follows them",
                "a\r\nb\r\n".into(),
                Some(&new),
                format!("a\r\nb\r\n{new_crlf}"),
            ),
            (
                "CRLF block replaced",
                format!("a\r\n{}b\r\n", old.replace('\n', "\r\n")),
                Some(&new),
                format!("a\r\n{new_crlf}b\r\n"),
            ),
            (
                "empty set removes",
                format!("a\n{old}b\n"),
                None,
                "a\nb\n".into(),
            ),
            (
                "empty set removes a block at the end without a newline",
                format!("a\n{}", old.trim_end()),
                None,
                "a\n".into(),
            ),
            (
                "nothing to remove: every byte kept",
                "a \t b\r\n\n  # c\nd".into(),
                None,
                "a \t b\r\n\n  # c\nd".into(),
            ),
            (
                "unterminated BEGIN is not ours",
                format!("a\n{B}b\n"),
                Some(&new),
                format!("a\n{B}b\n{new}"),
            ),
            (
                "stray END is not ours",
                format!("a\n{E}b\n"),
                None,
                format!("a\n{E}b\n"),
            ),
            (
                "look-alike markers are not ours",
                "# BEGIN runlets\nx\n# END runlet2\n".into(),
                None,
                "# BEGIN runlets\nx\n# END runlet2\n".into(),
            ),
            (
                "bare markers are ours",
                "a\n# BEGIN runlet\nx\n# END runlet \nb\n".into(),
                None,
                "a\nb\n".into(),
            ),
        ];
        for (case, existing, block, expected) in table {
            let got = render(&existing, block);
            assert_eq!(got, expected, "{case}");
            assert_eq!(render(&got, block), got, "{case}: idempotent");
        }
    }

    #[test]
    fn adding_then_removing_gives_back_the_original() {
        let new = block(&["a.localhost", "b.localhost"]);
        for original in [
            "",
            "127.0.0.1 localhost\n",
            "a\r\nb\r\n",
            "x\n# BEGIN runlet (pid 1)\ny\n",
        ] {
            assert_eq!(render(&render(original, Some(&new)), None), original);
        }
    }

    #[test]
    fn host_names() {
        for ok in ["hello.localhost", "a", "a-b_c.d9", &"a".repeat(NAME_MAX)] {
            assert!(check_host_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a\n127.0.0.1 evil",
            "a#b",
            ".a",
            "-a",
            "a.",
            "a..b",
            "ä.localhost",
            &"a".repeat(NAME_MAX + 1),
        ] {
            assert!(
                matches!(check_host_name(bad), Err(HostsError::BadName { .. })),
                "{bad:?}"
            );
        }
        assert!(render_block(1, LOCAL, &names(&["ok", "not ok"])).is_err());
    }

    #[test]
    fn instance_hosts_list_the_services_after_the_marker_and_are_rewritten_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let gw: IpAddr = "10.209.0.1".parse().unwrap();
        let block = peers_block(&names(&["b.localhost", "a.localhost"]), gw).unwrap();
        assert_eq!(
            block,
            format!("{PEERS_MARKER}\n10.209.0.1\ta.localhost\n10.209.0.1\tb.localhost\n")
        );
        assert!(peers_block(&names(&["a b"]), gw).is_err());
        let etc = tmp.path().join("i1").join("etc");
        crate::runtime::network::write_etc_files(&etc, "inst-1", Some("10.209.0.7"), &block)
            .unwrap();
        let first = fs::read_to_string(etc.join("hosts")).unwrap();
        assert!(first.starts_with("127.0.0.1\tlocalhost\n"), "{first}");
        assert!(first.ends_with(&block), "{first}");
        let serve_etc = tmp.path().join("i2").join("etc");
        crate::runtime::network::write_etc_files(&serve_etc, "inst-2", None, "").unwrap();
        let serve_hosts = fs::read_to_string(serve_etc.join("hosts")).unwrap();
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = inode(&etc.join("hosts"));
        let fewer = peers_block(&names(&["a.localhost"]), gw).unwrap();
        update_instances(tmp.path(), &fewer);
        let now = fs::read_to_string(etc.join("hosts")).unwrap();
        assert_eq!(now, first.replace(&block, &fewer));
        assert_eq!(inode(&etc.join("hosts")), before, "rewritten in place");
        assert_eq!(
            fs::read_to_string(serve_etc.join("hosts")).unwrap(),
            serve_hosts
        );
        assert_eq!(replace_peers("no marker", &fewer), None);
    }

    #[test]
    fn hosts_file_set_and_remove_keep_the_rest_and_the_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("hosts");
        let original = "127.0.0.1\tlocalhost\n# keep me\n";
        fs::write(&path, original).unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let hosts = HostsFile::new(path.clone(), LOCAL);

        hosts.set(&names(&["hello.localhost"])).unwrap();
        let pid = std::process::id();
        let expected = format!(
            "{original}# BEGIN runlet (managed by runlet daemon, pid {pid}; do not edit)\n\
             127.0.0.1 hello.localhost\n{E}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), expected);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);

        hosts
            .set(&names(&["hello.localhost", "other.localhost"]))
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("127.0.0.1 other.localhost\n"), "{text}");
        assert_eq!(text.matches(BEGIN).count(), 1);

        hosts.remove_block().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), original);
        hosts.set(&names(&[])).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), original);

        let e = hosts.set(&names(&["bad name"])).unwrap_err();
        assert!(matches!(e, HostsError::BadName { .. }), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), original);
        // No temp files left beside it.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn hosts_file_missing_and_symlinked() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = HostsFile::new(tmp.path().join("none"), LOCAL);
        missing.remove_block().unwrap();
        assert!(
            !missing.path().exists(),
            "nothing to remove, nothing written"
        );
        missing.set(&names(&["a.localhost"])).unwrap();
        let mode = fs::metadata(missing.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);

        let target = tmp.path().join("real");
        fs::write(&target, "x\n").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        HostsFile::new(link.clone(), LOCAL)
            .set(&names(&["a.localhost"]))
            .unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(fs::read_to_string(&target).unwrap().contains("a.localhost"));
    }

    #[test]
    fn in_place_fallback() {
        let fallback = |errno: Errno| falls_back_in_place(&io::Error::from(errno));
        for errno in [
            Errno::EBUSY,
            Errno::EXDEV,
            Errno::EACCES,
            Errno::EPERM,
            Errno::EROFS,
        ] {
            assert!(fallback(errno), "{errno}");
        }
        for errno in [Errno::ENOSPC, Errno::EIO, Errno::ENOENT] {
            assert!(!fallback(errno), "{errno}");
        }
        assert!(!falls_back_in_place(&io::Error::other("x")));

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("hosts");
        fs::write(&path, "a long first version\n").unwrap();
        write_in_place(&path, b"short\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n");
        write_in_place(&path, b"a longer second version\n").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "a longer second version\n"
        );
    }
}
