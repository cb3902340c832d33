//! The user's environment variables and the names runlet reserves: gcloud's
//! `--set-env-vars`, `--env-vars-file`, `--update-env-vars`, `--remove-env-vars` and
//! `--clear-env-vars`, checked once into [`EnvOps`] and applied to a container's current
//! variables ([`EnvOps::apply`]).

use super::{bad, split_list, SpecError};

/// Names runlet sets itself; a user may not set them (contract ENV-S1, PORT-3).
pub const RESERVED_ENV: &[&str] = &["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"];

/// Parses `K=V,K2=V2` (gcloud's `--set-env-vars`); reserved names are refused.
pub fn parse_env_vars(items: &[String]) -> Result<Vec<(String, String)>, SpecError> {
    parse_env_list(items, |k| {
        check_env_name("--set-env-vars", k)?;
        if RESERVED_ENV.contains(&k) {
            return Err(bad(
                "--set-env-vars",
                format!(
                    "{k} is reserved: runlet sets it (reserved: {})",
                    RESERVED_ENV.join(", ")
                ),
            ));
        }
        Ok(())
    })
}

/// The `KEY=VALUE` items of a repeatable `--set-env-vars` flag (each value in gcloud's
/// list syntax, see [`split_list`]); a later value of a name wins. `check` refuses a name.
pub fn parse_env_list(
    items: &[String],
    check: impl Fn(&str) -> Result<(), SpecError>,
) -> Result<Vec<(String, String)>, SpecError> {
    parse_env_list_as("--set-env-vars", items, check)
}

/// [`parse_env_list`] for the flag `field` (named in a refused item).
pub fn parse_env_list_as(
    field: &'static str,
    items: &[String],
    check: impl Fn(&str) -> Result<(), SpecError>,
) -> Result<Vec<(String, String)>, SpecError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items.iter().flat_map(|s| split_list(s)) {
        let item = item.as_str();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad(field, format!("{item:?} is not KEY=VALUE")))?;
        check(k)?;
        match out.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.to_string(),
            None => out.push((k.to_string(), v.to_string())),
        }
    }
    Ok(out)
}

/// `--env-vars-file FILE` as read: the path as given and its variables, in the file's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    pub path: String,
    pub vars: Vec<(String, String)>,
}

/// gcloud's environment flags besides `--set-env-vars`, with the variables they change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvChanges {
    /// `--env-vars-file`, read by the caller ([`parse_env_file`]).
    pub file: Option<EnvFile>,
    /// `--update-env-vars`, each in gcloud's list syntax.
    pub update: Vec<String>,
    /// `--remove-env-vars`, each a comma-separated list of names.
    pub remove: Vec<String>,
    /// `--clear-env-vars`.
    pub clear: bool,
    /// The container's plain variables before this change (those of the service's current
    /// revision for `runlet deploy`; none for a service or job defined from scratch):
    /// what `--update-env-vars` and `--remove-env-vars` change.
    pub current: Vec<(String, String)>,
}

impl EnvChanges {
    /// The flags given, by name (for "not allowed here" refusals).
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--env-vars-file", self.file.is_some()),
            ("--update-env-vars", !self.update.is_empty()),
            ("--remove-env-vars", !self.remove.is_empty()),
            ("--clear-env-vars", self.clear),
        ]
        .into_iter()
        .filter(|g| g.1)
        .map(|g| g.0)
        .collect()
    }
}

/// What the environment flags say to do to a container's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvOps {
    /// The variables are exactly these (`--set-env-vars`, `--env-vars-file`,
    /// `--clear-env-vars`; none given is the same for a definition from scratch).
    Replace(Vec<(String, String)>),
    /// Remove these names, then set these (`--remove-env-vars`, `--update-env-vars`, in
    /// that order, as gcloud).
    Change {
        remove: Vec<String>,
        update: Vec<(String, String)>,
    },
}

