//! The sidecar webhook against the real API server: registered as the chart registers it (the
//! label `objectSelector`, `failurePolicy: Fail`), but reached at `https://127.0.0.1:PORT`,
//! with its certificate from the operator's own CA (a Secret) and the `caBundle` the operator
//! writes. A labelled pod comes back from the API server with its sidecar; an unlabelled one is
//! untouched; the template's status lists the pod; deleting the template stops the injection;
//! with the webhook down, unlabelled pods of every namespace are still admitted and the labelled
//! ones are held back.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use zmq_proxy_operator::build::BuildOptions;
use zmq_proxy_operator::crd::ZmqProxy;
use zmq_proxy_operator::sidecar::ca::{self, CaConfig};
use zmq_proxy_operator::sidecar::mutate::{INJECTED_ANNOTATION, SIDECAR_CONTAINER};
use zmq_proxy_operator::sidecar::webhook::{self, Handler, Tls};
use zmq_proxy_operator::sidecar::{MUTATE_PATH, SIDECAR_LABEL, cert};

use super::{IMAGE, create_namespace, eventually, field_manager};

const CONFIGURATION: &str = "zmq-proxy-operator-envtest";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// The configuration as the chart writes it, but for a URL (no Service without a kubelet).
fn configuration(url: &str, operator_namespace: &str) -> MutatingWebhookConfiguration {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CONFIGURATION},
        "webhooks": [{
            "name": "sidecar.zmqproxy.io",
            "clientConfig": {"url": url},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "objectSelector": {"matchExpressions": [{"key": SIDECAR_LABEL, "operator": "Exists"}]},
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                "operator": "NotIn", "values": ["kube-system", operator_namespace]}]},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 5,
        }],
    }))
    .expect("configuration")
}

fn pod(name: &str, label: Option<&str>) -> Pod {
    let labels = match label {
        Some(proxy) => json!({"app": "publisher", SIDECAR_LABEL: proxy}),
        None => json!({"app": "publisher"}),
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "python:3.12-slim"}]},
    }))
    .expect("pod")
}

fn has_sidecar(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == SIDECAR_CONTAINER))
}

fn template(namespace: &str) -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sidecar/proxy.yaml");
    let text = std::fs::read_to_string(path).expect("proxy.yaml");
    let mut v: Value = serde_yaml::from_str(&text).expect("proxy.yaml");
    let meta = v["metadata"].as_object_mut().expect("metadata");
    meta.retain(|k, _| k == "name");
    v["metadata"]["namespace"] = json!(namespace);
    v
}

