//! runlet's metadata server (issue 17, section 3; META-1, META-2), against the real
//! containerd: busybox in job tasks and `google-auth` in an instance's namespace ask
//! `metadata.google.internal`, reached through the DNAT in each instance's namespace.
//!
//! Every request here goes to 169.254.169.254 only from inside an instance's namespace,
//! where the DNAT sends it to runlet; each test first checks that the link-local DROP is in
//! place (so a request the DNAT missed could not reach the host platform's service) and
//! that a name-less link-local request fails.
#![allow(clippy::disallowed_types)]

mod common;

use std::process::Command;

use common::*;

const MD: &str = "http://metadata.google.internal/computeMetadata/v1";

fn chain(name: &str) -> String {
    let out = Command::new("iptables")
        .args(["-w", "-S", name])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `runlet job execute NAME --image busybox` running `script` (sh -c) with `flags`;
/// returns its output. The script starts with a link-local request that must fail.
fn busybox_job(env: &Env, name: &str, flags: &[&str], script: &str) -> String {
    let guard = "busybox timeout 3 wget -q -O- http://169.254.1.1/ >/dev/null 2>&1 && echo LINKLOCAL-REACHED && exit 9";
    let out = env
        .runlet()
        .args([
            "job",
            "execute",
            name,
            "--image",
            "busybox",
            "--command",
            "/bin/sh",
            "--max-retries",
            "0",
        ])
        .args(flags)
        .arg("--args")
        .arg(format!("^@^-c@{guard}; {script}"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run runlet");
    let text = strip_ansi(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(!text.contains("LINKLOCAL-REACHED"), "{text}");
    assert!(out.status.success(), "{text}");
    // The rules (the link-local DROP among them) were in place before any task started.
    let rules = text.find("network isolation rules in place");
    assert!(
        rules.is_some() && rules < text.find("attempt started"),
        "{text}"
    );
    text
}

/// The text after `KEY=` on the line that has it.
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    let tag = format!("{key}=");
    text.lines()
        .find_map(|l| l.split_once(tag.as_str()).map(|(_, v)| v.trim()))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
}

#[test]
fn busybox_tasks_read_their_project_ids_and_token() {
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let h = "--header 'Metadata-Flavor: Google'";
    let script = [
        format!("echo project=$(wget -q -O- {h} {MD}/project/project-id)"),
        format!("echo region=$(wget -q -O- {h} {MD}/instance/region)"),
        format!("echo email=$(wget -q -O- {h} {MD}/instance/service-accounts/default/email)"),
        format!("echo id$CLOUD_RUN_TASK_INDEX=$(wget -q -O- {h} {MD}/instance/id)"),
        format!("wget -q -O- {MD}/project/project-id >/dev/null 2>&1; echo noheader=$?"),
        format!("wget -O- {MD}/project/project-id 2>&1 | grep -o 403 | head -1 | sed 's/^/noheader_status=/'"),
        format!("echo token=$(wget -q -O- {h} {MD}/instance/service-accounts/default/token)"),
        format!("echo idtoken=$(wget -q -O- {h} '{MD}/instance/service-accounts/default/identity?audience=https://x.example' | cut -c1-3)"),
    ]
    .join("; ");
    let text = busybox_job(
        &env,
        "meta-a",
        &[
            "--tasks",
            "2",
            "--project",
            "meta-proj",
            "--region",
            "europe-west1",
            "--service-account",
            "sa@meta-proj.iam.gserviceaccount.com",
            "--token-command",
            "echo tok-from-command",
        ],
        &script,
    );
    assert_eq!(value(&text, "project"), "meta-proj", "{text}");
    let num = value(&text, "region")
        .trim_start_matches("projects/")
        .split('/')
        .next()
        .unwrap();
    assert_eq!(num.len(), 12, "{text}");
    assert!(
        value(&text, "region").ends_with("/regions/europe-west1"),
        "{text}"
    );
    assert_eq!(
        value(&text, "email"),
        "sa@meta-proj.iam.gserviceaccount.com"
    );
    let (id0, id1) = (value(&text, "id0"), value(&text, "id1"));
    assert!(id0.len() == 19 && id1.len() == 19 && id0 != id1, "{text}");
    assert_ne!(value(&text, "noheader"), "0", "{text}");
    assert_eq!(value(&text, "noheader_status"), "403", "{text}");
    assert!(
        value(&text, "token").contains("\"access_token\":\"tok-from-command\""),
        "{text}"
    );
    assert_eq!(value(&text, "idtoken"), "eyJ", "{text}");

    // Without a token command: 404 with how to configure one.
    let h = "--header 'Metadata-Flavor: Google'";
    let text = busybox_job(
        &env,
        "meta-b",
        &[],
        &format!("wget -O- {h} {MD}/instance/service-accounts/default/token 2>&1 | grep -o '404' | head -1 | sed 's/^/status=/'; echo project=$(wget -q -O- {h} {MD}/project/project-id)"),
    );
    assert_eq!(value(&text, "status"), "404", "{text}");
    assert_eq!(value(&text, "project"), "runlet-local", "{text}");
}

#[test]
fn google_auth_finds_the_project_and_a_token() {
    let Some(env) = probe_env() else { return };
    let python = match std::env::var("RUNLET_TEST_PYTHON") {
        Ok(p) => p,
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but RUNLET_TEST_PYTHON is not")
        }
        Err(_) => {
            eprintln!("SKIPPED: set RUNLET_TEST_PYTHON to a Python with google-auth");
            return;
        }
    };
    let served = env.serve_probe(
        "meta-py",
        &["--project", "py-proj", "--token-command", "echo tok-py"],
    );
    assert!(
        chain("RUNLET-ISOLATION-FWD").contains("169.254.0.0/16"),
        "no link-local DROP"
    );
    let ids = netns_ids("meta-py");
    assert_eq!(ids.len(), 1, "{ids:?}");
    let home = tempfile::tempdir().unwrap();
    let code = "import google.auth, google.auth.transport.requests as r\n\
                creds, project = google.auth.default()\n\
                creds.refresh(r.Request())\n\
                print('project=' + str(project))\n\
                print('token=' + creds.token)\n\
                print('email=' + creds.service_account_email)\n";
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("runlet-{}", ids[0]), "env", "-i"])
        .arg(format!("HOME={}", home.path().display()))
        .arg(format!("CLOUDSDK_CONFIG={}", home.path().display()))
        .arg("GCE_METADATA_HOST=169.254.169.254")
        .arg("GCE_METADATA_IP=169.254.169.254")
        .arg("PATH=/usr/bin:/bin")
        .arg(&python)
        .args(["-c", code])
        .output()
        .expect("ip netns exec");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(value(&text, "project"), "py-proj", "{text}");
    assert_eq!(value(&text, "token"), "tok-py", "{text}");
    assert!(
        value(&text, "email").ends_with("-compute@developer.gserviceaccount.com"),
        "{text}"
    );
    let (st, _) = served.interrupt();
    assert!(st.success());
}

