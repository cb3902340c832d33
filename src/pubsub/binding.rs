//! A job's binding to a Pub/Sub pull subscription, kept as annotations on the job (the v2
//! `Job` has no field for it), so API clients see and set it too:
//! `runlet.io/pubsub-subscription` (`projects/P/subscriptions/S`) and
//! `runlet.io/pubsub-max-executions` (1-100, executions at once; default 1).

use std::collections::BTreeMap;

use crate::spec::SpecError;

pub const SUBSCRIPTION: &str = "runlet.io/pubsub-subscription";
pub const MAX_EXECUTIONS: &str = "runlet.io/pubsub-max-executions";
/// Executions of one binding at once, at most.
pub const MAX_MAX_EXECUTIONS: u32 = 100;

/// A checked binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// Executions running at once, at most.
    pub max_executions: u32,
}

fn bad(field: &'static str, detail: impl Into<String>) -> SpecError {
    SpecError {
        field,
        detail: detail.into(),
    }
}

/// Whether `s` is a subscription's full name: `projects/P/subscriptions/S`, with Pub/Sub's
/// rules for S (3-255 characters, a letter first; letters, digits, `-_.~+%`).
pub fn check_subscription(field: &'static str, s: &str) -> Result<(), SpecError> {
    let parts: Vec<&str> = s.split('/').collect();
    let ok = match parts.as_slice() {
        ["projects", p, "subscriptions", id] => {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
                && (3..=255).contains(&id.len())
                && id.starts_with(|c: char| c.is_ascii_alphabetic())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~+%".contains(&b))
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!(
                "{s:?} is not a subscription name (projects/PROJECT/subscriptions/SUBSCRIPTION)"
            ),
        ))
    }
}

/// The binding the job's annotations hold: `None` without [`SUBSCRIPTION`]; an error naming
/// the annotation when one is malformed (or [`MAX_EXECUTIONS`] is set alone).
pub fn from_annotations(a: &BTreeMap<String, String>) -> Result<Option<Binding>, SpecError> {
    const SUB_FIELD: &str = "job.annotations[runlet.io/pubsub-subscription]";
    const MAX_FIELD: &str = "job.annotations[runlet.io/pubsub-max-executions]";
    let max = match a.get(MAX_EXECUTIONS) {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_MAX_EXECUTIONS).contains(&n) => Some(n),
            _ => {
                return Err(bad(
                    MAX_FIELD,
                    format!("{v:?} is not a number of executions from 1 to {MAX_MAX_EXECUTIONS}"),
                ))
            }
        },
    };
    let Some(sub) = a.get(SUBSCRIPTION) else {
        if max.is_some() {
            return Err(bad(
                MAX_FIELD,
                "is set without runlet.io/pubsub-subscription",
            ));
        }
        return Ok(None);
    };
    check_subscription(SUB_FIELD, sub)?;
    Ok(Some(Binding {
        subscription: sub.clone(),
        max_executions: max.unwrap_or(1),
    }))
}

