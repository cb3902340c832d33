//! In-memory volumes: gcloud's `--add-volume` and `--add-volume-mount`, parsed into what
//! they say ([`VolumeFlags`]: names, size limits as given, mounts) and into what an instance
//! gets ([`volumes`]: mount paths and sizes).

use super::list::key_values;
use super::quantity::memory_quantity;
use super::{bad, SpecError};

/// One `--add-volume name=N,type=in-memory[,size-limit=64Mi]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFlag {
    pub name: String,
    /// `size-limit` as given (checked to be a size), if given.
    pub size_limit: Option<String>,
    /// Its size in bytes: the limit, at most the instance's memory (its pages are charged
    /// there), which is also the size without a limit.
    pub size: u64,
}

/// One `--add-volume-mount volume=N,mount-path=/x`, of a volume defined with `--add-volume`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFlag {
    pub volume: String,
    pub path: String,
}

/// The volume flags, each checked, and the mounts checked against the volumes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeFlags {
    pub volumes: Vec<VolumeFlag>,
    pub mounts: Vec<MountFlag>,
}

impl VolumeFlags {
    /// Parses `--add-volume` and `--add-volume-mount` for an instance of `memory` bytes.
    pub fn parse(
        add_volume: &[String],
        add_mount: &[String],
        memory: u64,
    ) -> Result<VolumeFlags, SpecError> {
        let mut volumes: Vec<VolumeFlag> = Vec::new();
        for v in add_volume {
            let v = volume(v, memory)?;
            if volumes.iter().any(|d| d.name == v.name) {
                return Err(bad(
                    "--add-volume",
                    format!("volume {} is defined twice", v.name),
                ));
            }
            volumes.push(v);
        }
        let mounts = add_mount
            .iter()
            .map(|m| mount(m, &volumes))
            .collect::<Result<_, _>>()?;
        Ok(VolumeFlags { volumes, mounts })
    }

    /// What the instance mounts: (mount path, size) pairs.
    pub fn mounted(&self) -> Vec<(String, u64)> {
        self.mounts
            .iter()
            .filter_map(|m| {
                let v = self.volumes.iter().find(|v| v.name == m.volume)?;
                Some((m.path.clone(), v.size))
            })
            .collect()
    }
}

/// Parses gcloud's `--add-volume name=N,type=in-memory[,size-limit=64Mi]` and
/// `--add-volume-mount volume=N,mount-path=/x` into (mount path, size) pairs; a volume
/// without a size limit is bounded by the instance's memory (its pages are charged there).
pub fn volumes(
    add_volume: &[String],
    add_mount: &[String],
    memory: u64,
) -> Result<Vec<(String, u64)>, SpecError> {
    Ok(VolumeFlags::parse(add_volume, add_mount, memory)?.mounted())
}

/// One `--add-volume` value.
fn volume(v: &str, memory: u64) -> Result<VolumeFlag, SpecError> {
    const FIELD: &str = "--add-volume";
    let (mut name, mut kind, mut limit) = (None, None, None);
    for (k, val) in key_values(FIELD, v)? {
        match k {
            "name" => name = Some(val),
            "type" => kind = Some(val),
            "size-limit" => limit = Some((val, memory_quantity(FIELD, val)?)),
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
        Some("in-memory") => Ok(VolumeFlag {
            name: name.to_string(),
            size_limit: limit.map(|(text, _)| text.to_string()),
            size: limit.map_or(memory, |(_, bytes)| bytes.min(memory)),
        }),
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

/// One `--add-volume-mount` value of a `--container` group, of a volume in `vols`.
pub fn mount_of(m: &str, vols: &[VolumeFlag]) -> Result<MountFlag, SpecError> {
    mount(m, vols)
}

/// One `--add-volume-mount` value, of a volume in `vols`.
fn mount(m: &str, vols: &[VolumeFlag]) -> Result<MountFlag, SpecError> {
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
    if !vols.iter().any(|v| v.name == volume) {
        return Err(bad(
            FIELD,
            format!("volume {volume} is not defined with --add-volume"),
        ));
    }
    Ok(MountFlag {
        volume: volume.to_string(),
        path: path.to_string(),
    })
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
    fn flags_keep_names_and_limits_as_given() {
        let mem = 512 << 20;
        let f = VolumeFlags::parse(
            &[
                "name=cache,type=in-memory,size-limit=64Mi".into(),
                "name=huge,type=in-memory,size-limit=4Gi".into(),
            ],
            &["volume=huge,mount-path=/h".into()],
            mem,
        )
        .unwrap();
        assert_eq!(
            f.volumes,
            vec![
                VolumeFlag {
                    name: "cache".into(),
                    size_limit: Some("64Mi".into()),
                    size: 64 << 20
                },
                VolumeFlag {
                    name: "huge".into(),
                    size_limit: Some("4Gi".into()),
                    size: mem
                },
            ]
        );
        assert_eq!(
            f.mounts,
            vec![MountFlag {
                volume: "huge".into(),
                path: "/h".into()
            }]
        );
        assert_eq!(f.mounted(), vec![("/h".to_string(), mem)]);
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
