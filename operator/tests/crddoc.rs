//! docs/reference.md is crddoc's output for crds/zmqproxy.yaml, byte for byte, as the chart's CRD
//! copy is the CRD's bytes: a field added to the CRD without regenerating the page fails here.
use std::process::Command;

const REGENERATE: &str = "cargo run -p zmq-proxy-operator --bin crddoc > docs/reference.md";

fn generated() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_crddoc")).output().expect("crddoc runs");
    assert!(out.status.success(), "crddoc failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("crddoc prints UTF-8")
}

#[test]
fn reference_page_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reference.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let fresh = generated();
    if committed != fresh {
        let first = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(fresh.lines().count()));
        panic!(
            "docs/reference.md is stale (first difference at line {}): run `{REGENERATE}`",
            first + 1
        );
    }
}

#[test]
fn reference_page_is_deterministic() {
    assert_eq!(generated(), generated());
}

#[test]
fn reference_page_lists_every_field_with_its_bounds() {
    let page = generated();
    // A field of each kind: a socket option with its bounds, a default, a nested required key, an
    // enum, an embedded Kubernetes type's field, a status field, and a CEL rule's message.
    for needle in [
        "| `spec.frontend.sndhwm` | integer (int64) |",
        "| `spec.replicas` | integer (int32) | `1` |",
        "| `spec.frontend.heartbeatTtl` | integer (int32) |  | min 0; max 65500; multiple of 100 |",
        "| `spec.frontend.security.curve.serverKey.secretName` | string |  | minLength 1; maxLength 253; pattern",
        "| `spec.frontend.port` | integer (int32) |  | min 1; max 65535 |  |",
        "| `spec.backend.connect[].selector.matchLabels` | map[string]string |",
        "one of `ClusterIP`, `NodePort`, `LoadBalancer`",
        "| `spec.affinity.nodeAffinity` |",
        "| `status.federation.replicas` | []object |  | maxItems 100 |",
        "ports must be distinct",
    ] {
        assert!(page.contains(needle), "docs/reference.md lacks {needle:?}");
    }
    // Headings stop at ###, as everywhere in docs/.
    assert!(!page.lines().any(|l| l.starts_with("####")), "a heading deeper than ###");
}
