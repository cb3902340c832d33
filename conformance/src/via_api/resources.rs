//! The checks' settings, written as `runlet serve` / `runlet job execute` flags (which are
//! `gcloud run deploy` / `gcloud run jobs` flags), as the Admin API v2's `Service` and `Job`
//! resources in their JSON form. A flag the API has no field for is an error naming it: a
//! check that needs one is listed as runlet-only in `contract/clauses.toml`.

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Map, Value};

/// Flags that take no value.
const SWITCHES: &[&str] = &["--use-http2", "--cpu-throttling"];

/// Flags the driver itself honours (or needs not), with no field in the resource.
const DRIVER_FLAGS: &[&str] = &["--metrics-listen"];

/// `args` as (flag, value) pairs; a switch gets an empty value.
fn pairs<'a>(args: &[&'a str]) -> Result<Vec<(&'a str, &'a str)>> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !flag.starts_with("--") {
            bail!("unexpected argument {flag:?} (want --flag value)");
        }
        if SWITCHES.contains(flag) {
            out.push((*flag, ""));
            continue;
        }
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        out.push((*flag, *value));
    }
    Ok(out)
}

/// A gcloud list: comma-separated, or `^D^a D b` with another delimiter D.
pub fn list(v: &str) -> Vec<String> {
    if let Some(rest) = v.strip_prefix('^') {
        if let Some((delim, items)) = rest.split_once('^') {
            if !delim.is_empty() {
                return items.split(delim).map(str::to_string).collect();
            }
        }
    }
    if v.is_empty() {
        return Vec::new();
    }
    v.split(',').map(str::to_string).collect()
}

/// `k=v,k2=v2` (as `list`) as an ordered map.
fn key_values(flag: &str, v: &str) -> Result<Vec<(String, String)>> {
    list(v)
        .into_iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("{flag}: {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

/// `30`, `30s`, `2m`, `1h` as the API's duration string (`30s`).
pub fn duration(flag: &str, v: &str) -> Result<String> {
    let (num, unit) = match v.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("{flag}: {v:?} is not a duration"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("{flag}: {v:?} is not a duration (want s, m or h)"),
    };
    Ok(format!("{secs}s"))
}

fn int(flag: &str, v: &str) -> Result<i64> {
    v.parse()
        .map_err(|_| anyhow!("{flag}: {v:?} is not a whole number"))
}

fn no_field(flag: &str) -> anyhow::Error {
    anyhow!("{flag} has no field in the Admin API: a check using it must be listed as runlet-only in contract/clauses.toml")
}

/// The one container's fields that services and jobs share; `false` when `flag` is not one.
fn container_flag(
    c: &mut Map<String, Value>,
    flag: &str,
    v: &str,
    image: &dyn Fn(&str) -> String,
) -> Result<bool> {
    match flag {
        "--image" => {
            c.insert("image".into(), json!(image(v)));
        }
        "--command" => {
            c.insert("command".into(), json!(list(v)));
        }
        "--args" => {
            c.insert("args".into(), json!(list(v)));
        }
        "--set-env-vars" => {
            let env: Vec<Value> = key_values(flag, v)?
                .into_iter()
                .map(|(k, v)| json!({"name": k, "value": v}))
                .collect();
            c.insert("env".into(), json!(env));
        }
        "--memory" | "--cpu" => {
            let key = &flag[2..];
            let r = c
                .entry("resources")
                .or_insert_with(|| json!({"limits": {}}));
            r["limits"][key] = json!(v);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `args` split at each `--container NAME`: the flags before the first, then each group's
/// name and flags (gcloud's container flag groups).
type Groups<'a> = Vec<(&'a str, Vec<&'a str>)>;

fn groups<'a>(args: &[&'a str]) -> Result<(Vec<&'a str>, Groups<'a>)> {
    let mut head = Vec::new();
    let mut groups: Groups<'a> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == "--container" {
            let name = it
                .next()
                .ok_or_else(|| anyhow!("--container needs a name"))?;
            groups.push((name, Vec::new()));
        } else if let Some(g) = groups.last_mut() {
            g.1.push(a);
        } else {
            head.push(*a);
        }
    }
    Ok((head, groups))
}

/// A gcloud probe (`httpGet.path=/x,periodSeconds=1`, `tcpSocket.port=N`, `grpc.port=N`)
/// as the API's `Probe`.
fn probe(flag: &str, v: &str) -> Result<Value> {
    let mut p = Map::new();
    let mut action = Map::new();
    let mut kind = None;
    for (k, val) in key_values(flag, v)? {
        let number = || int(flag, &val);
        match k.split_once('.') {
            Some((t @ ("httpGet" | "tcpSocket" | "grpc"), field)) => {
                let t: &'static str = match t {
                    "httpGet" => "httpGet",
                    "grpc" => "grpc",
                    _ => "tcpSocket",
                };
                if kind.is_some_and(|k| k != t) {
                    bail!("{flag} {v}: one of httpGet, tcpSocket, grpc");
                }
                kind = Some(t);
                let value = if field == "port" {
                    json!(number()?)
                } else {
                    json!(val)
                };
                action.insert(field.to_string(), value);
            }
            _ => match k.as_str() {
                "initialDelaySeconds" | "periodSeconds" | "timeoutSeconds" | "failureThreshold" => {
                    p.insert(k.clone(), json!(number()?));
                }
                _ => bail!("{flag} {v}: {k} is not mapped"),
            },
        }
    }
    p.insert(
        kind.unwrap_or("tcpSocket").to_string(),
        Value::Object(action),
    );
    Ok(Value::Object(p))
}

