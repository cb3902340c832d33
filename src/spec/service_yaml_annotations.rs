//! What each platform annotation (and label) of a service.yaml means to runlet, as one
//! plain function per scope ([`service`], [`template`]) with a table test: mapped to a
//! field, accepted with no local effect (listed once to the user), output only (ignored
//! silently: gcloud and Cloud Run write them), or refused with the reason. Keys outside
//! the platform's prefixes are the user's and kept as they are.

/// What runlet does with one annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// Mapped to a field of the Admin API's `Service` (and written back on export).
    Mapped,
    /// Accepted; configures Google's own infrastructure, nothing on one machine.
    NoLocalEffect,
    /// Written by Cloud Run or gcloud, not by the user: ignored.
    OutputOnly,
    /// Would change behaviour runlet cannot honour.
    Refused(&'static str),
    /// Not a platform key: the user's own, kept.
    User,
}

/// The platform's prefixes (the Admin API refuses user keys under them).
pub const PLATFORM_PREFIXES: &[&str] = &[
    "run.googleapis.com",
    "cloud.googleapis.com",
    "serving.knative.dev",
    "autoscaling.knative.dev",
    "client.knative.dev",
    "features.knative.dev",
];

pub const INGRESS: &str = "run.googleapis.com/ingress";
pub const DESCRIPTION: &str = "run.googleapis.com/description";
pub const MIN_SCALE: &str = "autoscaling.knative.dev/minScale";
pub const MAX_SCALE: &str = "autoscaling.knative.dev/maxScale";
pub const SERVICE_MIN_SCALE: &str = "run.googleapis.com/minScale";
pub const SERVICE_MAX_SCALE: &str = "run.googleapis.com/maxScale";
pub const CPU_THROTTLING: &str = "run.googleapis.com/cpu-throttling";
pub const STARTUP_CPU_BOOST: &str = "run.googleapis.com/startup-cpu-boost";
pub const EXECUTION_ENVIRONMENT: &str = "run.googleapis.com/execution-environment";
pub const CONTAINER_DEPENDENCIES: &str = "run.googleapis.com/container-dependencies";
pub const SECRETS: &str = "run.googleapis.com/secrets";
pub const SESSION_AFFINITY: &str = "run.googleapis.com/sessionAffinity";
pub const LOCATION_LABEL: &str = "cloud.googleapis.com/location";

const VPC: &str = "VPC access is not available on one machine: instances reach the host's network through NAT; remove it";
const CLOUD_SQL: &str = "Cloud SQL connections are not made by runlet: run the Cloud SQL Auth Proxy as a sidecar container instead; remove it";
const CMEK: &str = "customer-managed encryption keys are not supported; remove it";

/// Written by Cloud Run or gcloud on both the service and its template.
const OUTPUT_ONLY: &[&str] = &[
    "serving.knative.dev/creator",
    "serving.knative.dev/lastModifier",
    "run.googleapis.com/client-name",
    "run.googleapis.com/client-version",
    "run.googleapis.com/creatorEmail",
    "run.googleapis.com/lastModifierEmail",
    "run.googleapis.com/operation-id",
    "run.googleapis.com/ingress-status",
    "run.googleapis.com/urls",
    "run.googleapis.com/satisfiesPzs",
    "run.googleapis.com/build-id",
    "run.googleapis.com/build-name",
    "run.googleapis.com/build-image-uri",
    "run.googleapis.com/build-source-location",
    "run.googleapis.com/build-function-target",
    "run.googleapis.com/build-enable-automatic-updates",
    "run.googleapis.com/build-environment-variables",
    "run.googleapis.com/build-worker-pool",
    "run.googleapis.com/build-service-account",
    "run.googleapis.com/source-location",
];

/// An annotation of the service (`metadata.annotations`).
pub fn service(key: &str) -> Meaning {
    match key {
        INGRESS | DESCRIPTION | SERVICE_MIN_SCALE | SERVICE_MAX_SCALE => Meaning::Mapped,
        "run.googleapis.com/launch-stage"
        | "run.googleapis.com/binary-authorization"
        | "run.googleapis.com/binary-authorization-breakglass"
        | "run.googleapis.com/iap-enabled"
        | "run.googleapis.com/invoker-iam-disabled"
        | "run.googleapis.com/default-url-disabled"
        | "run.googleapis.com/custom-audiences"
        | "run.googleapis.com/threat-detection"
        | "run.googleapis.com/max-surge"
        | "run.googleapis.com/max-unavailable"
        | "run.googleapis.com/gclb-domain-name" => Meaning::NoLocalEffect,
        "run.googleapis.com/scalingMode" | "run.googleapis.com/manualInstanceCount" => {
            Meaning::Refused("manual scaling is not read from service.yaml yet: use autoscaling.knative.dev/minScale and maxScale on the template")
        }
        "run.googleapis.com/regions" => {
            Meaning::Refused("multi-region services are not available on one machine; remove it")
        }
        k => common(k),
    }
}

