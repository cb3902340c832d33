//! The list tables, gcloud's columns: `services list`, `revisions list`, and the services in
//! `status`. The first column is the readiness mark, with no header.

use runlet::pb::run_v2 as v2;

use super::{region, short, time_rfc3339, time_utc, Readiness};

/// Columns padded to their widest cell, two spaces apart, one line per row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    // At least one column wide: the marks' column has an empty header.
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count().max(1)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            out.push_str(&" ".repeat(pad));
        }
        let mut out = out.trim_end().to_string();
        out.push('\n');
        out
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `runlet services list`.
pub fn services(list: &[v2::Service]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                Readiness::of_service(s).mark().to_string(),
                short(&s.name).to_string(),
                region(&s.name).to_string(),
                s.uri.clone(),
                s.last_modifier.clone(),
                time_rfc3339(s.update_time.as_ref()),
            ]
        })
        .collect();
    table(
        &[
            "",
            "SERVICE",
            "REGION",
            "URL",
            "LAST DEPLOYED BY",
            "LAST DEPLOYED AT",
        ],
        &rows,
    )
}

/// `runlet revisions list`: ACTIVE is `yes` for the revision its service serves (its latest
/// ready one); DEPLOYED BY falls back to the service's last modifier.
pub fn revisions(list: &[v2::Revision], services: &[v2::Service]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let svc = services.iter().find(|s| s.name == r.service);
            let active = svc.is_some_and(|s| s.latest_ready_revision == r.name);
            let by = if r.creator.is_empty() {
                svc.map(|s| s.last_modifier.clone()).unwrap_or_default()
            } else {
                r.creator.clone()
            };
            vec![
                Readiness::of_revision(r).mark().to_string(),
                short(&r.name).to_string(),
                if active { "yes" } else { "" }.to_string(),
                short(&r.service).to_string(),
                time_utc(r.create_time.as_ref()),
                by,
            ]
        })
        .collect();
    table(
        &[
            "",
            "REVISION",
            "ACTIVE",
            "SERVICE",
            "DEPLOYED",
            "DEPLOYED BY",
        ],
        &rows,
    )
}

/// The services in `runlet status`: name, ready, URL, serving revision.
pub fn status_services(list: &[v2::Service]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let r = Readiness::of_service(s);
            vec![
                r.mark().to_string(),
                short(&s.name).to_string(),
                match r {
                    Readiness::Ready => "yes",
                    Readiness::Failed => "no",
                    Readiness::Pending => "deploying",
                }
                .to_string(),
                s.uri.clone(),
                short(&s.latest_ready_revision).to_string(),
            ]
        })
        .collect();
    table(&["", "SERVICE", "READY", "URL", "REVISION"], &rows)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use runlet::pb::run_v2::condition::State;
    use runlet::pb::timestamp::Timestamp;

    fn ready(state: State) -> Option<v2::Condition> {
        Some(v2::Condition {
            r#type: "Ready".into(),
            state: state as i32,
            ..Default::default()
        })
    }

    const P: &str = "projects/local/locations/local/services";

    pub(crate) fn hello() -> v2::Service {
        v2::Service {
            name: format!("{P}/hello"),
            uri: "http://hello.localhost:8080".into(),
            last_modifier: "runlet".into(),
            update_time: Some(Timestamp {
                seconds: 1_714_564_800,
                nanos: 0,
            }),
            terminal_condition: ready(State::ConditionSucceeded),
            latest_ready_revision: format!("{P}/hello/revisions/hello-00002-abc"),
            ..Default::default()
        }
    }

    fn broken() -> v2::Service {
        v2::Service {
            name: format!("{P}/broken-one"),
            last_modifier: "runlet".into(),
            terminal_condition: ready(State::ConditionFailed),
            ..Default::default()
        }
    }

    #[test]
    fn services_table() {
        assert_eq!(
            services(&[hello(), broken()]),
            concat!(
                "   SERVICE     REGION  URL                          LAST DEPLOYED BY  LAST DEPLOYED AT\n",
                "✔  hello       local   http://hello.localhost:8080  runlet            2024-05-01T12:00:00.000000Z\n",
                "✘  broken-one  local                                runlet\n",
            )
        );
        assert_eq!(
            services(&[]),
            "   SERVICE  REGION  URL  LAST DEPLOYED BY  LAST DEPLOYED AT\n"
        );
    }

    #[test]
    fn revisions_table() {
        let rev = |id: &str, state: State| v2::Revision {
            name: format!("{P}/hello/revisions/{id}"),
            service: format!("{P}/hello"),
            create_time: Some(Timestamp {
                seconds: 1_714_564_800,
                nanos: 0,
            }),
            conditions: ready(state).into_iter().collect(),
            ..Default::default()
        };
        let list = [
            rev("hello-00003-xyz", State::ConditionFailed),
            rev("hello-00002-abc", State::ConditionSucceeded),
            rev("hello-00001-def", State::ConditionSucceeded),
        ];
        assert_eq!(
            revisions(&list, &[hello()]),
            concat!(
                "   REVISION         ACTIVE  SERVICE  DEPLOYED                 DEPLOYED BY\n",
                "✘  hello-00003-xyz          hello    2024-05-01 12:00:00 UTC  runlet\n",
                "✔  hello-00002-abc  yes     hello    2024-05-01 12:00:00 UTC  runlet\n",
                "✔  hello-00001-def          hello    2024-05-01 12:00:00 UTC  runlet\n",
            )
        );
    }

    #[test]
    fn status_table() {
        let mut deploying = hello();
        deploying.name = format!("{P}/new");
        deploying.uri.clear();
        deploying.latest_ready_revision.clear();
        deploying.terminal_condition = ready(State::ConditionReconciling);
        assert_eq!(
            status_services(&[hello(), deploying]),
            concat!(
                "   SERVICE  READY      URL                          REVISION\n",
                "✔  hello    yes        http://hello.localhost:8080  hello-00002-abc\n",
                "…  new      deploying\n",
            )
        );
    }
}