/// `--token-key-file`: tasks get access tokens made from a service-account key file by
/// Google's auth crate (self-signed JWTs: nothing is sent to Google), verified here with the
/// key's public half; the key's account is the default service account.
#[test]
fn a_key_file_gives_tasks_tokens_signed_with_its_key() {
    use base64::Engine;
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::signature::Verifier;
    let Some(env) = env() else { return };
    env.load("busybox.oci.tar");
    let dir = tempfile::tempdir().unwrap();
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
    let path = dir.path().join("key.json");
    let account = "keyed@meta-proj.iam.gserviceaccount.com";
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "meta-proj",
        "private_key_id": "kid-meta",
        "private_key": pem.as_str(),
        "client_email": account,
        "client_id": "1",
        // Never contacted: tokens are self-signed.
        "token_uri": "http://127.0.0.1:9/token",
    });
    std::fs::write(&path, json.to_string()).unwrap();
    let h = "--header 'Metadata-Flavor: Google'";
    let script = [
        format!("echo email=$(wget -q -O- {h} {MD}/instance/service-accounts/default/email)"),
        format!("echo token=$(wget -q -O- {h} {MD}/instance/service-accounts/default/token)"),
    ]
    .join("; ");
    let text = busybox_job(
        &env,
        "meta-key",
        &["--token-key-file", path.to_str().unwrap()],
        &script,
    );
    assert_eq!(value(&text, "email"), account, "{text}");
    let token: serde_json::Value = serde_json::from_str(value(&text, "token")).unwrap();
    let expires = token["expires_in"].as_u64().unwrap();
    assert!((3500..=3610).contains(&expires), "{token}");
    let jwt = token["access_token"].as_str().unwrap();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], account, "{claims}");
    assert_eq!(
        claims["scope"], "https://www.googleapis.com/auth/cloud-platform",
        "{claims}"
    );
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.to_public_key());
    let sig = rsa::pkcs1v15::Signature::try_from(b64.decode(parts[2]).unwrap().as_slice()).unwrap();
    verifier
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("signed with the key file's key");

    // A file that is no service-account key stops runlet before any task, naming it.
    let bad = dir.path().join("user.json");
    std::fs::write(&bad, r#"{"type":"authorized_user"}"#).unwrap();
    let out = env
        .runlet()
        .args(["job", "execute", "meta-badkey", "--image", "busybox"])
        .args(["--command", "/bin/true", "--token-key-file"])
        .arg(&bad)
        .env("NO_COLOR", "1")
        .output()
        .expect("run runlet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("user.json") && err.contains("not a service-account key"),
        "{err}"
    );
    assert!(!err.contains("attempt started"), "{err}");
}
