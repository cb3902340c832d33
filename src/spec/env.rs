//! The user's environment variables (`--set-env-vars`) and the names runlet reserves.

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
    let mut out: Vec<(String, String)> = Vec::new();
    for item in items.iter().flat_map(|s| split_list(s)) {
        let item = item.as_str();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| bad("--set-env-vars", format!("{item:?} is not KEY=VALUE")))?;
        check(k)?;
        match out.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = v.to_string(),
            None => out.push((k.to_string(), v.to_string())),
        }
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
}
