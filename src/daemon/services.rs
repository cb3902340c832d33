//! Services and revisions: the Admin API's calls on them (create, get, list, update, delete),
//! each checked at the door, written to the store, and answered with an operation that the
//! rollout ([`super::rollout`]) or the deletion completes.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tonic::Status;
use tracing::{info, warn};

use super::listener::{self, ServiceListener};
use super::names::{check_service_id, Parent, RevisionName, ServiceName};
use super::resource::{self, etag_of};
use super::revision::RevisionRun;
use super::{paging, Daemon};
use crate::pb::any::Any;
use crate::pb::longrunning::Operation;
use crate::pb::run_v2::{self as v2};

pub(super) const SERVICES: &str = "services";
pub(super) const REVISIONS: &str = "revisions";

/// A service the daemon holds.
pub(super) struct Entry {
    pub svc: v2::Service,
    /// Its revisions by short id.
    pub revisions: BTreeMap<String, v2::Revision>,
    /// The revision traffic goes to, running.
    pub serving: Option<RevisionRun>,
    /// One rollout at a time per service; a later one waits.
    pub rollouts: Arc<Mutex<()>>,
    /// Its own address (annotation `runlet.io/listen`), served.
    pub listener: Option<ServiceListener>,
}

impl Entry {
    pub fn new(svc: v2::Service) -> Entry {
        Entry {
            svc,
            revisions: BTreeMap::new(),
            serving: None,
            rollouts: Arc::new(Mutex::new(())),
            listener: None,
        }
    }
}

/// Fields a caller sets (the rest are output only), for a whole update or an update mask.
const SETTABLE: &[&str] = &[
    "description",
    "labels",
    "annotations",
    "client",
    "client_version",
    "ingress",
    "launch_stage",
    "binary_authorization",
    "template",
    "traffic",
    "scaling",
    "invoker_iam_disabled",
    "default_uri_disabled",
    "custom_audiences",
];

fn copy_field(to: &mut v2::Service, from: &v2::Service, field: &str) {
    match field {
        "description" => to.description = from.description.clone(),
        "labels" => to.labels = from.labels.clone(),
        "annotations" => to.annotations = from.annotations.clone(),
        "client" => to.client = from.client.clone(),
        "client_version" => to.client_version = from.client_version.clone(),
        "ingress" => to.ingress = from.ingress,
        "launch_stage" => to.launch_stage = from.launch_stage,
        "binary_authorization" => to.binary_authorization = from.binary_authorization.clone(),
        "template" => to.template = from.template.clone(),
        "traffic" => to.traffic = from.traffic.clone(),
        "scaling" => to.scaling = from.scaling,
        "invoker_iam_disabled" => to.invoker_iam_disabled = from.invoker_iam_disabled,
        "default_uri_disabled" => to.default_uri_disabled = from.default_uri_disabled,
        "custom_audiences" => to.custom_audiences = from.custom_audiences.clone(),
        _ => {}
    }
}

/// An update mask path (camelCase or snake_case) as the top-level field it touches.
fn mask_field(path: &str) -> Result<&'static str, Status> {
    let top = path.split('.').next().unwrap_or(path);
    let snake: String = top
        .chars()
        .flat_map(|c| {
            if c.is_ascii_uppercase() {
                vec!['_', c.to_ascii_lowercase()]
            } else {
                vec![c]
            }
        })
        .collect();
    SETTABLE
        .iter()
        .find(|f| **f == snake)
        .copied()
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "invalid update_mask path {path:?}: allowed {}",
                SETTABLE.join(", ")
            ))
        })
}

/// The revision id of a new revision: the template's own (which must start with the
/// service's name and a hyphen, and be new), or `SERVICE-0000N-xyz`.
fn revision_id(
    svc: &v2::Service,
    service: &str,
    generation: i64,
    taken: &BTreeMap<String, v2::Revision>,
) -> Result<String, Status> {
    let asked = svc
        .template
        .as_ref()
        .map(|t| t.revision.as_str())
        .unwrap_or("");
    if asked.is_empty() {
        return Ok(format!(
            "{service}-{generation:05}-{}",
            crate::util::random_suffix(3)
        ));
    }
    if !asked.starts_with(&format!("{service}-"))
        || crate::spec::check_name("template.revision", asked, 63).is_err()
    {
        return Err(Status::invalid_argument(format!(
            "invalid service.template.revision {asked:?}: must start with \"{service}-\", be at most 63 lowercase letters, digits and hyphens, and not end with a hyphen"
        )));
    }
    if taken.contains_key(asked) {
        return Err(Status::already_exists(format!(
            "revision {asked} already exists: name a new one or leave template.revision empty"
        )));
    }
    Ok(asked.to_string())
}

