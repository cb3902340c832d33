//! Service and job names: Cloud Run's rules, the name derived from an image, and the
//! generated revision name.

use super::{bad, SpecError};
use crate::image::reference;

/// Checks a Cloud Run service or job name: lowercase letters, digits and hyphens, starting
/// with a letter, not ending with a hyphen, at most `max` characters.
pub fn check_name(field: &'static str, name: &str, max: usize) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad(field, format!("{name:?} must be 1-{max} characters of lowercase letters, digits and hyphens, start with a letter and not end with a hyphen")))
    }
}

/// A service name derived from an image name (`docker.io/library/My_App:1` → `my-app`).
pub fn name_from_image(image: &str) -> String {
    let short = reference::short_name(image);
    let mut s: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    let s = if s.starts_with(|c: char| c.is_ascii_lowercase()) {
        s.to_string()
    } else {
        format!("svc-{s}")
    };
    let mut s: String = s.chars().take(49).collect();
    while s.ends_with('-') {
        s.pop();
    }
    s
}

/// The revision name: `<service>-00001-<3 random>` like Cloud Run's generated names.
pub fn revision_name(service: &str) -> String {
    format!("{service}-00001-{}", crate::util::random_suffix(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("--service", "hello-world", 49).is_ok());
        for bad in ["", "Hello", "1abc", "abc-", "a_b", &"a".repeat(50)] {
            assert!(check_name("--service", bad, 49).is_err(), "{bad}");
        }
        assert_eq!(name_from_image("docker.io/library/probe:latest"), "probe");
        assert_eq!(name_from_image("docker.io/library/my_app:1"), "my-app");
        assert_eq!(name_from_image("docker.io/library/9lives:1"), "svc-9lives");
        assert!(revision_name("svc").starts_with("svc-00001-"));
    }
}
