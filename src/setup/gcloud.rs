//! What `runlet setup gcloud` writes, as plain functions (the command does the I/O):
//!
//! - a named gcloud configuration (`$CLOUDSDK_CONFIG/configurations/config_NAME`, an INI
//!   file) holding [`properties`]: no credentials, no API-enabling prompt, the project and
//!   region, and `api_endpoint_overrides/run` (and `cloudresourcemanager`, which `gcloud run
//!   services replace` asks for the project's number) set to `http://runlet:PORT/`;
//! - the host names gcloud then uses, in one tagged block of `/etc/hosts` ([`hosts_block`],
//!   [`render_hosts`]): `runlet` (IAM and cross-region calls) and `R-runlet` for each region
//!   (gcloud prefixes the region to the override's host for a region's calls).
//!
//! The block's tag differs from the daemon's (`# BEGIN runlet `), so neither removes the
//! other's.

use std::net::IpAddr;

/// The first words of the line that opens the block.
pub const BEGIN: &str = "# BEGIN runlet-gcloud";
/// The line that closes the block.
pub const END: &str = "# END runlet-gcloud";

/// The host name gcloud's endpoint override names.
pub const HOST: &str = "runlet";

/// What a setup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub api_port: u16,
    pub project: String,
    /// The first is the configuration's `run/region`; each gets a host name.
    pub regions: Vec<String>,
}

/// The endpoint override: `http://runlet:PORT/`.
pub fn endpoint(port: u16) -> String {
    format!("http://{HOST}:{port}/")
}

