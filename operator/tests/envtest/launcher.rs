//! A throwaway control plane for tests, the envtest way: `etcd` and `kube-apiserver` from
//! `$KUBEBUILDER_ASSETS`, both on 127.0.0.1 ports picked at random, with a CA, a serving
//! certificate, an admin client certificate (group system:masters, authorized by RBAC) and a
//! service-account key pair generated here. No kubelet, scheduler or controller-manager run:
//! StatefulSets never get pods and nothing garbage-collects.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::{Client, Config};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

pub struct ControlPlane {
    processes: Processes,
    pub client: Client,
    pub url: String,
    /// How to start kube-apiserver again on the same port and etcd (see [`ControlPlane::restart_apiserver`]).
    apiserver: (PathBuf, Vec<String>),
    #[allow(dead_code)] // read by kubeconfig(), which only benches/scale.rs calls
    pki: Pki,
}

/// The started processes and their directory: killed and removed however the start or the test
/// ends (set ENVTEST_KEEP to keep the directory with the logs and certificates).
struct Processes {
    children: Vec<(&'static str, Child)>,
    dir: PathBuf,
}

impl Drop for Processes {
    fn drop(&mut self) {
        // API server first, so it does not log a storm of etcd connection errors.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("ENVTEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Processes {
    fn spawn(&mut self, name: &'static str, binary: &Path, args: &[String]) -> Result<(), String> {
        let child = spawn(&self.dir, name, binary, args)?;
        self.children.push((name, child));
        Ok(())
    }

    /// Kills `name` and waits for it to exit; its log stays.
    fn stop(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| *n == name) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An error naming the first process that exited, with the end of its log.
    fn check_running(&mut self) -> Result<(), String> {
        for (name, child) in self.children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{name} exited with {status}:\n{}",
                    log_tail(&self.dir, name, 40)
                ));
            }
        }
        Ok(())
    }
}

/// `N` distinct free ports on 127.0.0.1. Every listener is held until all ports are picked, so
/// the kernel cannot hand the same port out twice; they are released before the servers bind
/// them, a tiny window in which the servers fail loudly if someone else took one.
fn free_ports<const N: usize>() -> Result<[u16; N], String> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener =
            TcpListener::bind((LOOPBACK, 0)).map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        *port = listener.local_addr().map(|a| a.port()).map_err(|e| e.to_string())?;
        listeners.push(listener);
    }
    Ok(ports)
}

/// Whether `binary --help` mentions `--flag` (how controller-runtime's envtest detects flags
/// that only some versions have).
fn has_flag(binary: &Path, flag: &str) -> bool {
    Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map(|out| {
            let text = [out.stdout, out.stderr].concat();
            String::from_utf8_lossy(&text).contains(&format!("--{flag}"))
        })
        .unwrap_or(false)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    let path = dir.join(name);
    fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    Ok(path)
}

struct Pki {
    ca_der: Vec<u8>,
    ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    sa_public: PathBuf,
    sa_private: PathBuf,
}

fn pki(dir: &Path) -> Result<Pki, String> {
    generate_pki(dir).map_err(|e| e.to_string())?
}

/// Outer error: certificate generation; inner: writing the files.
fn generate_pki(dir: &Path) -> Result<Result<Pki, String>, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params.distinguished_name.push(DnType::CommonName, "zmq-proxy-envtest-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut serving = CertificateParams::new(vec!["localhost".to_string()])?;
    serving.subject_alt_names.push(SanType::IpAddress(LOOPBACK));
    serving.distinguished_name = DistinguishedName::new();
    serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate()?;
    let serving_cert = serving.signed_by(&serving_key, &ca)?;

    // The API server maps O to groups: system:masters is bound to cluster-admin by RBAC.
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name = DistinguishedName::new();
    client.distinguished_name.push(DnType::CommonName, "envtest-admin");
    client.distinguished_name.push(DnType::OrganizationName, "system:masters");
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client.signed_by(&client_key, &ca)?;

    // ECDSA P-256: the signing key as PKCS#8, the verifying key as a PKIX public key, both of
    // which the API server's key loaders accept.
    let sa = KeyPair::generate()?;
    let files = || -> Result<Pki, String> {
        Ok(Pki {
            ca_der: ca.der().to_vec(),
            ca: write(dir, "ca.crt", &ca.pem())?,
            serving_cert: write(dir, "apiserver.crt", &serving_cert.pem())?,
            serving_key: write(dir, "apiserver.key", &serving_key.serialize_pem())?,
            client_cert: write(dir, "admin.crt", &client_cert.pem())?,
            client_key: write(dir, "admin.key", &client_key.serialize_pem())?,
            sa_public: write(dir, "sa.pub", &sa.public_key_pem())?,
            sa_private: write(dir, "sa.key", &sa.serialize_pem())?,
        })
    };
    Ok(files())
}

fn spawn(dir: &Path, name: &'static str, binary: &Path, args: &[String]) -> Result<Child, String> {
    // Appended, so a restarted component keeps the log of its first run.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
}

