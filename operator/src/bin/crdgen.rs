//! Prints the ZmqProxy CustomResourceDefinition; crds/zmqproxy.yaml is its output.
use kube::CustomResourceExt;
fn main() {
    print!(
        "{}",
        serde_yaml::to_string(&zmq_proxy_operator::crd::ZmqProxy::crd()).expect("CRD serializes")
    );
}