/// A `--container` group's flags (or the one container's) beyond [`container_flag`]'s.
#[derive(Default)]
struct ServiceContainer {
    c: Map<String, Value>,
    port: Option<i64>,
    mounts: Vec<Value>,
}

impl ServiceContainer {
    fn new() -> Self {
        let mut c = Map::new();
        // Always there: without it the API means Cloud Run's CPU throttling, which `runlet
        // serve` leaves off unless asked (as `runlet deploy` does).
        c.insert("resources".into(), json!({"limits": {}, "cpuIdle": false}));
        ServiceContainer {
            c,
            ..Default::default()
        }
    }

    /// `false` when `flag` is not a container's.
    fn flag(&mut self, flag: &str, v: &str, image: &dyn Fn(&str) -> String) -> Result<bool> {
        if container_flag(&mut self.c, flag, v, image)? {
            return Ok(true);
        }
        match flag {
            "--port" => self.port = Some(int(flag, v)?),
            "--startup-probe" => {
                self.c.insert("startupProbe".into(), probe(flag, v)?);
            }
            "--liveness-probe" => {
                self.c.insert("livenessProbe".into(), probe(flag, v)?);
            }
            "--depends-on" => {
                let deps = self.c.entry("dependsOn").or_insert_with(|| json!([]));
                if let Value::Array(a) = deps {
                    a.extend(list(v).into_iter().map(Value::from));
                }
            }
            "--add-volume-mount" => {
                let kv: std::collections::BTreeMap<_, _> =
                    key_values(flag, v)?.into_iter().collect();
                self.mounts.push(json!({
                    "name": kv.get("volume").cloned().unwrap_or_default(),
                    "mountPath": kv.get("mount-path").cloned().unwrap_or_default(),
                }));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn finish(mut self, h2c: bool, cpu_idle: bool) -> Value {
        if self.port.is_some() || h2c {
            self.c.insert(
                "ports".into(),
                json!([{"name": if h2c { "h2c" } else { "http1" }, "containerPort": self.port.unwrap_or(8080)}]),
            );
        }
        if cpu_idle {
            self.c["resources"]["cpuIdle"] = json!(true);
        }
        if !self.mounts.is_empty() {
            self.c.insert("volumeMounts".into(), json!(self.mounts));
        }
        Value::Object(self.c)
    }
}

/// The `Service` for `runlet serve` flags; `image` maps the checks' image names (the
/// images the suite loaded) to what the endpoint can run. `--container NAME` groups become
/// the template's `containers[]`, named, in the order given.
pub fn service(args: &[&str], image: &dyn Fn(&str) -> String) -> Result<Value> {
    let (head, groups) = groups(args)?;
    let mut one = ServiceContainer::new();
    let mut t = Map::new();
    let (mut h2c, mut cpu_idle) = (false, false);
    let mut volumes = Vec::new();
    for (flag, v) in pairs(&head)? {
        if one.flag(flag, v, image)? {
            if !groups.is_empty() {
                bail!("{flag}: with --container, container flags follow a --container");
            }
            continue;
        }
        match flag {
            "--use-http2" => h2c = true,
            "--cpu-throttling" => cpu_idle = true,
            "--timeout" => {
                t.insert("timeout".into(), json!(duration(flag, v)?));
            }
            "--concurrency" => {
                t.insert("maxInstanceRequestConcurrency".into(), json!(int(flag, v)?));
            }
            "--execution-environment" => {
                let e = match v {
                    "gen1" => "EXECUTION_ENVIRONMENT_GEN1",
                    "gen2" => "EXECUTION_ENVIRONMENT_GEN2",
                    _ => bail!("{flag} {v}: want gen1 or gen2"),
                };
                t.insert("executionEnvironment".into(), json!(e));
            }
            "--min-instances" | "--max-instances" => {
                let key = if flag == "--min-instances" {
                    "minInstanceCount"
                } else {
                    "maxInstanceCount"
                };
                let s = t.entry("scaling").or_insert_with(|| json!({}));
                s[key] = json!(int(flag, v)?);
            }
            "--add-volume" => {
                let kv: std::collections::BTreeMap<_, _> =
                    key_values(flag, v)?.into_iter().collect();
                if kv.get("type").map(String::as_str) != Some("in-memory") {
                    bail!("{flag} {v}: only type=in-memory is mapped");
                }
                let mut empty_dir = json!({"medium": "MEMORY"});
                if let Some(l) = kv.get("size-limit") {
                    empty_dir["sizeLimit"] = json!(l);
                }
                volumes.push(json!({"name": kv.get("name").cloned().unwrap_or_default(), "emptyDir": empty_dir}));
            }
            f if DRIVER_FLAGS.contains(&f) => {}
            _ => return Err(no_field(flag)),
        }
    }
    let containers: Vec<Value> = if groups.is_empty() {
        vec![one.finish(h2c, cpu_idle)]
    } else {
        let mut out = Vec::new();
        for (name, flags) in groups {
            let mut c = ServiceContainer::new();
            c.c.insert("name".into(), json!(name));
            for (flag, v) in pairs(&flags)? {
                if !c.flag(flag, v, image)? {
                    bail!("--container {name}: {flag} is not a container's flag");
                }
            }
            let ingress = c.port.is_some();
            out.push(c.finish(h2c && ingress, cpu_idle));
        }
        out
    };
    if !volumes.is_empty() {
        t.insert("volumes".into(), json!(volumes));
    }
    t.insert("containers".into(), json!(containers));
    Ok(json!({ "template": Value::Object(t) }))
}

/// The `Job` for `runlet job execute` flags (`image` as for [`service`]).
pub fn job(args: &[&str], image: &dyn Fn(&str) -> String) -> Result<Value> {
    let mut c = Map::new();
    let mut task = Map::new();
    let mut exec = Map::new();
    for (flag, v) in pairs(args)? {
        if container_flag(&mut c, flag, v, image)? {
            continue;
        }
        match flag {
            "--tasks" => {
                exec.insert("taskCount".into(), json!(int(flag, v)?));
            }
            "--parallelism" => {
                exec.insert("parallelism".into(), json!(int(flag, v)?));
            }
            "--max-retries" => {
                task.insert("maxRetries".into(), json!(int(flag, v)?));
            }
            "--task-timeout" => {
                task.insert("timeout".into(), json!(duration(flag, v)?));
            }
            _ => return Err(no_field(flag)),
        }
    }
    task.insert("containers".into(), json!([Value::Object(c)]));
    exec.insert("template".into(), Value::Object(task));
    Ok(json!({ "template": Value::Object(exec) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn lists_and_durations() {
        assert_eq!(list("a,b c,--x=y"), ["a", "b c", "--x=y"]);
        assert_eq!(list("^~^a,b~c"), ["a,b", "c"]);
        assert!(list("").is_empty());
        assert_eq!(duration("--timeout", "10").unwrap(), "10s");
        assert_eq!(duration("--t", "2s").unwrap(), "2s");
        assert_eq!(duration("--t", "16m").unwrap(), "960s");
        assert!(duration("--t", "2d").is_err());
        assert!(duration("--t", "x").is_err());
    }

    #[test]
    fn service_flags_as_a_service() {
        let table: Vec<(Vec<&str>, Value)> = vec![
            (
                vec!["--image", "probe"],
                json!({"template": {"containers": [{"image": "probe", "resources": {"limits": {}, "cpuIdle": false}}]}}),
            ),
            (
                vec![
                    "--image",
                    "probe",
                    "--command",
                    "/probe",
                    "--args",
                    "a,b c",
                    "--set-env-vars",
                    "A=1,B=x=y",
                    "--port",
                    "8801",
                    "--use-http2",
                    "--memory",
                    "128Mi",
                    "--cpu",
                    "2",
                    "--cpu-throttling",
                    "--timeout",
                    "10",
                    "--concurrency",
                    "1",
                    "--max-instances",
                    "3",
                    "--min-instances",
                    "1",
                    "--metrics-listen",
                    "127.0.0.1:1",
                ],
                json!({"template": {
                    "timeout": "10s",
                    "maxInstanceRequestConcurrency": 1,
                    "scaling": {"maxInstanceCount": 3, "minInstanceCount": 1},
                    "containers": [{
                        "image": "probe",
                        "command": ["/probe"],
                        "args": ["a", "b c"],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}],
                        "resources": {"limits": {"memory": "128Mi", "cpu": "2"}, "cpuIdle": true},
                        "ports": [{"name": "h2c", "containerPort": 8801}],
                    }],
                }}),
            ),
            (
                vec![
                    "--image",
                    "probe",
                    "--add-volume",
                    "name=scratch,type=in-memory,size-limit=32Mi",
                    "--add-volume-mount",
                    "volume=scratch,mount-path=/scratch",
                ],
                json!({"template": {
                    "volumes": [{"name": "scratch", "emptyDir": {"medium": "MEMORY", "sizeLimit": "32Mi"}}],
                    "containers": [{
                        "image": "probe",
                        "resources": {"limits": {}, "cpuIdle": false},
                        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}],
                    }],
                }}),
            ),
        ];
        for (args, want) in table {
            assert_eq!(service(&args, &same).unwrap(), want, "{args:?}");
        }
        let prefixed = |s: &str| format!("registry.example/{s}");
        assert_eq!(
            service(&["--image", "probe"], &prefixed).unwrap()["template"]["containers"][0]
                ["image"],
            "registry.example/probe"
        );
    }

    #[test]
    fn container_groups_as_containers() {
        let args = [
            "--add-volume",
            "name=shared,type=in-memory",
            "--container",
            "app",
            "--image",
            "busybox",
            "--port",
            "8081",
            "--depends-on",
            "report,log",
            "--add-volume-mount",
            "volume=shared,mount-path=/shared",
            "--container",
            "report",
            "--image",
            "probe",
            "--set-env-vars",
            "PROBE_LISTEN_DELAY_MS=2000",
            "--startup-probe",
            "tcpSocket.port=8080,periodSeconds=1,failureThreshold=20",
            "--container",
            "log",
            "--image",
            "busybox",
            "--startup-probe",
            "httpGet.path=/ready,httpGet.port=9000",
        ];
        assert_eq!(
            service(&args, &same).unwrap(),
            json!({"template": {
                "volumes": [{"name": "shared", "emptyDir": {"medium": "MEMORY"}}],
                "containers": [
                    {
                        "name": "app",
                        "image": "busybox",
                        "resources": {"limits": {}, "cpuIdle": false},
                        "ports": [{"name": "http1", "containerPort": 8081}],
                        "dependsOn": ["report", "log"],
                        "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
                    },
                    {
                        "name": "report",
                        "image": "probe",
                        "resources": {"limits": {}, "cpuIdle": false},
                        "env": [{"name": "PROBE_LISTEN_DELAY_MS", "value": "2000"}],
                        "startupProbe": {
                            "tcpSocket": {"port": 8080},
                            "periodSeconds": 1,
                            "failureThreshold": 20,
                        },
                    },
                    {
                        "name": "log",
                        "image": "busybox",
                        "resources": {"limits": {}, "cpuIdle": false},
                        "startupProbe": {"httpGet": {"path": "/ready", "port": 9000}},
                    },
                ],
            }})
        );
        // gcloud's rule: container flags follow a --container.
        assert!(service(&["--image", "probe", "--container", "app"], &same).is_err());
        assert!(service(&["--container", "app", "--timeout", "1"], &same).is_err());
        assert!(service(&["--container", "a", "--startup-probe", "exec=1"], &same).is_err());
    }

    #[test]
    fn flags_without_a_field_are_refused_by_name() {
        for flag in ["--idle-timeout", "--startup-timeout"] {
            let e = service(&["--image", "probe", flag, "3s"], &same).unwrap_err();
            assert!(e.to_string().contains(flag), "{e}");
        }
        assert!(service(&["--image"], &same).is_err());
        assert!(service(&["probe"], &same).is_err());
        assert!(job(&["--image", "probe", "--port", "1"], &same).is_err());
    }

    #[test]
    fn job_flags_as_a_job() {
        let j = job(
            &[
                "--image",
                "probe",
                "--args",
                "job",
                "--tasks",
                "3",
                "--parallelism",
                "2",
                "--max-retries",
                "0",
                "--task-timeout",
                "2s",
                "--memory",
                "64Mi",
                "--set-env-vars",
                "PROBE_SLEEP_MS=120000,PROBE_IGNORE_SIGTERM=1",
            ],
            &same,
        )
        .unwrap();
        assert_eq!(
            j,
            json!({"template": {
                "taskCount": 3,
                "parallelism": 2,
                "template": {
                    "maxRetries": 0,
                    "timeout": "2s",
                    "containers": [{
                        "image": "probe",
                        "args": ["job"],
                        "resources": {"limits": {"memory": "64Mi"}},
                        "env": [
                            {"name": "PROBE_SLEEP_MS", "value": "120000"},
                            {"name": "PROBE_IGNORE_SIGTERM", "value": "1"},
                        ],
                    }],
                },
            }})
        );
    }
}