/// The scenario; `namespace` exists, and `other` is created here.
pub async fn sidecar_injection_through_the_webhook(client: &Client, namespace: &str) {
    // The operator's own CA, kept in a Secret of "its" namespace (this one).
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let ca_config = CaConfig {
        namespace: namespace.to_string(),
        secret: "webhook-tls".to_string(),
        names,
        webhook_configuration: CONFIGURATION.to_string(),
    };
    let served = ca::ensure(client, &ca_config, now()).await.expect("CA made");
    let again = ca::ensure(client, &ca_config, now()).await.expect("CA read");
    assert_eq!(served, again, "a CA that is not due is kept");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listener");
    let addr = listener.local_addr().expect("address");
    let url = format!("https://{addr}{MUTATE_PATH}");
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    configs
        .create(&PostParams::default(), &configuration(&url, "zmq-proxy-system"))
        .await
        .expect("configuration created");
    ca::publish_ca_bundle(client, &ca_config).await.expect("caBundle written");
    let bundle = configs.get(CONFIGURATION).await.expect("configuration");
    let written = bundle.webhooks.unwrap_or_default()[0].client_config.ca_bundle.clone();
    assert_eq!(written.map(|b| b.0), Some(cert::ca_bundle(&served.ca_pem, None).into_bytes()));

    let tls = Tls::new(cert::server_config(&served.cert_pem, &served.key_pem).expect("tls"));
    let options = BuildOptions { default_image: IMAGE.to_string(), ..BuildOptions::default() };
    let handler = Handler { client: client.clone(), options };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webhook::serve(listener, tls, handler, async move {
        let _ = stop_rx.await;
    }));

    let zps: Api<ZmqProxy> = Api::namespaced(client.clone(), namespace);
    zps.patch("events-out", &field_manager(), &Patch::Apply(&template(namespace)))
        .await
        .expect("sidecar template created");
    // The API server refuses a change of mode, naming the field.
    let switch = json!({"apiVersion": "zmqproxy.io/v1alpha1", "kind": "ZmqProxy",
        "spec": {"mode": "Workload"}});
    let refused = zps.patch("events-out", &PatchParams::default(), &Patch::Merge(&switch)).await;
    let e = refused.expect_err("mode is fixed").to_string();
    assert!(e.contains("spec.mode") && e.contains("mode cannot change"), "{e}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    // The API server picks up a new configuration (and its caBundle) through a watch: a
    // dry-run create shows when it calls the webhook.
    eventually("the API server calls the webhook", || {
        let pods = pods.clone();
        async move {
            let dry = PostParams { dry_run: true, ..PostParams::default() };
            let p = pods.create(&dry, &pod("probe", Some("events-out"))).await;
            let p = p.map_err(|e| e.to_string())?;
            Ok(has_sidecar(&p).then_some(()))
        }
    })
    .await;
    let created =
        pods.create(&PostParams::default(), &pod("app", Some("events-out"))).await.expect("pod");
    assert!(has_sidecar(&created), "the API server returns the pod with its sidecar");
    let annotations = created.annotations();
    assert!(annotations.get(INJECTED_ANNOTATION).is_some_and(|v| v.starts_with("events-out")));
    let init = created.spec.as_ref().and_then(|s| s.init_containers.clone()).unwrap_or_default();
    assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));

    let plain = pods.create(&PostParams::default(), &pod("plain", None)).await.expect("pod");
    assert!(!has_sidecar(&plain) && plain.annotations().get(INJECTED_ANNOTATION).is_none());

    // The controller lists the pod in the template's status (no workload is made for it).
    eventually("status.sidecarPods lists the pod", || {
        let zps = zps.clone();
        async move {
            let zp = zps.get("events-out").await.map_err(|e| e.to_string())?;
            let listed = zp.status.as_ref().map(|s| s.sidecar_pods.clone()).unwrap_or_default();
            Ok((listed == ["app"]).then_some(()))
        }
    })
    .await;

    // Deleting the template stops the injection; the running pod keeps its sidecar.
    zps.delete("events-out", &DeleteParams::default()).await.expect("template deleted");
    eventually("the template is gone", || {
        let zps = zps.clone();
        async move {
            Ok(zps.get_opt("events-out").await.map_err(|e| e.to_string())?.is_none().then_some(()))
        }
    })
    .await;
    let later =
        pods.create(&PostParams::default(), &pod("later", Some("events-out"))).await.expect("pod");
    assert!(!has_sidecar(&later), "no template, no sidecar: the pod is admitted as it is");
    assert!(has_sidecar(&pods.get("app").await.expect("app")), "the running pod is untouched");

    // The webhook down: unlabelled pods of any namespace are admitted without it (the label
    // selector keeps the API server from calling it), labelled ones are held back.
    let _ = stop_tx.send(());
    server.await.expect("server stopped");
    let other = format!("{namespace}-other");
    create_namespace(client, &other).await;
    let others: Api<Pod> = Api::namespaced(client.clone(), &other);
    others
        .create(&PostParams::default(), &pod("unrelated", None))
        .await
        .expect("an unrelated pod is admitted while the webhook is down");
    let held = others.create(&PostParams::default(), &pod("asked", Some("events-out"))).await;
    let e = held.expect_err("failurePolicy Fail").to_string();
    assert!(e.contains("sidecar.zmqproxy.io"), "the refusal names the webhook: {e}");

    configs.delete(CONFIGURATION, &DeleteParams::default()).await.expect("configuration deleted");
}
