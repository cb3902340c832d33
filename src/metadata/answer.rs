//! A metadata request to its answer, as Google's metadata server gives it: plain functions.
//!
//! - Without `Metadata-Flavor: Google` → 403; with `X-Forwarded-For` → 403 (Google refuses
//!   requests that look proxied).
//! - A value (`project/project-id`) answers as text; `?alt=json` JSON-encodes it.
//! - A directory (`instance/`) lists its entries, one a line, directories ending in `/`;
//!   `?recursive=true` answers the whole subtree as JSON with camelCase keys (`?alt=text`:
//!   one `path value` line per value). A directory without its final `/` → 301 to it.
//! - `?wait_for_change=true` → 400: nothing here changes during an instance's life.
//! - `.../service-accounts/{default,EMAIL}/token` and `.../identity?audience=` need the token
//!   source and the signing key: [`Reply::Token`] and [`Reply::IdToken`] say so, the server
//!   fulfils them.

use serde_json::{json, Map, Value};

use super::{instance_id, numeric_project_id, Instance, SCOPES};

/// Where the JWKS of runlet's ID tokens is published (no header needed).
pub const JWKS_PATH: &str = "/runlet/v1/jwks";

/// What the server needs of a request.
#[derive(Debug, Clone, Default)]
pub struct Req<'a> {
    pub path: &'a str,
    pub query: Vec<(String, String)>,
    /// `Metadata-Flavor: Google` present.
    pub flavor: bool,
    /// `X-Forwarded-For` present.
    pub forwarded: bool,
}

impl Req<'_> {
    fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.param(k), Some("true" | "True" | "1" | ""))
    }
}

/// The answer, or what the server must still do.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Status, content type, body.
    Done(u16, &'static str, String),
    /// Redirect (301) to this location.
    Moved(String),
    /// The service account's access token.
    Token,
    /// An ID token for this audience.
    IdToken { audience: String },
    /// The JWKS of the ID tokens.
    Jwks,
}

const TEXT: &str = "application/text";
const JSON: &str = "application/json";

fn text(status: u16, body: impl Into<String>) -> Reply {
    Reply::Done(status, TEXT, body.into())
}

/// The metadata of `inst`, with Google's path names (kebab-case).
pub fn tree(inst: &Instance) -> Value {
    let id = &inst.identity;
    let num = numeric_project_id(&id.project_id);
    let sa = json!({
        "aliases": ["default"],
        "email": id.service_account,
        "scopes": SCOPES,
    });
    let mut accounts = Map::new();
    accounts.insert("default".into(), sa.clone());
    accounts.insert(id.service_account.clone(), sa);
    json!({
        "instance": {
            "id": instance_id(&inst.container_id),
            "region": format!("projects/{num}/regions/{}", id.region),
            "zone": format!("projects/{num}/zones/{}-1", id.region),
            "service-accounts": accounts,
        },
        "project": {
            "project-id": id.project_id,
            "numeric-project-id": num,
        },
    })
}

/// `project-id` → `projectId`, as Google's recursive JSON names keys.
fn camel(key: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in key.chars() {
        if c == '-' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn camel_tree(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                // Emails are keys too: only rename Google's own names.
                .map(|(k, v)| {
                    (
                        if k.contains('@') { k.clone() } else { camel(k) },
                        camel_tree(v),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A value as text: strings bare, numbers in decimal, lists one item a line.
fn leaf_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(|x| format!("{}\n", leaf_text(x))).collect(),
        other => other.to_string(),
    }
}

/// `path value` lines of a subtree (`?recursive=true&alt=text`).
fn flat_text(prefix: &str, v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}/{k}")
                };
                flat_text(&p, v, out);
            }
        }
        Value::Array(a) => {
            for x in a {
                out.push_str(&format!("{prefix} {}\n", leaf_text(x)));
            }
        }
        other => out.push_str(&format!("{prefix} {}\n", leaf_text(other))),
    }
}

