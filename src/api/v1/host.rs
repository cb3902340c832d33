//! The region of a v1 call. v1 paths carry only the namespace (the project); gcloud sends
//! a region's calls to a regional host it derives from its endpoint override by prefixing
//! the region: with `api_endpoint_overrides/run http://runlet:PORT/`, region `us-central1`
//! is `http://us-central1-runlet:PORT/` (`DeriveRegionalEndpoint` in gcloud's
//! `command_lib/run/connection_context.py`).

/// The region a request's `Host` names (`us-central1-runlet:8080` → `us-central1`), or
/// None for a host with no region in front (`runlet`, `localhost`, an address). Before
/// `-runlet` any name is a region (`local-runlet`); before another host name (an override
/// other than `runlet`), only what has a Cloud Run region's shape.
pub(crate) fn region_from_host(host: &str) -> Option<String> {
    let host = host.trim();
    // An IPv6 literal carries no region.
    if host.starts_with('[') {
        return None;
    }
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let label = name.split('.').next()?.to_ascii_lowercase();
    // `R-runlet`: any region name before runlet's own host name.
    if let Some(r) = label.strip_suffix("-runlet").filter(|r| !r.is_empty()) {
        return Some(r.to_string());
    }
    // A Cloud Run region is AREA-PLACEDIGITS (us-central1, northamerica-northeast2,
    // europe-west10); what follows its hyphen is the override's host.
    let mut parts = label.splitn(3, '-');
    let (area, place, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let letters = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase());
    let digits_at = place.find(|c: char| c.is_ascii_digit())?;
    let (place_name, place_digits) = place.split_at(digits_at);
    if letters(area)
        && letters(place_name)
        && place_digits.bytes().all(|b| b.is_ascii_digit())
        && !rest.is_empty()
    {
        Some(format!("{area}-{place}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_from_hosts() {
        for (host, want) in [
            ("us-central1-runlet:8080", Some("us-central1")),
            ("us-central1-runlet", Some("us-central1")),
            ("europe-west10-runlet:80", Some("europe-west10")),
            (
                "northamerica-northeast2-runlet:1",
                Some("northamerica-northeast2"),
            ),
            ("us-central1-localhost:8080", Some("us-central1")),
            ("local-runlet:8090", Some("local")),
            ("US-Central1-runlet", Some("us-central1")),
            ("us-central1-run.example.com:443", Some("us-central1")),
            ("runlet:8080", None),
            ("runlet", None),
            ("-runlet:1", None),
            ("[::1]:8080", None),
            ("127.0.0.1:8080", None),
            ("localhost:8080", None),
            ("127.0.0.1:8080", None),
            ("[::1]:8080", None),
            ("us-central1:8080", None),
            ("my-host-name:8080", None),
            ("", None),
        ] {
            assert_eq!(region_from_host(host).as_deref(), want, "{host:?}");
        }
    }
}
