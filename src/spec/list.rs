//! gcloud's syntax for list flags (`a,b`, `^DELIM^a,b`) and for `KEY=VALUE` items
//! (`--add-volume`, the probe flags).

use super::{bad, SpecError};

/// A list flag's items, split on commas; a value starting `^DELIM^` is split on DELIM
/// instead, so items can contain commas (gcloud's list syntax, `gcloud topic escaping`).
pub fn split_list(s: &str) -> Vec<String> {
    let custom = s
        .strip_prefix('^')
        .and_then(|rest| rest.split_once('^'))
        .filter(|(delim, _)| !delim.is_empty());
    match custom {
        Some((delim, rest)) => rest.split(delim).map(str::to_string).collect(),
        None => s.split(',').map(str::to_string).collect(),
    }
}

/// The comma-separated `KEY=VALUE` items of `field`'s value, in order; empty items are
/// skipped, an item without `=` is refused.
pub(super) fn key_values<'a>(
    field: &'static str,
    s: &'a str,
) -> Result<Vec<(&'a str, &'a str)>, SpecError> {
    s.split(',')
        .filter(|i| !i.is_empty())
        .map(|i| {
            i.split_once('=')
                .ok_or_else(|| bad(field, format!("{i:?} is not KEY=VALUE")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_flags_split_like_gcloud() {
        let cases: &[(&str, &[&str])] = &[
            ("a,b,c", &["a", "b", "c"]),
            ("-c,echo hi", &["-c", "echo hi"]),
            ("^;^a,b;c", &["a,b", "c"]),
            ("^::^x:y::z", &["x:y", "z"]),
            ("^^a,b", &["^^a", "b"]),
            ("^a,b", &["^a", "b"]),
            ("", &[""]),
        ];
        for (input, want) in cases {
            assert_eq!(split_list(input), *want, "{input:?}");
        }
    }

    #[test]
    fn key_value_items() {
        assert_eq!(
            key_values("f", "a=1,,b=x=y").unwrap(),
            [("a", "1"), ("b", "x=y")]
        );
        assert_eq!(key_values("f", "").unwrap(), []);
        let e = key_values("f", "a=1,novalue").unwrap_err();
        assert_eq!(e, bad("f", "\"novalue\" is not KEY=VALUE"));
    }
}