/// Whether the service named in full is under `parent`; location `-` stands for every
/// location (as Cloud Run's list calls take it, and the v1 API's lists across regions).
fn under(service: &str, parent: &Parent) -> bool {
    if parent.location == "-" {
        let prefix = format!("projects/{}/locations/", parent.project);
        service
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once("/services/"))
            .is_some_and(|(loc, _)| !loc.contains('/'))
    } else {
        service.starts_with(&format!("{parent}/services/"))
    }
}

fn check_etag(given: &str, current: &str, what: &str) -> Result<(), Status> {
    if !given.is_empty() && given != current {
        return Err(Status::aborted(format!(
            "etag {given} does not match the current etag of {what} ({current}): read it again and retry"
        )));
    }
    Ok(())
}

impl Daemon {
    pub async fn create_service(&self, req: v2::CreateServiceRequest) -> Result<Operation, Status> {
        let parent = Parent::parse("parent", &req.parent)?;
        check_service_id(&req.service_id)?;
        let svc = req
            .service
            .ok_or_else(|| Status::invalid_argument("service is required"))?;
        let name = ServiceName {
            parent,
            service: req.service_id.clone(),
        };
        self.deploy(name, svc, Mode::Create, req.validate_only)
            .await
    }

    /// Creates (`existing` None) or updates a service: a new generation, a new revision when
    /// the template changed, and the operation the rollout completes.
    async fn deploy(
        &self,
        name: ServiceName,
        mut desired: v2::Service,
        mode: Mode,
        validate_only: bool,
    ) -> Result<Operation, Status> {
        let full = name.to_string();
        let mut state = self.state.lock().await;
        if let Some((other, _)) = state.services.iter().find(|(k, e)| {
            **k != full && e.svc.name.ends_with(&format!("/services/{}", name.service))
        }) {
            return Err(Status::already_exists(format!(
                "a service named {} already exists as {other}: service names are unique on one runlet (they route by NAME.localhost)",
                name.service
            )));
        }
        let existing = state.services.get(&full);
        if existing.is_some() && mode == Mode::Create {
            return Err(Status::already_exists(format!(
                "service {full} already exists"
            )));
        }
        let now = resource::now();
        let (mut svc, old_template) = match existing {
            // A create, or an update of a missing service with allow_missing: the whole body
            // counts, whatever the mask.
            None => {
                let mut svc = v2::Service {
                    name: full.clone(),
                    uid: resource::uid(),
                    generation: 1,
                    create_time: Some(now),
                    creator: "runlet".into(),
                    ..Default::default()
                };
                for f in SETTABLE {
                    copy_field(&mut svc, &desired, f);
                }
                (svc, None)
            }
            Some(e) => {
                check_etag(&desired.etag, &e.svc.etag, &full)?;
                let mut svc = e.svc.clone();
                let fields: Vec<&str> = match &mode {
                    Mode::Update(Some(mask)) => mask.clone(),
                    _ => SETTABLE.to_vec(),
                };
                for f in fields {
                    copy_field(&mut svc, &desired, f);
                }
                svc.generation += 1;
                (svc, e.svc.template.clone())
            }
        };
        desired.etag.clear();
        svc.update_time = Some(now);
        svc.last_modifier = "runlet".into();
        let taken = existing.map(|e| e.revisions.clone()).unwrap_or_default();
        let template_changed =
            old_template.as_ref().map(strip_revision) != svc.template.as_ref().map(strip_revision);
        let rev_id = if template_changed {
            Some(revision_id(&svc, &name.service, svc.generation, &taken)?)
        } else {
            None
        };
        // Validate the whole template now, so that bad input never reaches a rollout.
        let check_rev = rev_id
            .clone()
            .unwrap_or_else(|| svc.latest_created_revision.clone());
        crate::spec::run_v2::service_spec(&name.service, &check_rev, &svc, self.listen)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if svc.template.is_none() {
            return Err(Status::invalid_argument(
                "invalid service.template: is required",
            ));
        }
        // The service's own address is bound now, so that a bad or taken one is refused
        // here and not found out by a rollout.
        let want = listener::wanted(&svc)?;
        let have = existing.and_then(|e| e.listener.as_ref()).map(|l| l.addr);
        let bound = match want {
            Some(addr) if Some(addr) != have => {
                if let Some((other, _)) = state.services.iter().find(|(k, e)| {
                    **k != full && e.listener.as_ref().is_some_and(|l| l.addr == addr)
                }) {
                    return Err(listener::taken(addr, other));
                }
                Some(listener::bind(addr)?)
            }
            _ => None,
        };
        if validate_only {
            svc.etag = etag_of(&svc);
            return Ok(Operation {
                name: String::new(),
                metadata: Some(Any::pack(&svc)),
                done: true,
                result: Some(crate::pb::longrunning::operation::Result::Response(
                    Any::pack(&svc),
                )),
            });
        }
        let revision = rev_id.as_ref().map(|id| {
            let rev_name = RevisionName {
                service: name.clone(),
                revision: id.clone(),
            };
            let mut rev = resource::new_revision(&svc, &rev_name.to_string());
            rev.etag = etag_of(&rev);
            rev
        });
        if let Some(r) = &revision {
            resource::service_reconciling(&mut svc, &r.name)
        }
        svc.etag = etag_of(&svc);
        self.put(SERVICES, &full, &svc)?;
        let entry = state
            .services
            .entry(full.clone())
            .or_insert_with(|| Entry::new(svc.clone()));
        entry.svc = svc.clone();
        if let Some(r) = &revision {
            self.put(REVISIONS, &r.name, r)?;
            entry
                .revisions
                .insert(short(&r.name).to_string(), r.clone());
        }
        let closing = if want.is_none() || bound.is_some() {
            entry.listener.take()
        } else {
            None
        };
        if let Some(b) = bound {
            entry.listener = self.start_listener(b, &name.service);
        }
        let names = self.service_ids(&state);
        self.publish_routes(&state);
        drop(state);
        if let Some(l) = closing {
            tokio::spawn(l.close());
        }
        self.update_hosts(names);
        let op = self.ops.start(&name.parent, Any::pack(&svc)).await;
        match rev_id {
            Some(rev) => {
                info!(service = %full, revision = %rev, "deploying");
                let d = self.me();
                let op_name = op.name.clone();
                tokio::spawn(async move { d.roll_out(full, rev, vec![op_name], Vec::new()).await });
            }
            None => self.ops.finish(&op.name, Ok(Any::pack(&svc))).await,
        }
        Ok(op)
    }