/// Answers `req` for `inst` (`None`: the source address is no instance of this runlet).
pub fn answer(req: &Req<'_>, inst: Option<&Instance>) -> Reply {
    if req.path == JWKS_PATH {
        return Reply::Jwks;
    }
    if req.forwarded {
        return text(403, "Request denied: X-Forwarded-For requests are refused (as by Google's metadata server).\n");
    }
    if !req.flavor {
        return text(
            403,
            "Missing required header \"Metadata-Flavor\": \"Google\"\n",
        );
    }
    let Some(inst) = inst else {
        return text(
            403,
            "This address is no instance or job task of this runlet.\n",
        );
    };
    if req.flag("wait_for_change") {
        return text(400, "wait_for_change is not supported by runlet's metadata server: nothing it serves changes during an instance's life; ask without it.\n");
    }
    let rest = match req.path {
        "/" | "" => return text(200, "computeMetadata/\n"),
        "/computeMetadata" => return Reply::Moved("/computeMetadata/".into()),
        "/computeMetadata/" => return text(200, "v1/\n"),
        "/computeMetadata/v1" => return Reply::Moved("/computeMetadata/v1/".into()),
        p => match p.strip_prefix("/computeMetadata/v1/") {
            Some(r) => r,
            None => return text(404, "Not found\n"),
        },
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let dir = rest.is_empty() || rest.ends_with('/');
    // service-accounts/ACCOUNT/{token,identity}
    if let ["instance", "service-accounts", acct, last] = segs.as_slice() {
        let t = tree(inst);
        if t["instance"]["service-accounts"].get(*acct).is_none() {
            return text(404, "Not found\n");
        }
        match *last {
            "token" if !dir => return Reply::Token,
            "identity" if !dir => {
                return match req.param("audience") {
                    Some(a) if !a.is_empty() => Reply::IdToken {
                        audience: a.to_string(),
                    },
                    _ => text(400, "non-empty audience parameter required\n"),
                }
            }
            _ => {}
        }
    }
    let t = tree(inst);
    let mut node = &t;
    for s in &segs {
        match node.get(*s) {
            Some(n) if node.is_object() => node = n,
            _ => return text(404, "Not found\n"),
        }
    }
    let json_alt = match req.param("alt") {
        None => None,
        Some("json") => Some(true),
        Some("text") => Some(false),
        Some(other) => {
            return text(
                400,
                format!("Invalid alt parameter {other:?}: json or text\n"),
            )
        }
    };
    match node {
        Value::Object(m) => {
            if !dir {
                return Reply::Moved(format!("{}/", req.path));
            }
            if req.flag("recursive") {
                if json_alt == Some(false) {
                    let mut out = String::new();
                    flat_text("", node, &mut out);
                    return text(200, out);
                }
                return Reply::Done(200, JSON, camel_tree(node).to_string());
            }
            let names: Vec<String> = m
                .iter()
                .map(|(k, v)| {
                    if v.is_object() {
                        format!("{k}/")
                    } else {
                        k.clone()
                    }
                })
                .collect();
            if json_alt == Some(true) {
                return Reply::Done(200, JSON, Value::from(names).to_string());
            }
            text(
                200,
                names.iter().map(|n| format!("{n}\n")).collect::<String>(),
            )
        }
        leaf => {
            if dir {
                return text(404, "Not found\n");
            }
            if json_alt == Some(true) {
                return Reply::Done(200, JSON, leaf.to_string());
            }
            text(200, leaf_text(leaf))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metadata::Identity;

    fn inst() -> Instance {
        Instance {
            container_id: "svc-00001-abc-x1".into(),
            identity: Arc::new(Identity::new(
                Some("p1"),
                Some("europe-west1"),
                Some("sa@p1.iam.gserviceaccount.com"),
            )),
        }
    }

    fn get(path: &str, query: &[(&str, &str)]) -> Reply {
        let r = Req {
            path,
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flavor: true,
            forwarded: false,
        };
        answer(&r, Some(&inst()))
    }

    fn body(r: Reply) -> (u16, String) {
        match r {
            Reply::Done(s, _, b) => (s, b),
            other => panic!("{other:?}"),
        }
    }

    /// Path, query, status, body.
    type Case = (&'static str, Vec<(&'static str, &'static str)>, u16, String);

    #[test]
    fn values_and_errors() {
        let num = numeric_project_id("p1");
        let iid = instance_id("svc-00001-abc-x1");
        let cases: Vec<Case> = vec![
            (
                "/computeMetadata/v1/project/project-id",
                vec![],
                200,
                "p1".into(),
            ),
            (
                "/computeMetadata/v1/project/project-id",
                vec![("alt", "json")],
                200,
                "\"p1\"".into(),
            ),
            (
                "/computeMetadata/v1/project/numeric-project-id",
                vec![],
                200,
                num.to_string(),
            ),
            (
                "/computeMetadata/v1/instance/region",
                vec![],
                200,
                format!("projects/{num}/regions/europe-west1"),
            ),
            (
                "/computeMetadata/v1/instance/zone",
                vec![],
                200,
                format!("projects/{num}/zones/europe-west1-1"),
            ),
            (
                "/computeMetadata/v1/instance/id",
                vec![],
                200,
                iid.to_string(),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/default/email",
                vec![],
                200,
                "sa@p1.iam.gserviceaccount.com".into(),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/sa@p1.iam.gserviceaccount.com/email",
                vec![],
                200,
                "sa@p1.iam.gserviceaccount.com".into(),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/default/scopes",
                vec![],
                200,
                "https://www.googleapis.com/auth/cloud-platform\n".into(),
            ),
            (
                "/computeMetadata/v1/project/",
                vec![],
                200,
                "numeric-project-id\nproject-id\n".into(),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/",
                vec![],
                200,
                "default/\nsa@p1.iam.gserviceaccount.com/\n".into(),
            ),
            (
                "/computeMetadata/v1/project/",
                vec![("recursive", "true"), ("alt", "text")],
                200,
                format!("numeric-project-id {num}\nproject-id p1\n"),
            ),
            (
                "/computeMetadata/v1/project/nothing",
                vec![],
                404,
                "Not found\n".into(),
            ),
            (
                "/computeMetadata/v1/project/project-id/",
                vec![],
                404,
                "Not found\n".into(),
            ),
            ("/computeMetadata/v2/", vec![], 404, "Not found\n".into()),
            (
                "/computeMetadata/v1/project/project-id",
                vec![("alt", "xml")],
                400,
                "Invalid alt parameter \"xml\": json or text\n".into(),
            ),
            ("/", vec![], 200, "computeMetadata/\n".into()),
            (
                "/computeMetadata/v1/instance/service-accounts/other@x/token",
                vec![],
                404,
                "Not found\n".into(),
            ),
            (
                "/computeMetadata/v1/instance/service-accounts/default/identity",
                vec![],
                400,
                "non-empty audience parameter required\n".into(),
            ),
        ];
        for (path, q, status, want) in cases {
            assert_eq!(body(get(path, &q)), (status, want), "{path} {q:?}");
        }
    }

    #[test]
    fn recursive_json_as_google_auth_reads_it() {
        let (s, b) = body(get(
            "/computeMetadata/v1/instance/service-accounts/default/",
            &[("recursive", "true")],
        ));
        assert_eq!(s, 200);
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["email"], "sa@p1.iam.gserviceaccount.com");
        assert_eq!(
            v["scopes"][0],
            "https://www.googleapis.com/auth/cloud-platform"
        );
        assert_eq!(v["aliases"][0], "default");
        let (_, b) = body(get("/computeMetadata/v1/", &[("recursive", "true")]));
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["project"]["projectId"], "p1");
        assert_eq!(v["project"]["numericProjectId"], numeric_project_id("p1"));
        assert!(v["instance"]["serviceAccounts"]["sa@p1.iam.gserviceaccount.com"].is_object());
    }

    #[test]
    fn tokens_redirects_and_refusals() {
        let sa = "/computeMetadata/v1/instance/service-accounts/default";
        assert_eq!(get(&format!("{sa}/token"), &[]), Reply::Token);
        assert_eq!(
            get(&format!("{sa}/token"), &[("scopes", "x")]),
            Reply::Token
        );
        assert_eq!(
            get(
                &format!("{sa}/identity"),
                &[("audience", "https://a.example")]
            ),
            Reply::IdToken {
                audience: "https://a.example".into()
            }
        );
        assert_eq!(get(sa, &[]), Reply::Moved(format!("{sa}/")));
        assert_eq!(
            get("/computeMetadata/v1", &[]),
            Reply::Moved("/computeMetadata/v1/".into())
        );
        assert_eq!(
            body(get(
                "/computeMetadata/v1/project/project-id",
                &[("wait_for_change", "true")]
            ))
            .0,
            400
        );
        let i = inst();
        let mut r = Req {
            path: "/computeMetadata/v1/project/project-id",
            ..Default::default()
        };
        assert_eq!(body(answer(&r, Some(&i))).0, 403, "no header");
        r.flavor = true;
        r.forwarded = true;
        assert_eq!(body(answer(&r, Some(&i))).0, 403, "forwarded");
        r.forwarded = false;
        assert_eq!(body(answer(&r, None)).0, 403, "unknown source");
        assert_eq!(
            answer(
                &Req {
                    path: JWKS_PATH,
                    ..Default::default()
                },
                None
            ),
            Reply::Jwks
        );
    }
}
