//! Presenting results: the terminal table, JSON, and the generated sections of
//! docs/conformance.md.
//!
//! The generated sections hold no durations and no failure details (both vary from run to
//! run), so a committed docs/conformance.md is reproducible: `--check-doc` regenerates the
//! sections and fails when the file differs.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::contract::Contract;
use crate::runner::{Outcome, Row};
use crate::selftest::{Mangle, Verdict};

/// One line of the self-test's table.
#[derive(Debug, Clone)]
pub struct SelfTestRow {
    pub id: String,
    pub mangle: Mangle,
    pub honest: Outcome,
    pub broken: Outcome,
    pub verdict: Verdict,
}

fn duration_cell(r: &Row) -> String {
    r.duration
        .map(|d| format!("{:.1}s", d.as_secs_f64()))
        .unwrap_or_default()
}

/// The terminal table: clause, check, result, duration, detail.
pub fn table(rows: &[Row]) -> String {
    let head = ["CLAUSE", "CHECK", "RESULT", "TIME"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.clause.clone(),
                r.check.clone().unwrap_or_else(|| "-".into()),
                r.outcome.word().to_string(),
                duration_cell(r),
            ]
        })
        .collect();
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, cell) in c.iter().enumerate() {
            w[i] = w[i].max(cell.len());
        }
    }
    let mut out = format!(
        "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  DETAIL\n",
        head[0],
        head[1],
        head[2],
        head[3],
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3]
    );
    for (c, r) in cells.iter().zip(rows) {
        out.push_str(
            format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {}",
                c[0],
                c[1],
                c[2],
                c[3],
                r.outcome.detail(),
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3]
            )
            .trim_end(),
        );
        out.push('\n');
    }
    out.push_str(&summary(rows));
    out.push('\n');
    out
}

/// `N checks: P PASS, F FAIL; S SKIP`.
pub fn summary(rows: &[Row]) -> String {
    let count = |w: &str| rows.iter().filter(|r| r.outcome.word() == w).count();
    let ran = rows.iter().filter(|r| r.duration.is_some()).count();
    format!(
        "{ran} checks run: {} PASS, {} FAIL; {} SKIP (reasons in contract/clauses.toml)",
        count("PASS"),
        count("FAIL"),
        count("SKIP")
    )
}

/// The self-test's terminal table.
pub fn selftest_table(rows: &[SelfTestRow]) -> String {
    let w = rows.iter().map(|r| r.id.len()).max().unwrap_or(5).max(5);
    let mut out = format!("{:<w$}  RUNLET  BROKEN  VERDICT\n", "CHECK");
    for r in rows {
        out.push_str(&format!(
            "{:<w$}  {:<6}  {:<6}  {}\n",
            r.id,
            r.honest.word(),
            r.broken.word(),
            r.verdict
        ));
    }
    out.push_str(&selftest_summary(rows));
    out.push('\n');
    out
}

fn selftest_summary(rows: &[SelfTestRow]) -> String {
    let n = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    format!(
        "self-test: {} checks against a broken runlet: {} caught, {} inconclusive, {} defects",
        rows.len(),
        n(Verdict::Caught),
        n(Verdict::Inconclusive),
        n(Verdict::Defect)
    )
}

fn outcome_json(o: &Outcome) -> Value {
    json!({"result": o.word(), "detail": (!o.detail().is_empty()).then(|| o.detail())})
}

/// Machine-readable results.
pub fn json(contract: &Contract, rows: &[Row], selftest: Option<&[SelfTestRow]>) -> Value {
    let results: Vec<Value> = rows
        .iter()
        .map(|r| {
            let clause = contract.get(&r.clause);
            json!({
                "id": r.id(),
                "clause": r.clause,
                "check": r.check,
                "level": clause.map(|c| c.level.to_string()),
                "applies": clause.map(|c| c.applies.to_string()),
                "verifies": (!r.verifies.is_empty()).then_some(&r.verifies),
                "result": r.outcome.word(),
                "detail": (!r.outcome.detail().is_empty()).then(|| r.outcome.detail()),
                "duration_ms": r.duration.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    let count = |w: &str| rows.iter().filter(|r| r.outcome.word() == w).count();
    let mut v = json!({
        "summary": {"pass": count("PASS"), "fail": count("FAIL"), "skip": count("SKIP")},
        "results": results,
    });
    if let Some(st) = selftest {
        v["self_test"] = st
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "broken_runlet": r.mangle.describe(),
                    "runlet": outcome_json(&r.honest),
                    "broken": outcome_json(&r.broken),
                    "verdict": r.verdict.to_string(),
                })
            })
            .collect();
    }
    v
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The suite's section of docs/conformance.md (without its markers): the per-check table
/// and a per-clause summary. No durations, no failure details.
pub fn doc_suite(contract: &Contract, rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(&format!("{}.\n\n", summary(rows)));
    out.push_str("| Clause | Check | What it verifies | Result |\n|---|---|---|---|\n");
    for r in rows {
        let check = match &r.check {
            Some(c) => format!("`{c}`"),
            None => "—".into(),
        };
        let verifies = if r.verifies.is_empty() {
            "—".to_string()
        } else {
            md(&r.verifies)
        };
        let result = match &r.outcome {
            Outcome::Skip(reason) => format!("SKIP: {}", md(reason)),
            o => o.word().to_string(),
        };
        out.push_str(&format!(
            "| {} | {check} | {verifies} | {result} |\n",
            r.clause
        ));
    }
    out.push_str("\nBy clause:\n\n| Clause | Level | Applies to | Statement | Results |\n|---|---|---|---|---|\n");
    let mut by: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by.entry(r.clause.as_str()).or_default().push(r);
    }
    for c in &contract.clauses {
        let Some(rs) = by.get(c.id.as_str()) else {
            continue;
        };
        let n = |w: &str| rs.iter().filter(|r| r.outcome.word() == w).count();
        let results: Vec<String> = [
            ("PASS", n("PASS")),
            ("FAIL", n("FAIL")),
            ("SKIP", n("SKIP")),
        ]
        .iter()
        .filter(|(_, k)| *k > 0)
        .map(|(w, k)| format!("{k} {w}"))
        .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            c.id,
            c.level,
            c.applies,
            md(&c.statement),
            results.join(", ")
        ));
    }
    out
}

