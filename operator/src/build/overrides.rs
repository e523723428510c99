//! `spec.podTemplate`: the strategic merge of a user's partial pod template over the one the
//! operator builds, and the check that the result still runs the proxy the spec describes.
//! Pure functions over `serde_json::Value`, so the merge sees exactly what the user wrote
//! (including fields the typed PodSpec would drop) and is tested without Kubernetes.
//!
//! The merge follows Kubernetes' strategic merge patch for a PodTemplateSpec (the patch
//! strategies and merge keys of `k8s.io/api/core/v1`): lists of named things (containers,
//! volumes, env, ...) are merged element by element on their merge key, objects are merged
//! field by field, and everything else (scalars, `args`, `command`, `tolerations`) is replaced.
//! A `null` removes the field. `$patch` directives are not supported.
//!
//! What the operator needs from the pod is not overridable: [`check_required`] compares the
//! merged template with the operator's and names the first field the override changed, and the
//! reconciler refuses the object with that name (Degraded, a Warning event) rather than
//! silently undoing the user's change or writing a pod that cannot work.

use serde_json::{Map, Value};

/// The merge key of the list at `path` (field names from the pod template's root, list indices
/// left out), as Kubernetes' `patchMergeKey`; None for lists that are replaced whole.
pub fn merge_key(path: &[&str]) -> Option<&'static str> {
    const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];
    match path {
        ["spec", list] if CONTAINER_LISTS.contains(list) => Some("name"),
        ["spec", "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims"] => {
            Some("name")
        }
        ["spec", "hostAliases"] => Some("ip"),
        ["spec", "topologySpreadConstraints"] => Some("topologyKey"),
        ["spec", list, field] if CONTAINER_LISTS.contains(list) => match *field {
            "env" => Some("name"),
            // Kubernetes merges container ports on the port number, not on the name.
            "ports" => Some("containerPort"),
            "volumeMounts" => Some("mountPath"),
            "volumeDevices" => Some("devicePath"),
            _ => None,
        },
        _ => None,
    }
}

/// `overlay` merged over `base`, both pod templates (`{metadata, spec}`).
pub fn merge_pod_template(base: &Value, overlay: &Value) -> Value {
    let mut path = Vec::new();
    merge_at(base, overlay, &mut path)
}

fn merge_at<'a>(base: &Value, overlay: &'a Value, path: &mut Vec<&'a str>) -> Value {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (key, value) in o {
                if value.is_null() {
                    out.remove(key);
                    continue;
                }
                path.push(key.as_str());
                let merged = match out.get(key) {
                    Some(existing) => merge_at(existing, value, path),
                    None => without_nulls(value),
                };
                path.pop();
                out.insert(key.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(b), Value::Array(o)) => match merge_key(path) {
            Some(key) => Value::Array(merge_keyed(b, o, key, path)),
            None => without_nulls(overlay),
        },
        _ => without_nulls(overlay),
    }
}

/// Elements of `overlay` merged into the element of `base` with the same `key`, in `base`'s
/// order; new ones appended in `overlay`'s order. An element without the key is appended as is
/// (the API server then says what is wrong with it).
fn merge_keyed<'a>(
    base: &[Value],
    overlay: &'a [Value],
    key: &str,
    path: &mut Vec<&'a str>,
) -> Vec<Value> {
    let mut out: Vec<Value> = base.to_vec();
    for item in overlay {
        let id = item.get(key).filter(|v| !v.is_null());
        match id.and_then(|id| out.iter().position(|b| b.get(key) == Some(id))) {
            Some(at) => out[at] = merge_at(&out[at], item, path),
            None => out.push(without_nulls(item)),
        }
    }
    out
}

/// `value` with the `null` fields of its objects removed (a null asks for no field).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// What the operator's pod must keep whatever the override says: the pod labels the
/// StatefulSet's selector matches, and in the container named `container` the command, the
/// args, every port and every volume mount the operator set, with the volumes behind them.
#[derive(Clone, Debug, Default)]
pub struct Required {
    /// The selector labels.
    pub labels: Vec<(String, String)>,
    /// The proxy container's name.
    pub container: String,
    /// Names of the operator's volumes that must stay as built (the CURVE mounts, the steering
    /// ConfigMap, the federation's key).
    pub volumes: Vec<String>,
}