/// Applies `runlet jobs create|update` flags to a job's annotations: `subscription`
/// binds (or rebinds), `max_executions` sets the limit, `clear` unbinds. Checked with the
/// flag named; the result is a valid binding or none.
pub fn apply_flags(
    a: &mut BTreeMap<String, String>,
    subscription: Option<&str>,
    max_executions: Option<&str>,
    clear: bool,
) -> Result<(), SpecError> {
    if clear {
        if max_executions.is_some() {
            return Err(bad(
                "--max-executions",
                "cannot be given with --clear-pubsub-subscription",
            ));
        }
        a.remove(SUBSCRIPTION);
        a.remove(MAX_EXECUTIONS);
        return Ok(());
    }
    if let Some(s) = subscription {
        check_subscription("--pubsub-subscription", s)?;
        a.insert(SUBSCRIPTION.into(), s.into());
    }
    if let Some(m) = max_executions {
        match m.parse::<u32>() {
            Ok(n) if (1..=MAX_MAX_EXECUTIONS).contains(&n) => {
                a.insert(MAX_EXECUTIONS.into(), n.to_string());
            }
            _ => {
                return Err(bad(
                    "--max-executions",
                    format!("{m:?} is not a number from 1 to {MAX_MAX_EXECUTIONS}"),
                ))
            }
        }
        if !a.contains_key(SUBSCRIPTION) {
            return Err(bad(
                "--max-executions",
                "needs --pubsub-subscription (the job is not bound to a subscription)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_to_binding() {
        let sub = "projects/p-1/subscriptions/work-queue";
        // (annotations, the binding, or a word of the refused field)
        type Case<'a> = (
            &'a [(&'a str, &'a str)],
            Result<Option<(&'a str, u32)>, &'a str>,
        );
        let cases: &[Case] = &[
            (&[], Ok(None)),
            (&[("other", "x")], Ok(None)),
            (&[(SUBSCRIPTION, sub)], Ok(Some((sub, 1)))),
            (
                &[(SUBSCRIPTION, sub), (MAX_EXECUTIONS, "4")],
                Ok(Some((sub, 4))),
            ),
            (
                &[(SUBSCRIPTION, sub), (MAX_EXECUTIONS, "0")],
                Err("max-executions"),
            ),
            (
                &[(SUBSCRIPTION, sub), (MAX_EXECUTIONS, "101")],
                Err("max-executions"),
            ),
            (
                &[(SUBSCRIPTION, sub), (MAX_EXECUTIONS, "x")],
                Err("max-executions"),
            ),
            (&[(MAX_EXECUTIONS, "2")], Err("max-executions")),
            (&[(SUBSCRIPTION, "work-queue")], Err("pubsub-subscription")),
            (
                &[(SUBSCRIPTION, "projects/p/topics/work")],
                Err("pubsub-subscription"),
            ),
            (
                &[(SUBSCRIPTION, "projects/p/subscriptions/ab")],
                Err("pubsub-subscription"),
            ),
            (
                &[(SUBSCRIPTION, "projects/p/subscriptions/1abc")],
                Err("pubsub-subscription"),
            ),
            (
                &[(SUBSCRIPTION, "projects//subscriptions/abc")],
                Err("pubsub-subscription"),
            ),
            (
                &[(SUBSCRIPTION, "projects/p/subscriptions/a b c")],
                Err("pubsub-subscription"),
            ),
        ];
        for (a, want) in cases {
            let got = from_annotations(&ann(a));
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(
                    g,
                    w.map(|(s, n)| Binding {
                        subscription: s.into(),
                        max_executions: n
                    }),
                    "{a:?}"
                ),
                (Err(e), Err(w)) => assert!(e.field.contains(w), "{a:?}: {e}"),
                (g, w) => panic!("{a:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn flags_to_annotations() {
        let sub = "projects/p/subscriptions/work";
        let mut a = BTreeMap::new();
        apply_flags(&mut a, Some(sub), None, false).unwrap();
        assert_eq!(from_annotations(&a).unwrap().unwrap().max_executions, 1);
        apply_flags(&mut a, None, Some("3"), false).unwrap();
        assert_eq!(
            from_annotations(&a).unwrap(),
            Some(Binding {
                subscription: sub.into(),
                max_executions: 3
            })
        );
        let e = apply_flags(&mut a, None, Some("0"), false).unwrap_err();
        assert_eq!(e.field, "--max-executions");
        let e = apply_flags(&mut a, Some("work"), None, false).unwrap_err();
        assert_eq!(e.field, "--pubsub-subscription");
        apply_flags(&mut a, None, None, true).unwrap();
        assert!(a.is_empty());
        let e = apply_flags(&mut a, None, Some("2"), false).unwrap_err();
        assert!(e.detail.contains("needs --pubsub-subscription"), "{e}");
        let e = apply_flags(&mut a, None, Some("2"), true).unwrap_err();
        assert_eq!(e.field, "--max-executions");
    }
}
