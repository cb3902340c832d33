//! Kubernetes label selectors, as gcloud sends them in v1 list calls' `labelSelector`
//! (`serving.knative.dev/service = hello`, `k in (a,b)`, `k != v`, `k`, `!k`, joined by
//! commas): parsed once, then matched against a resource's labels.

use std::collections::BTreeMap;

use tonic::Status;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A parsed selector; every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selector(Vec<Req>);

/// Splits at commas outside parentheses.
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(v: &str) -> Option<Vec<String>> {
    let inner = v.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    )
}

impl Selector {
    /// Parses a selector; empty selects everything.
    pub(crate) fn parse(s: &str) -> Result<Selector, Status> {
        let bad = |t: &str| {
            Status::invalid_argument(format!(
                "invalid labelSelector term {t:?}: expected KEY = VALUE, KEY != VALUE, KEY in (A,B), KEY notin (A,B), KEY or !KEY"
            ))
        };
        let mut reqs = Vec::new();
        for t in terms(s) {
            let t = t.trim();
            if t.is_empty() {
                continue;
            }
            let req = if let Some((k, v)) = t.split_once("!=") {
                Req::NotIn(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Req::In(k.trim().into(), vec![v.trim().into()])
            } else if let Some((k, v)) = t.split_once(" notin ") {
                Req::NotIn(k.trim().into(), set(v).ok_or_else(|| bad(t))?)
            } else if let Some((k, v)) = t.split_once(" in ") {
                Req::In(k.trim().into(), set(v).ok_or_else(|| bad(t))?)
            } else if let Some(k) = t.strip_prefix('!') {
                Req::Absent(k.trim().into())
            } else if !t.contains(char::is_whitespace) && !t.contains(['(', ')']) {
                Req::Exists(t.into())
            } else {
                return Err(bad(t));
            };
            match &req {
                Req::In(k, _) | Req::NotIn(k, _) | Req::Exists(k) | Req::Absent(k)
                    if k.is_empty() =>
                {
                    return Err(bad(t))
                }
                _ => {}
            }
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub(crate) fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::Absent(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_labels() {
        let labels: BTreeMap<String, String> = [
            ("serving.knative.dev/service", "hello"),
            ("run.googleapis.com/taskState", "running"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (sel, want) in [
            ("", true),
            ("serving.knative.dev/service = hello", true),
            ("serving.knative.dev/service=hello", true),
            ("serving.knative.dev/service == hello", true),
            ("serving.knative.dev/service = other", false),
            ("serving.knative.dev/service != other", true),
            ("serving.knative.dev/service != hello", false),
            ("run.googleapis.com/taskState in (running,failed)", true),
            ("run.googleapis.com/taskState in (succeeded, failed)", false),
            ("run.googleapis.com/taskState notin (succeeded)", true),
            (
                "serving.knative.dev/service = hello,run.googleapis.com/taskState in (running)",
                true,
            ),
            ("serving.knative.dev/service", true),
            ("!serving.knative.dev/service", false),
            ("missing != x", true),
        ] {
            assert_eq!(
                Selector::parse(sel).unwrap().matches(&labels),
                want,
                "{sel:?}"
            );
        }
        for bad in ["k in a,b", "a b", "= v"] {
            assert!(Selector::parse(bad).is_err(), "{bad:?}");
        }
    }
}