/// The first field of `merged` that differs from `built` where [`Required`] says it must not,
/// as a path under `spec.podTemplate` with what is wrong; None when the merge kept them all.
pub fn check_required(built: &Value, merged: &Value, required: &Required) -> Option<String> {
    let at = "spec.podTemplate";
    let labels = &merged["metadata"]["labels"];
    for (key, value) in &required.labels {
        if labels.get(key).and_then(Value::as_str) != Some(value.as_str()) {
            return Some(format!(
                "{at}.metadata.labels.{key}: the operator's selector label must stay \"{value}\", or the pods would leave the Deployment"
            ));
        }
    }
    let container = |template: &Value| -> Option<Value> {
        template["spec"]["containers"]
            .as_array()?
            .iter()
            .find(|c| c["name"].as_str() == Some(required.container.as_str()))
            .cloned()
    };
    let name = &required.container;
    let (Some(ours), Some(theirs)) = (container(built), container(merged)) else {
        return Some(format!("{at}.spec.containers: the {name} container must stay"));
    };
    let field = |f: &str| format!("{at}.spec.containers[{name}].{f}");
    for f in ["command", "args"] {
        if ours[f] != theirs[f] {
            return Some(format!(
                "{}: set by the operator from the spec; change the spec's fields instead",
                field(f)
            ));
        }
    }
    for list in ["ports", "volumeMounts"] {
        let kept = |item: &Value| theirs[list].as_array().is_some_and(|l| l.contains(item));
        if let Some(lost) = ours[list].as_array().into_iter().flatten().find(|i| !kept(i)) {
            let key = merge_key(&["spec", "containers", list]).unwrap_or("name");
            return Some(format!(
                "{}: the operator's entry {} {} must stay as it is",
                field(list),
                key,
                lost[key]
            ));
        }
    }
    for volume in &required.volumes {
        let find = |t: &Value| -> Option<Value> {
            t["spec"]["volumes"]
                .as_array()?
                .iter()
                .find(|v| v["name"].as_str() == Some(volume.as_str()))
                .cloned()
        };
        if find(built) != find(merged) {
            return Some(format!(
                "{at}.spec.volumes[{volume}]: holds the operator's CURVE keys or steering file and must stay as the spec says"
            ));
        }
    }
    None
}

/// The first path of `written` that `parsed` lacks: a field the typed pod template dropped when
/// the merged JSON was read into it (a misspelt field, or one newer than the operator's
/// Kubernetes API types). Object paths are dotted, list elements by index.
pub fn first_dropped(written: &Value, parsed: &Value, at: &str) -> Option<String> {
    match (written, parsed) {
        (Value::Object(w), Value::Object(p)) => w.iter().find_map(|(k, wv)| match p.get(k) {
            None if !is_empty(wv) => Some(format!("{at}.{k}")),
            None => None,
            Some(pv) => first_dropped(wv, pv, &format!("{at}.{k}")),
        }),
        (Value::Array(w), Value::Array(p)) => w
            .iter()
            .zip(p)
            .enumerate()
            .find_map(|(i, (wv, pv))| first_dropped(wv, pv, &format!("{at}[{i}]"))),
        _ => None,
    }
}

