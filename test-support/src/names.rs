//! Whether a resource's name (a container id, a network namespace, a CNI allocation's
//! owner) belongs to one test's service or job.
//!
//! Tests run in parallel against one containerd, and their needles are prefixes such as
//! `adopt-`. A plain substring test took `scadopt-00001-...`, another test's container,
//! for one of `adopt-`'s; so the needle must start a name or follow a character that
//! cannot be part of one (`runlet-adopt-...` is a network namespace of `adopt`).

/// Whether `needle` occurs in `text` at the start or right after a character that is not
/// a letter or a digit.
pub fn mentions(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::mentions;

    #[test]
    fn a_needle_counts_only_where_a_name_begins() {
        let table = [
            ("adopt-00001-abc-xyz", "adopt-", true),
            ("runlet-adopt-00001-abc-xyz", "adopt-", true),
            ("ID\nadopt-00001-abc\n", "adopt-", true),
            ("scadopt-00001-v6u-43ejf", "adopt-", false),
            ("ID\nscadopt-00001-v6u-43ejf\n", "adopt-", false),
            ("scadopt-1 adopt-2", "adopt-", true),
            ("", "adopt-", false),
            ("other-00001", "adopt-", false),
        ];
        for (text, needle, want) in table {
            assert_eq!(mentions(text, needle), want, "{text:?} / {needle:?}");
        }
    }
}