/// The host names: `runlet`, then `R-runlet` per region.
pub fn host_names(regions: &[String]) -> Vec<String> {
    let mut names = vec![HOST.to_string()];
    for r in regions {
        let n = format!("{r}-{HOST}");
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The configuration's properties, as (section, key, value).
pub fn properties(s: &Setup) -> Vec<(&'static str, &'static str, String)> {
    let mut p = vec![
        ("auth", "disable_credentials", "true".to_string()),
        ("core", "should_prompt_to_enable_api", "false".to_string()),
        ("core", "project", s.project.clone()),
        ("api_endpoint_overrides", "run", endpoint(s.api_port)),
        (
            "api_endpoint_overrides",
            "cloudresourcemanager",
            endpoint(s.api_port),
        ),
    ];
    if let Some(r) = s.regions.first() {
        p.push(("run", "region", r.clone()));
    }
    p
}

/// An INI file (gcloud's properties) with `props` set: existing keys are replaced in
/// place, new ones added at the end of their section (or in a new section at the end);
/// every other line stays.
pub fn set_properties(existing: &str, props: &[(&str, &str, String)]) -> String {
    let mut lines: Vec<String> = existing.lines().map(str::to_string).collect();
    for (section, key, value) in props {
        let header = format!("[{section}]");
        let start = lines.iter().position(|l| l.trim() == header.as_str());
        let Some(start) = start else {
            if lines.last().is_some_and(|l| !l.trim().is_empty()) {
                lines.push(String::new());
            }
            lines.push(header);
            lines.push(format!("{key} = {value}"));
            continue;
        };
        let end = lines[start + 1..]
            .iter()
            .position(|l| l.trim_start().starts_with('['))
            .map_or(lines.len(), |i| start + 1 + i);
        let at = (start + 1..end).find(|&i| {
            lines[i]
                .split_once('=')
                .is_some_and(|(k, _)| k.trim() == *key)
        });
        match at {
            Some(i) => lines[i] = format!("{key} = {value}"),
            None => {
                // After the section's last non-empty line.
                let mut i = end;
                while i > start + 1 && lines[i - 1].trim().is_empty() {
                    i -= 1;
                }
                lines.insert(i, format!("{key} = {value}"));
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The block naming each host at `address`.
pub fn hosts_block(address: IpAddr, names: &[String]) -> String {
    let mut out = format!("{BEGIN} (managed by runlet setup gcloud; remove with --undo)\n");
    for n in names {
        out.push_str(&format!("{address} {n}\n"));
    }
    out.push_str(END);
    out.push('\n');
    out
}

/// `existing` with the block replaced by `block` (removed for None): a complete
/// `BEGIN`..`END` span is the block's; the new one goes where the first was, or at the end.
/// Every other line stays as it was.
pub fn render_hosts(existing: &str, block: Option<&str>) -> String {
    let lines: Vec<&str> = existing.split_inclusive('\n').collect();
    let is_begin = |l: &str| {
        let t = l.trim_end();
        t == BEGIN || t.starts_with(&format!("{BEGIN} "))
    };
    let mut spans = Vec::new();
    let mut open = None;
    for (i, l) in lines.iter().enumerate() {
        if is_begin(l) {
            open = Some(i);
        } else if l.trim_end() == END {
            if let Some(s) = open.take() {
                spans.push((s, i));
            }
        }
    }
    let mut out = String::new();
    let mut placed = false;
    let mut i = 0;
    while i < lines.len() {
        if let Some(&(_, end)) = spans.iter().find(|(s, _)| *s == i) {
            if !placed {
                out.push_str(block.unwrap_or(""));
                placed = true;
            }
            i = end + 1;
            continue;
        }
        out.push_str(lines[i]);
        i += 1;
    }
    if !placed {
        if let Some(b) = block {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            api_port: 8090,
            project: "proj1".into(),
            regions: vec!["us-central1".into(), "europe-west1".into()],
        }
    }

    #[test]
    fn names_and_properties() {
        assert_eq!(
            host_names(&setup().regions),
            ["runlet", "us-central1-runlet", "europe-west1-runlet"]
        );
        let p = properties(&setup());
        assert!(p.contains(&(
            "api_endpoint_overrides",
            "run",
            "http://runlet:8090/".into()
        )));
        assert!(p.contains(&("run", "region", "us-central1".into())));
        assert!(p.contains(&("auth", "disable_credentials", "true".into())));
        assert!(p.contains(&("core", "should_prompt_to_enable_api", "false".into())));
    }

    #[test]
    fn properties_merge_into_an_ini_file() {
        let props = vec![
            ("core", "project", "proj1".to_string()),
            ("core", "account", "me@example.com".to_string()),
            ("run", "region", "us-central1".to_string()),
        ];
        for (existing, want) in [
            (
                "",
                "[core]\nproject = proj1\naccount = me@example.com\n\n[run]\nregion = us-central1\n",
            ),
            (
                "[core]\nproject = old\ndisable_usage_reporting = True\n\n[compute]\nzone = z\n",
                "[core]\nproject = proj1\ndisable_usage_reporting = True\naccount = me@example.com\n\n[compute]\nzone = z\n\n[run]\nregion = us-central1\n",
            ),
        ] {
            let got = set_properties(existing, &props);
            assert_eq!(got, want, "from {existing:?}");
            // Idempotent.
            assert_eq!(set_properties(&got, &props), got);
        }
    }

    #[test]
    fn the_hosts_block_is_added_replaced_and_removed() {
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let block = hosts_block(addr, &host_names(&setup().regions));
        assert!(block.contains("127.0.0.1 runlet\n"));
        assert!(block.contains("127.0.0.1 us-central1-runlet\n"));
        let daemons = "# BEGIN runlet (managed by runlet daemon, pid 1; do not edit)\n127.0.0.1 hello.localhost\n# END runlet\n";
        let base = format!("127.0.0.1 localhost\n{daemons}");
        let added = render_hosts(&base, Some(&block));
        assert_eq!(added, format!("{base}{block}"));
        // Idempotent, and in place.
        assert_eq!(render_hosts(&added, Some(&block)), added);
        let other = hosts_block(addr, &host_names(&["us-east1".to_string()]));
        let replaced = render_hosts(&added, Some(&other));
        assert_eq!(replaced, format!("{base}{other}"));
        // --undo leaves the daemon's block and everything else.
        assert_eq!(render_hosts(&replaced, None), base);
        // A file without a final newline.
        assert_eq!(
            render_hosts("127.0.0.1 localhost", Some(&block)),
            format!("127.0.0.1 localhost\n{block}")
        );
        // The daemon's own rendering does not take this block for its own.
        assert_eq!(
            crate::daemon::hosts::render(&added, None),
            format!("127.0.0.1 localhost\n{block}")
        );
    }
}