/// An annotation of the revision template (`spec.template.metadata.annotations`).
pub fn template(key: &str) -> Meaning {
    match key {
        MIN_SCALE
        | MAX_SCALE
        | CPU_THROTTLING
        | STARTUP_CPU_BOOST
        | EXECUTION_ENVIRONMENT
        | CONTAINER_DEPENDENCIES
        | SECRETS
        | SESSION_AFFINITY => Meaning::Mapped,
        "run.googleapis.com/gpu-zonal-redundancy-disabled" | "run.googleapis.com/base-images" => {
            Meaning::NoLocalEffect
        }
        "run.googleapis.com/vpc-access-connector"
        | "run.googleapis.com/vpc-access-egress"
        | "run.googleapis.com/network-interfaces" => Meaning::Refused(VPC),
        "run.googleapis.com/cloudsql-instances" => Meaning::Refused(CLOUD_SQL),
        "run.googleapis.com/encryption-key"
        | "run.googleapis.com/post-key-revocation-action-type"
        | "run.googleapis.com/encryption-key-shutdown-hours" => Meaning::Refused(CMEK),
        "run.googleapis.com/health-check-disabled" => Meaning::Refused(
            "runlet always checks that an instance starts (startup probe or TCP); remove it",
        ),
        "run.googleapis.com/mesh" | "run.googleapis.com/mesh-dataplane" => {
            Meaning::Refused("Cloud Service Mesh is not available on one machine; remove it")
        }
        k => common(k),
    }
}

fn common(key: &str) -> Meaning {
    if OUTPUT_ONLY.contains(&key) {
        return Meaning::OutputOnly;
    }
    let prefix = key.split_once('/').map_or("", |(p, _)| p);
    if PLATFORM_PREFIXES.contains(&prefix) {
        Meaning::Refused("runlet does not know this platform annotation")
    } else {
        Meaning::User
    }
}

/// Labels the platform writes (the region, gcloud's nonce, the probe type): ignored on
/// read. Other platform labels go on and are refused by the template's check.
pub fn label_is_output(key: &str) -> bool {
    matches!(
        key,
        LOCATION_LABEL
            | "client.knative.dev/nonce"
            | "run.googleapis.com/startupProbeType"
            | "run.googleapis.com/satisfiesPzs"
            | "serving.knative.dev/configuration"
            | "serving.knative.dev/configurationGeneration"
            | "serving.knative.dev/revision"
            | "serving.knative.dev/revisionUID"
            | "serving.knative.dev/route"
            | "serving.knative.dev/service"
            | "serving.knative.dev/serviceUid"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_are_sorted_by_meaning() {
        let svc = [
            ("run.googleapis.com/ingress", Meaning::Mapped),
            ("run.googleapis.com/launch-stage", Meaning::NoLocalEffect),
            ("run.googleapis.com/ingress-status", Meaning::OutputOnly),
            ("serving.knative.dev/creator", Meaning::OutputOnly),
            (
                "run.googleapis.com/invoker-iam-disabled",
                Meaning::NoLocalEffect,
            ),
            ("team", Meaning::User),
            ("example.com/owner", Meaning::User),
            ("runlet.io/listen", Meaning::User),
        ];
        for (k, want) in svc {
            assert_eq!(service(k), want, "{k}");
        }
        assert!(matches!(
            service("run.googleapis.com/regions"),
            Meaning::Refused(_)
        ));
        let tpl = [
            ("autoscaling.knative.dev/maxScale", Meaning::Mapped),
            ("run.googleapis.com/container-dependencies", Meaning::Mapped),
            ("run.googleapis.com/cpu-throttling", Meaning::Mapped),
            ("run.googleapis.com/client-name", Meaning::OutputOnly),
            ("run.googleapis.com/base-images", Meaning::NoLocalEffect),
        ];
        for (k, want) in tpl {
            assert_eq!(template(k), want, "{k}");
        }
        for k in [
            "run.googleapis.com/vpc-access-connector",
            "run.googleapis.com/cloudsql-instances",
            "run.googleapis.com/encryption-key",
            "run.googleapis.com/no-such-thing",
            "autoscaling.knative.dev/target",
        ] {
            assert!(matches!(template(k), Meaning::Refused(_)), "{k}");
        }
        assert!(label_is_output("cloud.googleapis.com/location"));
        assert!(!label_is_output("team"));
    }
}