    pub async fn get_service(&self, name: &str) -> Result<v2::Service, Status> {
        let name = ServiceName::parse("name", name)?;
        let state = self.state.lock().await;
        state
            .services
            .get(&name.to_string())
            .map(|e| e.svc.clone())
            .ok_or_else(|| not_found_service(&name))
    }

    pub async fn list_services(
        &self,
        req: v2::ListServicesRequest,
    ) -> Result<v2::ListServicesResponse, Status> {
        let parent = Parent::parse("parent", &req.parent)?;
        let state = self.state.lock().await;
        let mut list: Vec<v2::Service> = state
            .services
            .values()
            .filter(|e| under(&e.svc.name, &parent))
            .map(|e| e.svc.clone())
            .collect();
        newest_first(&mut list, |s| s.create_time);
        let (services, next_page_token) = paging::page(list, req.page_size, &req.page_token)?;
        Ok(v2::ListServicesResponse {
            services,
            next_page_token,
            unreachable: Vec::new(),
        })
    }

    pub async fn update_service(&self, req: v2::UpdateServiceRequest) -> Result<Operation, Status> {
        let svc = req
            .service
            .ok_or_else(|| Status::invalid_argument("service is required"))?;
        let name = ServiceName::parse("service.name", &svc.name)?;
        let mask = match &req.update_mask {
            Some(m) if !m.paths.is_empty() => Some(
                m.paths
                    .iter()
                    .map(|p| mask_field(p))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => None,
        };
        {
            let state = self.state.lock().await;
            if !state.services.contains_key(&name.to_string()) && !req.allow_missing {
                return Err(not_found_service(&name));
            }
        }
        self.deploy(name, svc, Mode::Update(mask), req.validate_only)
            .await
    }

    pub async fn delete_service(&self, req: v2::DeleteServiceRequest) -> Result<Operation, Status> {
        let name = ServiceName::parse("name", &req.name)?;
        let full = name.to_string();
        let mut state = self.state.lock().await;
        let e = state
            .services
            .get(&full)
            .ok_or_else(|| not_found_service(&name))?;
        check_etag(&req.etag, &e.svc.etag, &full)?;
        let mut svc = e.svc.clone();
        svc.delete_time = Some(resource::now());
        if req.validate_only {
            return Ok(Operation {
                name: String::new(),
                metadata: Some(Any::pack(&svc)),
                done: true,
                result: Some(crate::pb::longrunning::operation::Result::Response(
                    Any::pack(&svc),
                )),
            });
        }
        // The intent is stored before anything else: a daemon killed from here on finds
        // the service marked on restart and finishes the deletion (never rolls it out).
        svc.etag = etag_of(&svc);
        self.put(SERVICES, &full, &svc)?;
        let mut entry = state.services.remove(&full).expect("checked above");
        let closing = entry.listener.take().map(ServiceListener::close);
        let names = self.service_ids(&state);
        self.publish_routes(&state);
        drop(state);
        self.update_hosts(names);
        let op = self.ops.start(&name.parent, Any::pack(&svc)).await;
        info!(service = %full, "deleting");
        let d = self.me();
        let op_name = op.name.clone();
        self.deletions.spawn(async move {
            if let Some(closing) = closing {
                closing.await;
            }
            // A rollout in progress ends first (it finds the service gone and stops its
            // revision itself).
            let _rollout = entry.rollouts.lock().await;
            if let Some(run) = entry.serving {
                run.retire().await;
            }
            let revisions: Vec<String> = entry.revisions.values().map(|r| r.name.clone()).collect();
            d.forget_deleted(&full, &revisions).await;
            d.ops.finish(&op_name, Ok(Any::pack(&svc))).await;
            info!(service = %full, "deleted");
        });
        Ok(op)
    }

    /// The end of a deletion (its instances are gone): the records of the service's
    /// `revisions` (full names) and then its own, the mark of the deletion, are deleted.
    /// A service of the same name created since keeps its records.
    pub(super) async fn forget_deleted(&self, full: &str, revisions: &[String]) {
        let state = self.state.lock().await;
        let again = state.services.get(full);
        for r in revisions {
            if again.is_none_or(|e| !e.revisions.contains_key(short(r))) {
                self.delete_stored(REVISIONS, r);
            }
        }
        if again.is_none() {
            self.delete_stored(super::iam::KIND, full);
            self.delete_stored(SERVICES, full);
        }
    }

    pub async fn get_revision(&self, name: &str) -> Result<v2::Revision, Status> {
        let rn = RevisionName::parse("name", name)?;
        let state = self.state.lock().await;
        state
            .services
            .values()
            .filter(|e| rn.service.is_any() || e.svc.name == rn.service.to_string())
            .filter(|e| e.svc.name.starts_with(&rn.service.parent.to_string()))
            .find_map(|e| e.revisions.get(&rn.revision).cloned())
            .ok_or_else(|| Status::not_found(format!("revision {name} not found")))
    }

    pub async fn list_revisions(
        &self,
        req: v2::ListRevisionsRequest,
    ) -> Result<v2::ListRevisionsResponse, Status> {
        let sn = ServiceName::parse_or_any("parent", &req.parent)?;
        let state = self.state.lock().await;
        if !sn.is_any() && !state.services.contains_key(&sn.to_string()) {
            return Err(not_found_service(&sn));
        }
        let mut list: Vec<v2::Revision> = state
            .services
            .values()
            .filter(|e| {
                if sn.is_any() {
                    under(&e.svc.name, &sn.parent)
                } else {
                    e.svc.name == sn.to_string()
                }
            })
            .flat_map(|e| e.revisions.values().cloned())
            .collect();
        newest_first(&mut list, |r| r.create_time);
        let (revisions, next_page_token) = paging::page(list, req.page_size, &req.page_token)?;
        Ok(v2::ListRevisionsResponse {
            revisions,
            next_page_token,
        })
    }

    pub async fn delete_revision(
        &self,
        req: v2::DeleteRevisionRequest,
    ) -> Result<Operation, Status> {
        let rn = RevisionName::parse("name", &req.name)?;
        let full = rn.service.to_string();
        let mut state = self.state.lock().await;
        let e = state
            .services
            .get_mut(&full)
            .ok_or_else(|| not_found_service(&rn.service))?;
        let rev = e
            .revisions
            .get(&rn.revision)
            .ok_or_else(|| Status::not_found(format!("revision {} not found", req.name)))?
            .clone();
        check_etag(&req.etag, &rev.etag, &req.name)?;
        let serving = e.serving.as_ref().map(|r| r.revision.as_str()) == Some(rn.revision.as_str());
        if serving || short(&e.svc.latest_created_revision) == rn.revision && e.svc.reconciling {
            return Err(Status::failed_precondition(format!(
                "revision {} is serving traffic or being deployed; only retired revisions can be deleted",
                rn.revision
            )));
        }
        if !req.validate_only {
            e.revisions.remove(&rn.revision);
            self.delete_stored(REVISIONS, &rev.name);
        }
        drop(state);
        let op = self.ops.start(&rn.service.parent, Any::pack(&rev)).await;
        self.ops.finish(&op.name, Ok(Any::pack(&rev))).await;
        self.ops.get(&op.name).await
    }

    /// Writes a record, mapping a failure to INTERNAL (nothing is half done: callers write
    /// before they change memory).
    pub(super) fn put<T: serde::Serialize>(
        &self,
        kind: &str,
        key: &str,
        v: &T,
    ) -> Result<(), Status> {
        self.store.put(kind, key, v).map_err(|e| {
            warn!("storing {key}: {}", crate::util::Chain(&e));
            Status::internal(format!("could not store {key}: {}", crate::util::Chain(&e)))
        })
    }

    pub(super) fn delete_stored(&self, kind: &str, key: &str) {
        if let Err(e) = self.store.delete(kind, key) {
            warn!("deleting the record of {key}: {}", crate::util::Chain(&e));
        }
    }
}

/// What a deploy may do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// CreateService: the service must not exist.
    Create,
    /// UpdateService, with the update mask's fields (all settable fields without one).
    Update(Option<Vec<&'static str>>),
}

fn not_found_service(name: &ServiceName) -> Status {
    Status::not_found(format!("service {name} not found"))
}

pub(super) use super::resource::short;

/// The template without its revision name (which alone does not make a new revision).
fn strip_revision(t: &v2::RevisionTemplate) -> v2::RevisionTemplate {
    let mut t = t.clone();
    t.revision.clear();
    t
}

fn newest_first<T>(list: &mut [T], time: impl Fn(&T) -> Option<crate::pb::timestamp::Timestamp>) {
    list.sort_by(|a, b| {
        let key = |t: Option<crate::pb::timestamp::Timestamp>| t.map(|t| (t.seconds, t.nanos));
        key(time(b)).cmp(&key(time(a)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_paths() {
        assert_eq!(mask_field("template").unwrap(), "template");
        assert_eq!(mask_field("template.containers").unwrap(), "template");
        assert_eq!(mask_field("clientVersion").unwrap(), "client_version");
        assert_eq!(mask_field("client_version").unwrap(), "client_version");
        assert_eq!(
            mask_field("uri").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn revision_ids() {
        let mut svc = v2::Service {
            template: Some(Default::default()),
            ..Default::default()
        };
        let taken = BTreeMap::new();
        let id = revision_id(&svc, "hello", 3, &taken).unwrap();
        assert!(id.starts_with("hello-00003-"), "{id}");
        svc.template.as_mut().unwrap().revision = "hello-blue".into();
        assert_eq!(revision_id(&svc, "hello", 3, &taken).unwrap(), "hello-blue");
        let taken = BTreeMap::from([("hello-blue".to_string(), v2::Revision::default())]);
        assert_eq!(
            revision_id(&svc, "hello", 3, &taken).unwrap_err().code(),
            tonic::Code::AlreadyExists
        );
        svc.template.as_mut().unwrap().revision = "other-blue".into();
        assert_eq!(
            revision_id(&svc, "hello", 3, &BTreeMap::new())
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn etags() {
        assert!(check_etag("", "\"a\"", "s").is_ok());
        assert!(check_etag("\"a\"", "\"a\"", "s").is_ok());
        assert_eq!(
            check_etag("\"b\"", "\"a\"", "s").unwrap_err().code(),
            tonic::Code::Aborted
        );
    }

    #[test]
    fn services_under_a_parent() {
        let p = |s: &str| Parent::parse("parent", s).unwrap();
        let svc = "projects/p/locations/us-central1/services/hello";
        for (parent, want) in [
            ("projects/p/locations/us-central1", true),
            ("projects/p/locations/-", true),
            ("projects/p/locations/europe-west1", false),
            ("projects/q/locations/-", false),
            ("projects/p/locations/us", false),
        ] {
            assert_eq!(under(svc, &p(parent)), want, "{parent}");
        }
    }
}