/// The self-test's section of docs/conformance.md (without its markers).
pub fn doc_selftest(rows: &[SelfTestRow]) -> String {
    let mut out = format!("{}.\n\n", selftest_summary(rows));
    out.push_str("| Check | The broken runlet | Against runlet | Against the broken runlet | Verdict |\n|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            r.id,
            md(r.mangle.describe()),
            r.honest.word(),
            r.broken.word(),
            r.verdict
        ));
    }
    out
}

fn begin_marker(name: &str) -> String {
    format!(
        "<!-- BEGIN GENERATED {name}: written by runlet-conformance --write-doc; do not edit -->"
    )
}

fn end_marker(name: &str) -> String {
    format!("<!-- END GENERATED {name} -->")
}

/// `doc` with the generated section `name` replaced by `body` (appended when absent).
pub fn replace_section(doc: &str, name: &str, body: &str) -> String {
    let begin_prefix = format!("<!-- BEGIN GENERATED {name}:");
    let end = end_marker(name);
    let block = format!("{}\n{}{}\n", begin_marker(name), body, end);
    if let (Some(b), Some(e)) = (doc.find(&begin_prefix), doc.find(&end)) {
        if b < e {
            let mut after = e + end.len();
            if doc[after..].starts_with('\n') {
                after += 1;
            }
            return format!("{}{}{}", &doc[..b], block, &doc[after..]);
        }
    }
    let mut out = doc.to_string();
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
    }
    out.push_str(&block);
    out
}

/// The first line where `a` and `b` differ (1-based), with both versions, for
/// `--check-doc`.
pub fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    let (mut la, mut lb) = (a.lines(), b.lines());
    let mut n = 0;
    loop {
        n += 1;
        match (la.next(), lb.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (x, y) => {
                return Some((
                    n,
                    x.unwrap_or("(end of file)").to_string(),
                    y.unwrap_or("(end of file)").to_string(),
                ))
            }
        }
    }
}

/// docs/conformance.md when it does not exist yet: an introduction, then the sections.
pub const DOC_TEMPLATE: &str =
    "# Conformance\n\nGenerated by `runlet-conformance`; see its `--help`.\n";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(clause: &str, check: Option<&str>, o: Outcome, d: Option<u64>) -> Row {
        Row {
            clause: clause.into(),
            check: check.map(str::to_string),
            verifies: if d.is_some() {
                "does a | b".into()
            } else {
                String::new()
            },
            outcome: o,
            duration: d.map(Duration::from_millis),
        }
    }

    #[test]
    fn sections_replace_in_place_and_append() {
        let doc = "# T\n\nintro\n";
        let once = replace_section(doc, "suite", "table v1\n");
        assert!(once.starts_with("# T\n\nintro\n\n<!-- BEGIN GENERATED suite:"));
        assert!(once.ends_with("table v1\n<!-- END GENERATED suite -->\n"));
        let with_tail = format!("{once}\n## After\n");
        let twice = replace_section(&with_tail, "suite", "table v2\n");
        assert!(twice.contains("table v2\n<!-- END GENERATED suite -->\n\n## After\n"));
        assert!(!twice.contains("v1"));
        let both = replace_section(&twice, "self-test", "st\n");
        assert_eq!(replace_section(&both, "self-test", "st\n"), both);
        assert!(both.contains("## After"));
    }

    #[test]
    fn doc_has_no_durations_or_failure_details() {
        let c = Contract::embedded().unwrap();
        let rows = vec![
            row("IMG-1", Some("a"), Outcome::Pass, Some(1234)),
            row(
                "IMG-1",
                Some("b"),
                Outcome::Fail("port 40123 in use".into()),
                Some(99),
            ),
            row(
                "PORT-1",
                Some("sidecars"),
                Outcome::Skip("no sidecars".into()),
                None,
            ),
            row(
                "SBX-1",
                None,
                Outcome::Skip("not applicable: gVisor".into()),
                None,
            ),
        ];
        let d = doc_suite(&c, &rows);
        assert!(!d.contains("1.2") && !d.contains("40123"), "{d}");
        assert!(d.contains("| IMG-1 | `b` | does a \\| b | FAIL |"), "{d}");
        assert!(
            d.contains("| SBX-1 | — | — | SKIP: not applicable: gVisor |"),
            "{d}"
        );
        assert!(d.contains("| IMG-1 | MUST | both |"), "{d}");
        assert!(d.contains("1 PASS, 1 FAIL"), "{d}");
        let t = table(&rows);
        assert!(t.contains("1.2s") && t.contains("port 40123 in use"), "{t}");
    }

    #[test]
    fn differences() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        assert_eq!(
            first_difference("a\nb\n", "a\nc\n"),
            Some((2, "b".into(), "c".into()))
        );
        assert_eq!(
            first_difference("a\n", "a\nc\n"),
            Some((2, "(end of file)".into(), "c".into()))
        );
    }
}