impl EnvOps {
    /// The variables after the change, `current` being those before it.
    pub fn apply(&self, current: &[(String, String)]) -> Vec<(String, String)> {
        match self {
            EnvOps::Replace(vars) => vars.clone(),
            EnvOps::Change { remove, update } => {
                let mut out: Vec<(String, String)> = current
                    .iter()
                    .filter(|(k, _)| !remove.contains(k))
                    .cloned()
                    .collect();
                for (k, v) in update {
                    match out.iter_mut().find(|(ek, _)| ek == k) {
                        Some(e) => e.1 = v.clone(),
                        None => out.push((k.clone(), v.clone())),
                    }
                }
                out
            }
        }
    }
}

/// Checks gcloud's environment flags into [`EnvOps`]: at most one of `--set-env-vars`,
/// `--env-vars-file`, `--clear-env-vars` and `--update-env-vars`/`--remove-env-vars` (one
/// mutually exclusive group in gcloud); `check(flag, name)` refuses a name set.
pub fn env_ops(
    set: &[String],
    changes: &EnvChanges,
    check: impl Fn(&'static str, &str) -> Result<(), SpecError>,
) -> Result<EnvOps, SpecError> {
    let given = [
        (!set.is_empty(), "--set-env-vars"),
        (changes.file.is_some(), "--env-vars-file"),
        (changes.clear, "--clear-env-vars"),
        (
            !changes.update.is_empty() || !changes.remove.is_empty(),
            "--update-env-vars/--remove-env-vars",
        ),
    ];
    let named: Vec<&str> = given.iter().filter(|g| g.0).map(|g| g.1).collect();
    if named.len() > 1 {
        let field = if named[0] == "--update-env-vars/--remove-env-vars" {
            "--update-env-vars"
        } else {
            named[0]
        };
        return Err(bad(
            field,
            format!("at most one of these can be given: {}", named.join(", ")),
        ));
    }
    if let Some(f) = &changes.file {
        for (k, _) in &f.vars {
            check("--env-vars-file", k)?;
        }
        return Ok(EnvOps::Replace(f.vars.clone()));
    }
    if changes.update.is_empty() && changes.remove.is_empty() {
        return Ok(EnvOps::Replace(parse_env_list_as(
            "--set-env-vars",
            set,
            |k| check("--set-env-vars", k),
        )?));
    }
    let mut remove = Vec::new();
    for k in changes.remove.iter().flat_map(|s| split_list(s)) {
        if !k.is_empty() {
            check_env_name("--remove-env-vars", &k)?;
            remove.push(k);
        }
    }
    let update = parse_env_list_as("--update-env-vars", &changes.update, |k| {
        check("--update-env-vars", k)
    })?;
    Ok(EnvOps::Change { remove, update })
}

/// A service container's variables after its flags: [`env_ops`] with runlet's reserved
/// names refused, applied to `changes.current`.
pub fn service_env(
    set: &[String],
    changes: &EnvChanges,
) -> Result<Vec<(String, String)>, SpecError> {
    let ops = env_ops(set, changes, |field, k| {
        check_env_name(field, k)?;
        if RESERVED_ENV.contains(&k) {
            return Err(bad(
                field,
                format!(
                    "{k} is reserved: runlet sets it (reserved: {})",
                    RESERVED_ENV.join(", ")
                ),
            ));
        }
        Ok(())
    })?;
    Ok(ops.apply(&changes.current))
}

/// Parses `--env-vars-file`'s text as gcloud does: a YAML map of names to string values
/// (`A: "1"`; a number or a boolean is refused, as gcloud refuses it, so that `1.10` is
/// never read as `1.1`); names are checked by the caller. `path` names the file in errors.
pub fn parse_env_file(path: &str, text: &str) -> Result<Vec<(String, String)>, SpecError> {
    const FIELD: &str = "--env-vars-file";
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| bad(FIELD, format!("{path}: not YAML: {e}")))?;
    let serde_yaml_ng::Value::Mapping(map) = doc else {
        return Err(bad(
            FIELD,
            format!("{path}: expected a map of variable names to values (NAME: value)"),
        ));
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in map {
        let serde_yaml_ng::Value::String(k) = k else {
            return Err(bad(
                FIELD,
                format!("{path}: the name {k:?} is not a string"),
            ));
        };
        let serde_yaml_ng::Value::String(v) = v else {
            return Err(bad(
                FIELD,
                format!(
                    "{path}: {k}: environment variable values must be strings (quote it: {k}: \"...\")"
                ),
            ));
        };
        out.push((k, v));
    }
    Ok(out)
}

/// Refuses a name that is not `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_env_name(field: &'static str, k: &str) -> Result<(), SpecError> {
    if k.is_empty()
        || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        || k.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(bad(
            field,
            format!("{k:?} is not a valid variable name ([A-Za-z_][A-Za-z0-9_]*)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_vars() {
        let v = parse_env_vars(&["A=1,B=x=y".into(), "A=2".into()]).unwrap();
        assert_eq!(
            v,
            vec![
                ("A".to_string(), "2".to_string()),
                ("B".to_string(), "x=y".to_string())
            ]
        );
        let e = parse_env_vars(&["PORT=1".into()]).unwrap_err();
        assert_eq!(e.field, "--set-env-vars");
        assert!(e.detail.contains("reserved"));
        assert!(parse_env_vars(&["NOVALUE".into()]).is_err());
        assert!(parse_env_vars(&["1X=2".into()]).is_err());
    }

    #[test]
    fn env_vars_use_the_list_delimiter() {
        let v = parse_env_vars(&["^@^A=1,2@B=x".into()]).unwrap();
        assert_eq!(
            v,
            vec![("A".into(), "1,2".into()), ("B".into(), "x".into())]
        );
    }

    #[test]
    fn env_lists_take_the_callers_name_check() {
        let no_x = |k: &str| {
            if k == "X" {
                Err(bad("--set-env-vars", "X is mine"))
            } else {
                Ok(())
            }
        };
        assert_eq!(
            parse_env_list(&["PORT=1,A=2".into()], no_x).unwrap(),
            vec![("PORT".into(), "1".into()), ("A".into(), "2".into())]
        );
        assert_eq!(
            parse_env_list(&["A=1,X=2".into()], no_x)
                .unwrap_err()
                .detail,
            "X is mine"
        );
        for (name, ok) in [
            ("A_1", true),
            ("_x", true),
            ("", false),
            ("1A", false),
            ("A-B", false),
        ] {
            assert_eq!(check_env_name("f", name).is_ok(), ok, "{name:?}");
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_flags_change_the_current_variables_as_gcloud() {
        let current = pairs(&[("A", "1"), ("B", "2"), ("C", "3")]);
        type Case = (Vec<String>, EnvChanges, Vec<(String, String)>);
        let with = |f: fn(&mut EnvChanges)| {
            let mut c = EnvChanges {
                current: current.clone(),
                ..Default::default()
            };
            f(&mut c);
            c
        };
        let table: Vec<Case> = vec![
            // Nothing given: a definition from scratch has none.
            (vec![], with(|_| {}), vec![]),
            (
                strings(&["A=9,D=4"]),
                with(|_| {}),
                pairs(&[("A", "9"), ("D", "4")]),
            ),
            (
                vec![],
                with(|c| c.update = strings(&["A=9,D=4"])),
                pairs(&[("A", "9"), ("B", "2"), ("C", "3"), ("D", "4")]),
            ),
            (
                vec![],
                with(|c| c.remove = strings(&["B,C"])),
                pairs(&[("A", "1")]),
            ),
            // Removed first, then updated: a name in both is set.
            (
                vec![],
                with(|c| {
                    c.remove = strings(&["A", "B"]);
                    c.update = strings(&["A=new"])
                }),
                pairs(&[("C", "3"), ("A", "new")]),
            ),
            (vec![], with(|c| c.clear = true), vec![]),
            (
                vec![],
                with(|c| {
                    c.file = Some(EnvFile {
                        path: "f".into(),
                        vars: pairs(&[("F", "x")]),
                    })
                }),
                pairs(&[("F", "x")]),
            ),
        ];
        for (i, (set, changes, want)) in table.into_iter().enumerate() {
            assert_eq!(service_env(&set, &changes).unwrap(), want, "case {i}");
        }
    }

    #[test]
    fn env_flags_in_conflict_or_bad_are_refused_naming_the_flag() {
        let file = || {
            Some(EnvFile {
                path: "f".into(),
                vars: pairs(&[("F", "x")]),
            })
        };
        type Case = (Vec<String>, EnvChanges, &'static str, &'static str);
        let table: Vec<Case> = vec![
            (
                strings(&["A=1"]),
                EnvChanges {
                    clear: true,
                    ..Default::default()
                },
                "--set-env-vars",
                "at most one of these can be given: --set-env-vars, --clear-env-vars",
            ),
            (
                strings(&["A=1"]),
                EnvChanges {
                    update: strings(&["B=1"]),
                    ..Default::default()
                },
                "--set-env-vars",
                "--set-env-vars, --update-env-vars/--remove-env-vars",
            ),
            (
                vec![],
                EnvChanges {
                    file: file(),
                    remove: strings(&["B"]),
                    ..Default::default()
                },
                "--env-vars-file",
                "--env-vars-file, --update-env-vars/--remove-env-vars",
            ),
            (
                vec![],
                EnvChanges {
                    clear: true,
                    update: strings(&["B=1"]),
                    ..Default::default()
                },
                "--clear-env-vars",
                "at most one",
            ),
            (
                vec![],
                EnvChanges {
                    update: strings(&["PORT=1"]),
                    ..Default::default()
                },
                "--update-env-vars",
                "reserved",
            ),
            (
                vec![],
                EnvChanges {
                    update: strings(&["NOVALUE"]),
                    ..Default::default()
                },
                "--update-env-vars",
                "not KEY=VALUE",
            ),
            (
                vec![],
                EnvChanges {
                    remove: strings(&["A-B"]),
                    ..Default::default()
                },
                "--remove-env-vars",
                "not a valid variable name",
            ),
            (
                vec![],
                EnvChanges {
                    file: Some(EnvFile {
                        path: "f".into(),
                        vars: pairs(&[("K_SERVICE", "x")]),
                    }),
                    ..Default::default()
                },
                "--env-vars-file",
                "reserved",
            ),
        ];
        for (i, (set, changes, field, needle)) in table.into_iter().enumerate() {
            let e = service_env(&set, &changes).unwrap_err();
            assert_eq!(e.field, field, "case {i}: {e}");
            assert!(e.detail.contains(needle), "case {i}: {e}");
        }
        // Update and remove together are one choice.
        let both = EnvChanges {
            update: strings(&["A=1"]),
            remove: strings(&["B"]),
            ..Default::default()
        };
        assert!(service_env(&[], &both).is_ok());
    }

    #[test]
    fn env_files_are_yaml_maps_of_strings() {
        let ok = "B: two\nA: \"1\"\nC: 'x,y=z'\nD: \"\"\n";
        assert_eq!(
            parse_env_file("env.yaml", ok).unwrap(),
            pairs(&[("B", "two"), ("A", "1"), ("C", "x,y=z"), ("D", "")])
        );
        for (text, needle) in [
            ("A: 1\n", "A: environment variable values must be strings"),
            ("A: true\n", "values must be strings"),
            ("A:\n", "values must be strings"),
            ("- A=1\n", "expected a map"),
            ("", "expected a map"),
            ("1: x\n", "is not a string"),
            ("A: [\n", "not YAML"),
        ] {
            let e = parse_env_file("env.yaml", text).unwrap_err();
            assert_eq!(e.field, "--env-vars-file");
            assert!(e.detail.starts_with("env.yaml: "), "{text:?}: {e}");
            assert!(e.detail.contains(needle), "{text:?}: {e}");
        }
    }
}