/// An empty object or list, which the typed template may leave out when serialising.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(o) => o.values().all(is_empty),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn built() -> Value {
        json!({
            "metadata": {"labels": {"app.kubernetes.io/name": "zmq-proxy", "app.kubernetes.io/instance": "tasks"}},
            "spec": {
                "containers": [{
                    "name": "proxy",
                    "image": "zmq-proxy:1",
                    "command": ["zmq-proxy"],
                    "args": ["--frontend-type", "ROUTER"],
                    "ports": [{"name": "frontend", "containerPort": 5555, "protocol": "TCP"},
                              {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                    "volumeMounts": [{"name": "curve-frontend-server-key", "mountPath": "/etc/zmq-proxy/curve/frontend/server-key", "readOnly": true}],
                    "securityContext": {"readOnlyRootFilesystem": true, "runAsNonRoot": true},
                }],
                "volumes": [{"name": "curve-frontend-server-key", "secret": {"secretName": "k"}}],
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
                "tolerations": [{"key": "a", "operator": "Exists"}],
            }
        })
    }

    fn required() -> Required {
        Required {
            labels: vec![
                ("app.kubernetes.io/name".into(), "zmq-proxy".into()),
                ("app.kubernetes.io/instance".into(), "tasks".into()),
            ],
            container: "proxy".into(),
            volumes: vec!["curve-frontend-server-key".into()],
        }
    }

    fn merged_and_checked(overlay: Value) -> (Value, Option<String>) {
        let merged = merge_pod_template(&built(), &overlay);
        let verdict = check_required(&built(), &merged, &required());
        (merged, verdict)
    }

    #[test]
    fn a_sidecar_is_added_after_the_proxy_container() {
        let (merged, verdict) = merged_and_checked(json!({"spec": {"containers": [
            {"name": "log-shipper", "image": "fluent-bit:3", "args": ["-c", "/etc/fb.conf"]}
        ]}}));
        assert_eq!(verdict, None);
        let names: Vec<&str> = merged["spec"]["containers"]
            .as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["proxy", "log-shipper"]);
        assert_eq!(merged["spec"]["containers"][0], built()["spec"]["containers"][0]);
    }

    #[test]
    fn env_on_the_proxy_container_merges_by_name_and_keeps_the_rest() {
        let base = merge_pod_template(
            &built(),
            &json!({"spec": {"containers": [{"name": "proxy", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}),
        );
        let merged = merge_pod_template(
            &base,
            &json!({"spec": {"containers": [{"name": "proxy", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}]}}),
        );
        let proxy = &merged["spec"]["containers"][0];
        assert_eq!(
            proxy["env"],
            json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
        );
        assert_eq!(proxy["args"], built()["spec"]["containers"][0]["args"]);
        assert_eq!(check_required(&built(), &merged, &required()), None);
    }

    #[test]
    fn a_volume_and_its_mount_into_the_proxy_are_added_beside_the_curve_ones() {
        let (merged, verdict) = merged_and_checked(json!({"spec": {
            "volumes": [{"name": "tmp", "emptyDir": {}}],
            "containers": [{"name": "proxy", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
        }}));
        assert_eq!(verdict, None);
        let volumes: Vec<&str> = merged["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(volumes, ["curve-frontend-server-key", "tmp"]);
        let mounts: Vec<&str> = merged["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["mountPath"].as_str())
            .collect();
        assert_eq!(mounts, ["/etc/zmq-proxy/curve/frontend/server-key", "/tmp"]);
    }

    #[test]
    fn security_context_fields_merge_and_scalars_and_plain_lists_are_replaced() {
        let (merged, verdict) = merged_and_checked(json!({"spec": {
            "securityContext": {"supplementalGroups": [4000], "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}]},
            "tolerations": [{"key": "b", "operator": "Exists"}],
            "containers": [{"name": "proxy", "image": "zmq-proxy:2", "securityContext": {"readOnlyRootFilesystem": false}}],
            "dnsPolicy": "None",
        }}));
        assert_eq!(verdict, None);
        let psc = &merged["spec"]["securityContext"];
        assert_eq!(psc["runAsUser"], 65532, "the operator's fields stay");
        assert_eq!(psc["supplementalGroups"], json!([4000]));
        assert_eq!(merged["spec"]["tolerations"], json!([{"key": "b", "operator": "Exists"}]));
        let proxy = &merged["spec"]["containers"][0];
        assert_eq!(proxy["image"], "zmq-proxy:2");
        assert_eq!(
            proxy["securityContext"],
            json!({"readOnlyRootFilesystem": false, "runAsNonRoot": true})
        );
        assert_eq!(merged["spec"]["dnsPolicy"], "None");
    }

    #[test]
    fn null_removes_a_field() {
        let (merged, verdict) = merged_and_checked(json!({"spec": {"tolerations": null,
            "securityContext": {"runAsUser": null}}}));
        assert_eq!(verdict, None);
        assert!(merged["spec"].get("tolerations").is_none());
        assert!(merged["spec"]["securityContext"].get("runAsUser").is_none());
        assert_eq!(merged["spec"]["securityContext"]["runAsNonRoot"], true);
    }

    #[test]
    fn labels_merge_but_a_selector_label_cannot_change() {
        let (merged, verdict) =
            merged_and_checked(json!({"metadata": {"labels": {"team": "queues"}}}));
        assert_eq!(verdict, None);
        assert_eq!(merged["metadata"]["labels"]["team"], "queues");
        let (_, verdict) = merged_and_checked(
            json!({"metadata": {"labels": {"app.kubernetes.io/instance": "other"}}}),
        );
        let m = verdict.expect("refused");
        assert!(
            m.starts_with("spec.podTemplate.metadata.labels.app.kubernetes.io/instance:"),
            "{m}"
        );
    }

    #[test]
    fn the_proxys_command_args_ports_and_mounts_cannot_be_overridden() {
        let refused = |overlay: Value| merged_and_checked(overlay).1.expect("refused");
        let proxy = |fields: Value| {
            let mut c = json!({"name": "proxy"});
            for (k, v) in fields.as_object().cloned().unwrap_or_default() {
                c[k] = v;
            }
            json!({"spec": {"containers": [c]}})
        };
        let m = refused(proxy(json!({"args": ["--frontend-type", "DEALER"]})));
        assert!(m.starts_with("spec.podTemplate.spec.containers[proxy].args:"), "{m}");
        let m = refused(proxy(json!({"command": ["sh"]})));
        assert!(m.starts_with("spec.podTemplate.spec.containers[proxy].command:"), "{m}");
        // Same containerPort, another name: Kubernetes' merge key is the port number.
        let m = refused(proxy(json!({"ports": [{"containerPort": 9090, "name": "http"}]})));
        assert!(m.starts_with("spec.podTemplate.spec.containers[proxy].ports:"), "{m}");
        assert!(m.contains("containerPort 9090"), "{m}");
        let m = refused(proxy(json!({"volumeMounts": [
            {"mountPath": "/etc/zmq-proxy/curve/frontend/server-key", "name": "mine"}]})));
        assert!(m.starts_with("spec.podTemplate.spec.containers[proxy].volumeMounts:"), "{m}");
        let m = refused(json!({"spec": {"volumes": [
            {"name": "curve-frontend-server-key", "secret": {"secretName": "other"}}]}}));
        assert!(m.starts_with("spec.podTemplate.spec.volumes[curve-frontend-server-key]:"), "{m}");
        let m = refused(json!({"spec": {"containers": null}}));
        assert!(m.starts_with("spec.podTemplate.spec.containers:"), "{m}");
        // An extra port of the proxy is fine: it changes nothing the operator set.
        let (_, verdict) =
            merged_and_checked(proxy(json!({"ports": [{"containerPort": 6000, "name": "debug"}]})));
        assert_eq!(verdict, None);
    }

    #[test]
    fn merge_keys_follow_kubernetes_patch_strategies() {
        assert_eq!(merge_key(&["spec", "initContainers"]), Some("name"));
        assert_eq!(merge_key(&["spec", "initContainers", "env"]), Some("name"));
        assert_eq!(merge_key(&["spec", "containers", "ports"]), Some("containerPort"));
        assert_eq!(merge_key(&["spec", "topologySpreadConstraints"]), Some("topologyKey"));
        assert_eq!(merge_key(&["spec", "containers", "args"]), None);
        assert_eq!(merge_key(&["spec", "tolerations"]), None);
        // An init container is matched by name like a container.
        let base = json!({"spec": {"initContainers": [{"name": "init", "image": "a"}]}});
        let merged = merge_pod_template(
            &base,
            &json!({"spec": {"initContainers": [{"name": "init", "image": "b"}, {"name": "two", "image": "c"}]}}),
        );
        assert_eq!(
            merged["spec"]["initContainers"],
            json!([{"name": "init", "image": "b"}, {"name": "two", "image": "c"}])
        );
    }

    #[test]
    fn dropped_fields_are_found_by_path() {
        let written = json!({"spec": {"securityContext": {"fsgroup": 1}, "containers": [{"name": "a", "env": []}]}});
        let parsed = json!({"spec": {"securityContext": {}, "containers": [{"name": "a"}]}});
        assert_eq!(
            first_dropped(&written, &parsed, "spec.podTemplate").as_deref(),
            Some("spec.podTemplate.spec.securityContext.fsgroup")
        );
        assert_eq!(first_dropped(&parsed, &parsed, "x"), None);
    }
}
