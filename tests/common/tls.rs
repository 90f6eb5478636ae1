//! A test CA generated in the test, a server certificate it signs for loopback, and a venue
//! served with it over TLS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tradegate::sim::alpaca::{SimAlpaca, SimConfig, spawn_tls};
use tradegate::sim::tls::ServerTls;

/// A private CA (its certificate in a PEM file) and a certificate it signed for `127.0.0.1`
/// and `localhost`.
pub struct TestPki {
    /// The CA's certificate, as a PEM file clients can be told to trust
    pub ca_file: PathBuf,
    /// The server's certificate and key
    pub server: ServerTls,
    /// The server's certificate chain and key as PEM files, for a configuration to name
    pub cert_file: PathBuf,
    /// See `cert_file`
    pub key_file: PathBuf,
}

impl TestPki {
    /// A new CA named `name`; its certificate is written under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "simulated venue");
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let ca_file = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let server = ServerTls::from_pem(&leaf_cert.pem(), &leaf_key.serialize_pem()).unwrap();
        let cert_file = dir.join(format!("{name}-server.pem"));
        let key_file = dir.join(format!("{name}-server.key"));
        std::fs::write(&cert_file, leaf_cert.pem()).unwrap();
        std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
        Self {
            ca_file,
            server,
            cert_file,
            key_file,
        }
    }
}

/// Starts a venue over TLS on a free loopback port; its handle and `https` base URL.
pub async fn start_tls_venue(config: SimConfig, server: &ServerTls) -> (SimAlpaca, String) {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (
        spawn_tls(listener, config, server.clone()),
        format!("https://{addr}"),
    )
}
