//! The CRD: the committed YAML is the generated one, the schema is structural, and the CEL rules
//! (evaluated client-side by kube's `cel` feature, as the API server would) accept every valid
//! object and refuse each invalid one with a message naming the field.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use zmq_proxy_api::socket::{Role, SocketType, allowed_pairs};
use zmq_proxy_operator::crd::{ZmqProxy, socket_rules, spec_rules};

fn committed_crd() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/zmqproxy.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn schema() -> Value {
    let crd = serde_json::to_value(ZmqProxy::crd()).expect("CRD serializes");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The API server's CEL errors for `object` (an empty list when it would be accepted).
fn cel_errors(object: &Value) -> Vec<(String, String)> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| (e.field_path.clone(), e.message.clone()))
            .collect(),
    }
}

fn object(spec: Value) -> Value {
    json!({
        "apiVersion": "zmqproxy.io/v1alpha1",
        "kind": "ZmqProxy",
        "metadata": {"name": "tasks", "namespace": "default"},
        "spec": spec,
    })
}

fn queue() -> Value {
    json!({"frontend": {"type": "ROUTER", "port": 5555}, "backend": {"type": "DEALER", "port": 5556}})
}

#[test]
fn committed_crd_is_the_generated_one() {
    let generated = serde_yaml::to_string(&ZmqProxy::crd()).expect("CRD serializes");
    assert!(
        committed_crd() == generated,
        "crds/zmqproxy.yaml is stale: run `cargo run -p zmq-proxy-operator --bin crdgen > crds/zmqproxy.yaml`"
    );
}

#[test]
fn crd_names_scope_and_subresources_match_the_api() {
    let crd = ZmqProxy::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("zmqproxies.zmqproxy.io"));
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["zp".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let sub = version.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some());
    let scale = sub.scale.as_ref().expect("scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(scale.label_selector_path.as_deref(), Some(".status.selector"));
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) == 0)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Frontend", "Backend", "Ready", "Age"]);
}