/// The last lines of a component's log, for failure messages.
pub fn log_tail(dir: &Path, name: &str, lines: usize) -> String {
    let text = fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl ControlPlane {
    pub fn logs(&self) -> String {
        let dir = &self.processes.dir;
        format!(
            "--- etcd ---\n{}\n--- kube-apiserver ---\n{}",
            log_tail(dir, "etcd", 20),
            log_tail(dir, "kube-apiserver", 40)
        )
    }

    pub async fn start(assets: &Path) -> Result<ControlPlane, String> {
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("zmq-proxy-envtest-{}-{stamp}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut processes = Processes { children: Vec::new(), dir: dir.clone() };
        let pki = pki(&dir).map_err(|e| format!("certificates: {e}"))?;

        let [client_port, peer_port, secure_port] = free_ports::<3>()?;
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = assets.join("etcd");
        let mut etcd_args = vec![
            "--name=envtest".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=envtest={peer_url}"),
            "--initial-cluster-state=new".to_string(),
        ];
        // etcd 3.5+: a throwaway store needs no fsync, which is most of etcd's latency on CI disks.
        if has_flag(&etcd, "unsafe-no-fsync") {
            etcd_args.push("--unsafe-no-fsync=true".to_string());
        }
        processes.spawn("etcd", &etcd, &etcd_args)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", client_port)).is_err() {
            processes.check_running()?;
            if Instant::now() > deadline {
                return Err(format!("etcd did not listen on {etcd_url} within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let url = format!("https://127.0.0.1:{secure_port}");
        let path = |p: &PathBuf| p.display().to_string();
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={secure_port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", path(&pki.serving_cert)),
            format!("--tls-private-key-file={}", path(&pki.serving_key)),
            format!("--client-ca-file={}", path(&pki.ca)),
            "--authorization-mode=RBAC".to_string(),
            format!("--service-account-issuer={url}"),
            format!("--service-account-key-file={}", path(&pki.sa_public)),
            format!("--service-account-signing-key-file={}", path(&pki.sa_private)),
            // Room for the scale benchmark's thousands of Services; dual stack (IPv4 first, the
            // default family) so Services asking for IPv6 or both families can be created.
            "--service-cluster-ip-range=10.0.0.0/16,fd00:10:96::/108".to_string(),
            // No controller-manager creates service-account tokens, so pods could not be admitted.
            "--disable-admission-plugins=ServiceAccount".to_string(),
            "--allow-privileged=true".to_string(),
        ];
        let apiserver = (assets.join("kube-apiserver"), apiserver_args);
        processes.spawn("kube-apiserver", &apiserver.0, &apiserver.1)?;

        let mut config = Config::new(url.parse().map_err(|e| format!("{url}: {e}"))?);
        config.root_cert = Some(vec![pki.ca_der.clone()]);
        config.auth_info.client_certificate = Some(path(&pki.client_cert));
        config.auth_info.client_key = Some(path(&pki.client_key));
        config.default_namespace = "default".to_string();
        config.connect_timeout = Some(Duration::from_secs(5));
        let client = Client::try_from(config).map_err(|e| format!("client: {e}"))?;
        let mut plane = ControlPlane { processes, client, url, apiserver, pki };
        plane.wait_ready().await?;
        // The bootstrap controller creates the `kubernetes` Service once the service IP allocator
        // works; Services created before may be refused for a moment (the operator retries).
        // Waiting here keeps those retries out of the test's deadlines; not finding it is not an
        // error, the deadlines of the test still hold.
        let services: Api<Service> = Api::namespaced(plane.client.clone(), "default");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(services.get_opt("kubernetes").await, Ok(Some(_))) {
            if Instant::now() > deadline {
                eprintln!("note: no `kubernetes` Service after 30 s; going on");
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(plane)
    }

    /// Waits until /readyz answers ok (storage, RBAC bootstrap, CRD informers all started).
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_error: String;
        loop {
            self.processes.check_running()?;
            let request =
                http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
            match self.client.request_text(request).await {
                Ok(text) if text.trim() == "ok" => return Ok(()),
                Ok(text) => last_error = text,
                Err(e) => last_error = e.to_string(),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver at {} not ready within 90 s: {last_error}\n{}",
                    self.url,
                    self.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Kills kube-apiserver (etcd keeps the data), keeps it down until `down` resolves, starts it
    /// again on the same address and waits until it is ready: an API-server outage as clients see
    /// one. Returns when the server answers /readyz again.
    pub async fn restart_apiserver(
        &mut self,
        down: impl std::future::Future<Output = ()>,
    ) -> Result<(), String> {
        self.processes.stop("kube-apiserver");
        down.await;
        let (binary, args) = self.apiserver.clone();
        self.processes.spawn("kube-apiserver", &binary, &args)?;
        self.wait_ready().await
    }

    /// A kubeconfig file for this control plane's admin, for clients run as separate processes.
    #[allow(dead_code)] // used by benches/scale.rs, not by the envtest tier
    pub fn kubeconfig(&self) -> Result<PathBuf, String> {
        let path = |p: &PathBuf| p.display().to_string();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: {url}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: envtest\n  context:\n    cluster: envtest\n    user: admin\n    namespace: default\ncurrent-context: envtest\n",
            url = self.url,
            ca = path(&self.pki.ca),
            cert = path(&self.pki.client_cert),
            key = path(&self.pki.client_key),
        );
        write(&self.processes.dir, "kubeconfig", &text)
    }
}
