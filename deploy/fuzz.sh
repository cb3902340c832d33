#!/usr/bin/env bash
# The longer fuzzing run (issue 18): the property tests of the hand-written parsers with
# many more cases than `cargo test` (deploy/test.sh) runs. Usage:
#   bash deploy/fuzz.sh [CASES]      # default 20000 per property
# The targets: the client request head parser (src/ingress/downstream/proptests.rs), the
# upstream HTTP/1 response parser and chunked decoder
# (src/ingress/upstream_h1/proptests.rs), the raw path against hyper's (a differential
# test, src/ingress/differential_tests.rs), the archive importer's planning
# (src/image/archive/proptests.rs) and the gcloud-style flag parsers (src/spec/proptests.rs).
# A failure prints the smallest input proptest found; add it to the file's seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-20000}
PROPTEST_CASES=$cases cargo test --release --lib -- \
  ingress::upstream_h1::proptests ingress::downstream::proptests ingress::differential_tests image::archive::proptests spec::proptests