/// Walks every node of the schema and returns the structural-schema violations found.
fn structural_violations(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    for forbidden in ["anyOf", "oneOf", "allOf", "not", "$ref", "definitions", "$defs"] {
        if obj.contains_key(forbidden) {
            out.push(format!("{path}: has {forbidden}"));
        }
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&json!(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    match obj.get("type").and_then(Value::as_str) {
        Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
        Some(other) => out.push(format!("{path}: type {other}")),
        None if int_or_string || preserve => {}
        None => out.push(format!("{path}: no type")),
    }
    if let Some(format) = obj.get("format").and_then(Value::as_str)
        && (format.starts_with("uint")
            || format == "double" && obj.get("type") == Some(&json!("integer")))
    {
        out.push(format!("{path}: format {format}"));
    }
    if let Some(values) = obj.get("enum").and_then(Value::as_array)
        && values.iter().any(Value::is_null)
    {
        out.push(format!("{path}: enum lists null"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            structural_violations(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(items, &format!("{path}[]"), out);
    }
    if let Some(additional) = obj.get("additionalProperties")
        && additional.is_object()
    {
        structural_violations(additional, &format!("{path}{{}}"), out);
    }
}

#[test]
fn schema_is_structural() {
    let mut violations = Vec::new();
    structural_violations(&schema(), "", &mut violations);
    assert!(violations.is_empty(), "non-structural schema nodes:\n{}", violations.join("\n"));
    // The walker itself must find things, or it proves nothing.
    let mut found = Vec::new();
    structural_violations(
        &json!({"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}, "b": {"type": "integer", "format": "uint16"}}}),
        "",
        &mut found,
    );
    assert_eq!(found.len(), 3, "{found:?}");
}

#[test]
fn schema_types_ports_replicas_and_socket_types() {
    let s = schema();
    let spec = &s["properties"]["spec"];
    for socket in ["frontend", "backend", "capture"] {
        let port = &spec["properties"][socket]["properties"]["port"];
        assert_eq!(port["minimum"].as_f64(), Some(1.0), "{socket}");
        assert_eq!(port["maximum"].as_f64(), Some(65535.0), "{socket}");
        let types: Vec<&str> = spec["properties"][socket]["properties"]["type"]["enum"]
            .as_array()
            .expect("type enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let all: Vec<&str> = SocketType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(types, all, "{socket}");
    }
    assert_eq!(spec["properties"]["control"]["properties"]["port"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(spec["properties"]["metricsPort"]["maximum"].as_f64(), Some(65535.0));
    assert_eq!(spec["properties"]["replicas"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(spec["properties"]["replicas"]["default"], json!(1));
    assert_eq!(spec["required"], json!(["backend", "frontend"]));
    let rules = spec["x-kubernetes-validations"].as_array().expect("CEL rules on spec");
    assert_eq!(rules.len(), spec_rules().len());
    assert!(rules.iter().all(|r| r["fieldPath"].as_str().is_some_and(|p| p.starts_with('.'))));
    // A socket's own rules sit on its schema, where a status write costs the API server a
    // lookup among the socket's fields rather than the spec's.
    for role in Role::ALL {
        let on_socket = spec["properties"][role.as_str()]["x-kubernetes-validations"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(on_socket, socket_rules(role).len(), "{role}");
        assert!(on_socket > 0, "{role}");
    }
    let socket_local = rules.iter().filter_map(|r| r["rule"].as_str()).filter(|r| {
        r.contains(".security")
            || r.contains(".nodrop")
            || r.contains(".ipc.")
            || r.contains("connect)")
    });
    assert_eq!(socket_local.count(), 0, "a rule of one socket left on the spec");
    let status = &s["properties"]["status"]["properties"]["conditions"];
    assert_eq!(status["x-kubernetes-list-type"], json!("map"));
    assert_eq!(status["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn every_supported_pair_is_accepted() {
    for (frontend, backend) in allowed_pairs() {
        let spec = json!({"frontend": {"type": frontend, "port": 1}, "backend": {"type": backend, "port": 2}});
        assert_eq!(
            cel_errors(&object(spec)),
            Vec::<(String, String)>::new(),
            "{frontend}/{backend}"
        );
    }
}

#[test]
fn unsupported_pair_is_refused_on_backend_type_with_the_proxys_words() {
    let spec =
        json!({"frontend": {"type": "ROUTER", "port": 1}, "backend": {"type": "PUSH", "port": 2}});
    let errors = cel_errors(&object(spec));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "spec.backend.type");
    let expected = zmq_proxy_api::socket::pair_refusal(SocketType::Router, SocketType::Push);
    assert_eq!(Some(errors[0].1.clone()), expected);
}

#[test]
fn full_spec_with_capture_and_control_is_accepted() {
    let mut spec = queue();
    spec["capture"] = json!({"type": "PUB", "port": 5557});
    spec["control"] = json!({"port": 5558});
    spec["metricsPort"] = json!(9090);
    spec["replicas"] = json!(3);
    assert_eq!(cel_errors(&object(spec)), Vec::<(String, String)>::new());
}

#[test]
fn every_capture_type_is_accepted_and_pair_is_refused_with_its_reason() {
    for t in zmq_proxy_api::socket::CAPTURE_TYPES {
        let mut spec = queue();
        spec["capture"] = json!({"type": t, "port": 5557});
        assert_eq!(cel_errors(&object(spec)), Vec::<(String, String)>::new(), "{t}");
    }
    let mut spec = queue();
    spec["capture"] = json!({"type": "PAIR", "port": 5557});
    let errors = cel_errors(&object(spec));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "spec.capture.type");
    assert!(errors[0].1.contains("no PAIR socket"), "{}", errors[0].1);

    let mut spec = queue();
    spec["capture"] = json!({"type": "ROUTER", "port": 5557});
    let errors = cel_errors(&object(spec));
    assert_eq!(
        errors,
        vec![(
            "spec.capture.type".to_string(),
            "capture type ROUTER is not supported; use one of PUB, DEALER, PUSH".to_string()
        )]
    );
}

#[test]
fn duplicate_ports_name_the_later_field_and_the_earlier_one() {
    let cases = [
        (json!({"backend": {"type": "DEALER", "port": 5555}}), "spec.backend.port", "frontend"),
        (json!({"capture": {"type": "PUB", "port": 5556}}), "spec.capture.port", "backend"),
        (json!({"control": {"port": 5555}}), "spec.control.port", "frontend"),
        (json!({"metricsPort": 5556}), "spec.metricsPort", "backend"),
    ];
    for (patch, field, other) in cases {
        let mut spec = queue();
        for (k, v) in patch.as_object().expect("object") {
            spec[k] = v.clone();
        }
        let errors = cel_errors(&object(spec));
        assert_eq!(errors.len(), 1, "{field}: {errors:?}");
        assert_eq!(errors[0].0, field);
        assert_eq!(errors[0].1, format!("port is already used by {other}; ports must be distinct"));
    }
    // capture and control clashing with each other, not with the main sockets.
    let mut spec = queue();
    spec["capture"] = json!({"type": "PUB", "port": 6000});
    spec["control"] = json!({"port": 6000});
    let errors = cel_errors(&object(spec));
    assert_eq!(
        errors,
        vec![(
            "spec.control.port".to_string(),
            "port is already used by capture; ports must be distinct".to_string()
        )]
    );
}

/// `nodrop` is refused where the proxy refuses it, with the proxy's words; every other option is
/// bounded by the schema alone (no CEL).
#[test]
fn nodrop_is_refused_off_pub_and_xpub_and_on_the_capture_with_the_proxys_words() {
    use zmq_proxy_api::options::{NODROP_CAPTURE_REFUSAL, nodrop_type_refusal};
    let forwarder = || json!({"frontend": {"type": "XSUB", "port": 1}, "backend": {"type": "XPUB", "port": 2, "nodrop": true, "sndhwm": 10}});
    assert_eq!(cel_errors(&object(forwarder())), Vec::<(String, String)>::new());
    let mut spec = forwarder();
    spec["frontend"]["nodrop"] = json!(true);
    let errors = cel_errors(&object(spec));
    assert_eq!(errors, vec![("spec.frontend.nodrop".to_string(), nodrop_type_refusal("XSUB"))]);
    let mut spec = forwarder();
    spec["frontend"]["nodrop"] = json!(false);
    assert!(cel_errors(&object(spec)).is_empty(), "false is allowed anywhere");
    let mut spec = forwarder();
    spec["capture"] = json!({"type": "PUB", "port": 3, "nodrop": true});
    let errors = cel_errors(&object(spec));
    assert_eq!(
        errors,
        vec![("spec.capture.nodrop".to_string(), NODROP_CAPTURE_REFUSAL.to_string())]
    );
}

#[test]
fn default_metrics_port_clashing_with_a_socket_is_refused() {
    // metricsPort is defaulted to 9090 before the rules run, as on the API server.
    let spec =
        json!({"frontend": {"type": "PULL", "port": 9090}, "backend": {"type": "PUSH", "port": 2}});
    let errors = cel_errors(&object(spec));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "spec.metricsPort");
}

#[test]
fn names_that_cannot_name_a_service_or_label_a_pod_are_refused() {
    // The federation's Service is `<name>-federation`: 63 characters at most.
    let mut long = object(queue());
    long["metadata"]["name"] = json!("a".repeat(53));
    assert_eq!(cel_errors(&long).len(), 1);
    let mut dotted = object(queue());
    dotted["metadata"]["name"] = json!("tasks.v2");
    let errors = cel_errors(&dotted);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].1.contains("metadata.name"), "{errors:?}");
    let mut ok = object(queue());
    ok["metadata"]["name"] = json!("a".repeat(52));
    assert!(cel_errors(&ok).is_empty());
}

#[test]
fn typed_objects_validate_through_the_derived_crd() {
    let zp: ZmqProxy = serde_yaml::from_str(
        "apiVersion: zmqproxy.io/v1alpha1\nkind: ZmqProxy\nmetadata: {name: tasks}\nspec:\n  frontend: {type: XSUB, port: 5555}\n  backend: {type: XPUB, port: 5556}\n  capture: {type: PAIR, port: 5557}\n",
    )
    .expect("valid yaml");
    let errors = kube::core::cel::validate_cel(&zp).expect_err("PAIR capture is refused");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].field_path, "spec.capture.type");
}

#[test]
fn shared_queue_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/shared-queue.yaml");
    let text = std::fs::read_to_string(path).expect("examples/shared-queue.yaml");
    let zp: ZmqProxy = serde_yaml::from_str(&text).expect("the example parses as a ZmqProxy");
    assert!(kube::core::cel::validate_cel(&zp).is_ok());
    assert_eq!(zp.spec.sockets.frontend.port, Some(5555));
}

#[test]
fn every_form_of_security_is_accepted() {
    let curve = |c: Value| json!({"security": {"curve": c}});
    let key = json!({"secretName": "events-curve"});
    let forms = [
        json!({"serverKey": key, "authorizedKeys": {"configMapName": "clients", "key": "clients.txt"}}),
        json!({"serverKey": key, "authorizedKeys": {"secretName": "clients"}}),
        json!({"serverKey": {"secretName": "k.v2", "key": ".hidden-key"}, "allowAnyClient": true}),
        json!({"serverKey": key, "authorizedKeys": {"secretName": "c"}, "allowAnyClient": false}),
    ];
    for form in forms {
        let mut spec = queue();
        for socket in ["frontend", "backend"] {
            let extra = curve(form.clone());
            spec[socket]["security"] = extra["security"].clone();
        }
        spec["capture"] =
            json!({"type": "PUB", "port": 5557, "security": curve(form.clone())["security"]});
        spec["control"] = json!({"port": 5558, "security": curve(form.clone())["security"]});
        assert_eq!(cel_errors(&object(spec)), Vec::<(String, String)>::new(), "{form}");
    }
}

#[test]
fn security_rules_sit_on_their_sections_and_read_no_string() {
    let s = schema();
    let curve = &s["properties"]["spec"]["properties"]["control"]["properties"]["security"]["properties"]
        ["curve"];
    // serverKey is optional in the schema (a connecting socket has none); the spec's rules
    // require it of every socket that binds.
    assert_eq!(curve["required"], Value::Null);
    let rules = curve["x-kubernetes-validations"].as_array().expect("rules on curve");
    assert_eq!(rules.len(), 5);
    let read_strings =
        rules.iter().any(|r| r["rule"].as_str().is_some_and(|r| r.contains("size(")));
    assert!(!read_strings, "{rules:?}");
    let list = &curve["properties"]["authorizedKeys"]["x-kubernetes-validations"];
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let name = &curve["properties"]["serverKey"]["properties"]["secretName"];
    assert_eq!(name["maxLength"], json!(253));
    assert_eq!(
        curve["properties"]["serverKey"]["properties"]["key"]["default"],
        json!("server_secret")
    );
    // The secured example is valid as it stands.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/secure-forwarder.yaml");
    let zp: ZmqProxy = serde_yaml::from_str(&std::fs::read_to_string(path).expect("example"))
        .expect("parses as a ZmqProxy");
    assert!(kube::core::cel::validate_cel(&zp).is_ok());
    assert!(
        zp.spec.sockets.frontend.security.is_some() && zp.spec.sockets.backend.security.is_some()
    );
}

/// Placement and overrides: every new field at once is valid; a grace period shorter
/// than the lame duck plus the drain (defaulted ones included) is refused on its own field, as is
/// a PodDisruptionBudget with both bounds.
#[test]
fn placement_fields_are_accepted_and_a_short_grace_period_is_refused() {
    let mut spec = queue();
    spec["replicas"] = json!(2);
    spec["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]);
    spec["priorityClassName"] = json!("messaging");
    spec["serviceAccountName"] = json!("zmq-proxy");
    spec["terminationGracePeriodSeconds"] = json!(10);
    spec["serviceLabels"] = json!({"team": "queues"});
    spec["podDisruptionBudget"] = json!({"maxUnavailable": "50%"});
    spec["podTemplate"] = json!({"metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}});
    assert_eq!(cel_errors(&object(spec.clone())), Vec::<(String, String)>::new());

    let expected = vec![(
        "spec.terminationGracePeriodSeconds".to_string(),
        zmq_proxy_operator::crd::GRACE_PERIOD_TOO_SHORT.to_string(),
    )];
    // The defaults (5 s lame duck, 5 s drain) count.
    spec["terminationGracePeriodSeconds"] = json!(9);
    assert_eq!(cel_errors(&object(spec.clone())), expected);
    spec["terminationGracePeriodSeconds"] = json!(30);
    spec["drainTimeoutSeconds"] = json!(30);
    assert_eq!(cel_errors(&object(spec.clone())), expected);

    spec["terminationGracePeriodSeconds"] = json!(60);
    spec["podDisruptionBudget"] = json!({"maxUnavailable": 1, "minAvailable": 1});
    assert_eq!(
        cel_errors(&object(spec)),
        vec![(
            "spec.podDisruptionBudget.minAvailable".to_string(),
            zmq_proxy_operator::crd::PDB_BOTH_BOUNDS.to_string()
        )]
    );
}

/// The Service IP fields: enums with the Kubernetes spellings, at most two distinct families,
/// length bounds the API server can price, and SingleStack with two families refused on
/// `spec.ipFamilies`.
#[test]
fn ip_family_fields_are_bounded_enums_and_single_stack_takes_one_family() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    assert_eq!(
        spec["ipFamilyPolicy"]["enum"],
        json!(["SingleStack", "PreferDualStack", "RequireDualStack"])
    );
    assert!(spec["ipFamilyPolicy"]["maxLength"].as_u64().is_some());
    assert_eq!(spec["ipFamilies"]["maxItems"], json!(2));
    assert_eq!(spec["ipFamilies"]["items"]["enum"], json!(["IPv4", "IPv6"]));
    assert!(spec["ipFamilies"]["items"]["maxLength"].as_u64().is_some());
    let with = |policy: Option<&str>, families: Option<Value>| {
        let mut spec = queue();
        if let Some(p) = policy {
            spec["ipFamilyPolicy"] = json!(p);
        }
        if let Some(f) = families {
            spec["ipFamilies"] = f;
        }
        cel_errors(&object(spec))
    };
    assert_eq!(
        with(Some("SingleStack"), Some(json!(["IPv4", "IPv6"]))),
        vec![(
            "spec.ipFamilies".to_string(),
            "a SingleStack Service has one IP family; use PreferDualStack or RequireDualStack for two"
                .to_string()
        )]
    );
    assert_eq!(
        with(None, Some(json!(["IPv6", "IPv6"]))),
        vec![("spec.ipFamilies".to_string(), "an IP family is listed twice".to_string())]
    );
    for (policy, families) in [
        (None, None),
        (Some("SingleStack"), Some(json!(["IPv6"]))),
        (Some("PreferDualStack"), Some(json!(["IPv6", "IPv4"]))),
        (Some("RequireDualStack"), None),
        (None, Some(json!(["IPv4", "IPv6"]))),
    ] {
        assert_eq!(with(policy, families.clone()), Vec::new(), "{policy:?} {families:?}");
    }
}

/// `zmq-proxy --config` refuses a field it does not know (a typo must not run with defaults),
/// so every field of this CRD's spec must be part of the socket section or have its local
/// meaning decided in `zmq_proxy_api::local`: a field added here without one fails this test.
#[test]
fn every_spec_field_has_a_meaning_for_the_local_manifest_reader() {
    let schema = schema();
    let props = schema["properties"]["spec"]["properties"].as_object().expect("spec properties");
    let sockets =
        serde_json::to_value(schemars::schema_for!(zmq_proxy_api::manifest::ProxySockets))
            .expect("schema");
    let socket_fields = sockets["properties"].as_object().expect("socket section properties");
    let undecided: Vec<&String> = props
        .keys()
        .filter(|k| !socket_fields.contains_key(*k) && !zmq_proxy_api::local::is_decided(k))
        .collect();
    assert!(undecided.is_empty(), "spec fields without a local meaning: {undecided:?}");
}

/// More than one replica is a federation: refused for a pattern that does not federate (naming
/// `spec.replicas`), and the federation port must then be its own; one replica may keep a
/// socket on that port.
#[test]
fn several_replicas_need_a_federated_pattern_and_a_port_of_their_own() {
    let pubsub =
        json!({"frontend": {"type": "SUB", "port": 1}, "backend": {"type": "PUB", "port": 2}});
    assert!(cel_errors(&object(pubsub.clone())).is_empty());
    let mut scaled = pubsub.clone();
    scaled["replicas"] = json!(2);
    assert_eq!(
        cel_errors(&object(scaled)),
        vec![("spec.replicas".to_string(), zmq_proxy_operator::crd::NOT_FEDERATED.to_string())]
    );
    for (front, back) in [("XSUB", "XPUB"), ("PUSH", "PULL"), ("DEALER", "ROUTER")] {
        let spec = json!({"frontend": {"type": front, "port": 1}, "backend": {"type": back, "port": 2}, "replicas": 3});
        assert!(cel_errors(&object(spec)).is_empty(), "{front}/{back}");
    }
    // The default federation port (5570) taken by a socket: fine alone, refused federated.
    let mut spec = queue();
    spec["frontend"]["port"] = json!(5570);
    assert!(cel_errors(&object(spec.clone())).is_empty());
    spec["replicas"] = json!(2);
    let errors = cel_errors(&object(spec.clone()));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "spec.federationPort");
    assert!(errors[0].1.contains("frontend"), "{errors:?}");
    spec["federationPort"] = json!(9090);
    let errors = cel_errors(&object(spec.clone()));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].1.contains("metricsPort"), "{errors:?}");
    spec["federationPort"] = json!(6000);
    assert!(cel_errors(&object(spec)).is_empty());
}
