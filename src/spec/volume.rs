//! In-memory volumes: gcloud's `--add-volume` and `--add-volume-mount`.

use super::list::key_values;
use super::quantity::memory_quantity;
use super::{bad, SpecError};

/// Parses gcloud's `--add-volume name=N,type=in-memory[,size-limit=64Mi]` and
/// `--add-volume-mount volume=N,mount-path=/x` into (mount path, size) pairs; a volume
/// without a size limit is bounded by the instance's memory (its pages are charged there).
pub fn volumes(
    add_volume: &[String],
    add_mount: &[String],
    memory: u64,
) -> Result<Vec<(String, u64)>, SpecError> {
    let mut vols: Vec<(String, u64)> = Vec::new();
    for v in add_volume {
        let (name, size) = volume(v, memory)?;
        if vols.iter().any(|(n, _)| *n == name) {
            return Err(bad(
                "--add-volume",
                format!("volume {name} is defined twice"),
            ));
        }
        vols.push((name, size.min(memory)));
    }
    add_mount.iter().map(|m| mount(m, &vols)).collect()
}

/// One `--add-volume` value: (name, size limit).
fn volume(v: &str, memory: u64) -> Result<(String, u64), SpecError> {
    const FIELD: &str = "--add-volume";
    let (mut name, mut kind, mut size) = (None, None, memory);
    for (k, val) in key_values(FIELD, v)? {
        match k {
            "name" => name = Some(val),
            "type" => kind = Some(val),
            "size-limit" => size = memory_quantity(FIELD, val)?,
            other => {
                return Err(bad(
                    FIELD,
                    format!("unknown key {other:?}; allowed: name, type, size-limit"),
                ))
            }
        }
    }
    let name = name.ok_or_else(|| bad(FIELD, format!("{v:?} has no name=")))?;
    match kind {
        Some("in-memory") => Ok((name.to_string(), size)),
        Some(other) => Err(bad(
            FIELD,
            format!("type={other} is not supported on one node; allowed: in-memory"),
        )),
        None => Err(bad(
            FIELD,
            format!("{v:?} has no type= (allowed: in-memory)"),
        )),
    }
}

/// One `--add-volume-mount` value of a volume in `vols`: (mount path, size limit).
fn mount(m: &str, vols: &[(String, u64)]) -> Result<(String, u64), SpecError> {
    const FIELD: &str = "--add-volume-mount";
    let (mut volume, mut path) = (None, None);
    for (k, val) in key_values(FIELD, m)? {
        match k {
            "volume" => volume = Some(val),
            "mount-path" => path = Some(val),
            other => {
                return Err(bad(
                    FIELD,
                    format!("unknown key {other:?}; allowed: volume, mount-path"),
                ))
            }
        }
    }
    let volume = volume.ok_or_else(|| bad(FIELD, format!("{m:?} has no volume=")))?;
    let path = path.ok_or_else(|| bad(FIELD, format!("{m:?} has no mount-path=")))?;
    if !path.starts_with('/') || path == "/" {
        return Err(bad(
            FIELD,
            format!("mount-path={path} must be an absolute path other than /"),
        ));
    }
    let size = vols
        .iter()
        .find(|(n, _)| n == volume)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            bad(
                FIELD,
                format!("volume {volume} is not defined with --add-volume"),
            )
        })?;
    Ok((path.to_string(), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_memory_volumes() {
        let mem = 512 << 20;
        let v = volumes(
            &[
                "name=cache,type=in-memory,size-limit=64Mi".into(),
                "name=big,type=in-memory".into(),
            ],
            &[
                "volume=cache,mount-path=/cache".into(),
                "volume=big,mount-path=/big".into(),
            ],
            mem,
        )
        .unwrap();
        assert_eq!(
            v,
            vec![("/cache".to_string(), 64 << 20), ("/big".to_string(), mem)]
        );
    }

    #[test]
    fn refuses_bad_volumes_saying_why() {
        let mem = 512 << 20;
        for (vols, mounts, field, needle) in [
            (
                vec!["name=x,type=cloud-storage"],
                vec![],
                "--add-volume",
                "not supported",
            ),
            (vec!["type=in-memory"], vec![], "--add-volume", "no name"),
            (vec!["name=x"], vec![], "--add-volume", "no type="),
            (
                vec!["name=x,type=in-memory,color=red"],
                vec![],
                "--add-volume",
                "unknown key",
            ),
            (
                vec!["name=x,novalue"],
                vec![],
                "--add-volume",
                "not KEY=VALUE",
            ),
            (
                vec!["name=x,size-limit=lots"],
                vec![],
                "--add-volume",
                "not a size",
            ),
            (
                vec!["name=x,type=in-memory", "name=x,type=in-memory"],
                vec![],
                "--add-volume",
                "defined twice",
            ),
            (
                vec!["name=x,type=in-memory"],
                vec!["volume=y,mount-path=/y"],
                "--add-volume-mount",
                "not defined",
            ),
            (
                vec!["name=x,type=in-memory"],
                vec!["volume=x,mount-path=rel"],
                "--add-volume-mount",
                "absolute",
            ),
            (
                vec!["name=x,type=in-memory"],
                vec!["volume=x,mount-path=/"],
                "--add-volume-mount",
                "absolute",
            ),
            (
                vec![],
                vec!["mount-path=/x"],
                "--add-volume-mount",
                "no volume=",
            ),
            (
                vec![],
                vec!["volume=x"],
                "--add-volume-mount",
                "no mount-path=",
            ),
            (
                vec![],
                vec!["volume=x,ro=1"],
                "--add-volume-mount",
                "unknown key",
            ),
        ] {
            let vols: Vec<String> = vols.into_iter().map(String::from).collect();
            let mounts: Vec<String> = mounts.into_iter().map(String::from).collect();
            let e = volumes(&vols, &mounts, mem).unwrap_err();
            assert_eq!(e.field, field, "{vols:?} {mounts:?}");
            assert!(
                e.detail.contains(needle),
                "{vols:?} {mounts:?}: {}",
                e.detail
            );
        }
    }
}
