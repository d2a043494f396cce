//! `hearth serve` over HTTPS with a self-signed certificate, the security
//! headers, and the refusal of plain HTTP on a non-loopback address.

use crate::bearer::serve;
use rustls::pki_types::{CertificateDer, ServerName};
use std::process::Command;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_hearth");

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM
/// files in `dir`; returns the paths and the certificate.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("generate a certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (cert, key, certified.cert.der().clone())
}

/// One HTTP/1.1 GET over TLS, trusting only `root`; the whole response.
async fn https_get(port: u16, path: &str, root: CertificateDer<'static>) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).expect("trust the certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':').next().and_then(|rest| rest.split('/').next()).and_then(|p| p.parse().ok()).expect("port")
}

#[tokio::test]
async fn https_serves_with_hsts_and_plain_http_to_its_port_fails() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (cert, key, root) = self_signed(tmp.path());
    let cert_arg = cert.to_str().expect("utf-8").to_string();
    let key_arg = key.to_str().expect("utf-8").to_string();
    let server = serve(&tmp.path().join("data"), &["--tls-cert", &cert_arg, "--tls-key", &key_arg]);
    assert!(server.base.starts_with("https://127.0.0.1:"), "{}", server.base);
    let port = port_of(&server.base);

    let response = https_get(port, "/fhir/metadata", root.clone()).await.expect("HTTPS request");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nstrict-transport-security: max-age=63072000; includesubdomains"), "{head}");
    assert!(head.contains("\r\nx-content-type-options: nosniff"), "{head}");
    assert!(head.contains("\r\nx-frame-options: deny"), "{head}");
    assert!(head.contains("\r\nreferrer-policy: no-referrer"), "{head}");
    assert!(head.contains("\r\ncontent-security-policy: default-src 'self'; frame-ancestors 'none'"), "{head}");
    assert!(head.contains("\r\ncache-control: no-store"), "{head}");
    assert!(body.contains("CapabilityStatement"), "{body}");
    let response = https_get(port, "/healthz", root).await.expect("HTTPS health check");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/fhir/metadata")).send().await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
}

#[tokio::test]
async fn plain_http_has_the_headers_but_no_hsts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = serve(&tmp.path().join("data"), &[]);
    let response = reqwest::get(format!("{}/metadata", server.base)).await.expect("request");
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.get("strict-transport-security").is_none());
    let root = server.base.trim_end_matches("/fhir");
    let health = reqwest::get(format!("{root}/healthz")).await.expect("healthz");
    assert_eq!(health.headers()["referrer-policy"], "no-referrer");
}

#[test]
fn plain_http_on_a_non_loopback_address_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Refused before anything is bound or opened.
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env_remove("HEARTH_DATABASE_URL")
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to serve plain HTTP on 0.0.0.0:0"), "{stderr}");
    assert!(stderr.contains("--insecure-no-tls"), "{stderr}");
    assert!(!tmp.path().join("data").exists(), "nothing was created");

    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", "cert.pem", "--data-dir"])
        .arg(tmp.path().join("data"))
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tls_cert and server.tls_key go together"), "{stderr}");
}
