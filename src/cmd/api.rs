//! What the daemon's client commands share: reaching the daemon from the flags (`--api` or
//! the state dir's socket, the token from `--api-token-file` or `RUNLET_API_TOKEN`), the
//! parent `projects/P/locations/R`, and checking a service name.

use anyhow::{Context, Result};

use runlet::api::client::{self, Client, Target};
use runlet::cli::client::ApiArgs;
use runlet::cli::GlobalArgs;
use runlet::daemon::names::{Parent, ServiceName};
use runlet::spec::{self, SpecError};

/// Where the flags say the daemon is.
pub fn target(global: &GlobalArgs, api: &ApiArgs) -> Result<Target, SpecError> {
    match &api.api {
        Some(addr) => Target::tcp(addr),
        None => Ok(Target::Unix(client::socket_path(&global.state_dir))),
    }
}

/// The token to send: the file's content, else `RUNLET_API_TOKEN`, else none.
pub fn token(api: &ApiArgs) -> Result<Option<String>> {
    if let Some(f) = &api.api_token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("reading --api-token-file {}", f.display()))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(SpecError {
                field: "--api-token-file",
                detail: format!("{} is empty", f.display()),
            }
            .into());
        }
        return Ok(Some(t.to_string()));
    }
    Ok(std::env::var("RUNLET_API_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// The flags checked, then a connection to the daemon.
pub async fn connect(global: &GlobalArgs, api: &ApiArgs) -> Result<Client> {
    let target = target(global, api)?;
    parent(api)?;
    let token = token(api)?;
    Ok(Client::connect(target, token.as_deref()).await?)
}

/// `projects/P/locations/R` from `--project` and `--region`.
pub fn parent(api: &ApiArgs) -> Result<Parent, SpecError> {
    let segment = |field, v: &str| {
        if v.is_empty() || v.contains('/') {
            Err(SpecError {
                field,
                detail: format!("{v:?} must be non-empty, without '/'"),
            })
        } else {
            Ok(v.to_string())
        }
    };
    Ok(Parent {
        project: segment("--project", &api.project)?,
        location: segment("--region", &api.region)?,
    })
}

/// The full name of service `service` (checked by Cloud Run's rules).
pub fn service_name(api: &ApiArgs, service: &str) -> Result<ServiceName, SpecError> {
    spec::check_name("SERVICE", service, 49)?;
    Ok(ServiceName {
        parent: parent(api)?,
        service: service.to_string(),
    })
}
