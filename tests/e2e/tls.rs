//! TLS on the listener: HTTPS with ALPN (h2 and http/1.1), and certificates swapped by a reload.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ayra_cache::config::Settings;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::app::{spawn_with, ConfigFile, TestApp};
use crate::binary::launch;
use crate::reload::LOG_WAIT;
use crate::standin::StandIn;

/// A self-signed certificate for `localhost`, written as PEM into `dir`.
struct Pair {
    der: CertificateDer<'static>,
    cert_path: String,
    key_path: String,
}

fn pair(dir: &Path, name: &str) -> Pair {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    Pair {
        der: certified.cert.der().clone(),
        cert_path: cert_path.display().to_string(),
        key_path: key_path.display().to_string(),
    }
}

fn config(standin: &StandIn, cert_path: &str, key_path: &str) -> ConfigFile {
    let mut config = ConfigFile::for_upstream(&standin.base_url());
    config
        .set("server.tls.cert_path", &format!("{cert_path:?}"))
        .set("server.tls.key_path", &format!("{key_path:?}"));
    config
}

/// A TLS connection trusting only `trusted`, offering `alpn`.
async fn connect(
    app: &TestApp,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    connect_to(app.addr, trusted, alpn).await
}

/// The certificate `addr` serves to a client that trusts only `trusted`.
async fn served_at(addr: SocketAddr, trusted: &CertificateDer<'static>) -> CertificateDer<'static> {
    let tls = connect_to(addr, trusted, &[]).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

async fn connect_to(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

async fn https_get(app: &TestApp, trusted: &CertificateDer<'static>, path: &str) -> String {
    let mut tls = connect(app, trusted, &[b"http/1.1"]).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer k\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn https_serves_http1_and_h2_by_alpn() {
    let standin = StandIn::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let first = pair(dir.path(), "first");
    let app = spawn_with(&config(&standin, &first.cert_path, &first.key_path)).await;
    let response = https_get(&app, &first.der, "/v1/conversations/conv_tls").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.to_ascii_lowercase().contains("x-cache: miss"));
    let response = https_get(&app, &first.der, "/v1/conversations/conv_tls").await;
    assert!(response.to_ascii_lowercase().contains("x-cache: hit"));

    let h2 = connect(&app, &first.der, &[b"h2", b"http/1.1"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, connection) = h2::client::handshake(h2).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let request = http::Request::get("https://localhost/v1/conversations/conv_tls")
        .header("authorization", "Bearer k")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(standin.requests_for("conv_tls").await, 1);
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_for_new_handshakes() {
    let standin = StandIn::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let first = pair(dir.path(), "first");
    let second = pair(dir.path(), "second");
    let app = spawn_with(&config(&standin, &first.cert_path, &first.key_path)).await;
    let served = |tls: &tokio_rustls::client::TlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(served(&connect(&app, &first.der, &[]).await), first.der);

    // Same paths, new contents: the new pair is served to new handshakes.
    std::fs::copy(&second.cert_path, &first.cert_path).unwrap();
    std::fs::copy(&second.key_path, &first.key_path).unwrap();
    app.reload(&config(&standin, &first.cert_path, &first.key_path));
    assert_eq!(served(&connect(&app, &second.der, &[]).await), second.der);

    // The pair a reload installs is the one parsed when its config was read
    // and validated: files that change afterwards (a certificate renewed,
    // its key not yet) cannot slip an unchecked pair in.
    let settings = Settings::load_with_env(
        &app_config_path(&standin, &first, &dir),
        Some(Default::default()),
    )
    .unwrap();
    let third = pair(dir.path(), "third");
    std::fs::copy(&third.cert_path, &first.cert_path).unwrap();
    std::fs::copy(&third.key_path, &first.key_path).unwrap();
    app.reloader.apply(&settings);
    assert_eq!(served(&connect(&app, &second.der, &[]).await), second.der);
    // A config read now holds the third pair, and applying it serves that.
    let settings = Settings::load_with_env(
        &app_config_path(&standin, &first, &dir),
        Some(Default::default()),
    )
    .unwrap();
    app.reloader.apply(&settings);
    assert_eq!(served(&connect(&app, &third.der, &[]).await), third.der);
}

/// A config file for `pair`'s paths, written into `dir`.
fn app_config_path(standin: &StandIn, pair: &Pair, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("reload.toml");
    std::fs::write(
        &path,
        config(standin, &pair.cert_path, &pair.key_path).render(),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn sighup_with_a_mismatched_pair_names_the_key_and_keeps_the_old_certificate() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let standin = StandIn::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let first = pair(dir.path(), "first");
    let mut config = config(&standin, &first.cert_path, &first.key_path);
    config.set("log.level", "\"info\"");
    let mut running = launch(config, &[]).await;
    let pid = Pid::from_raw(running.child.id() as i32);
    assert_eq!(served_at(running.addr, &first.der).await, first.der);

    // Another certificate under the same key path: the pair does not match.
    let other = pair(dir.path(), "other");
    std::fs::copy(&other.cert_path, &first.cert_path).unwrap();
    let mark = running.log.so_far().len();
    kill(pid, Signal::SIGHUP).unwrap();
    let refused = running
        .log
        .line_after(mark, &["config reload refused: nothing changed"], LOG_WAIT)
        .await;
    assert!(refused.contains("server.tls.cert_path"), "{refused}");
    assert_eq!(served_at(running.addr, &first.der).await, first.der);

    // Its own key beside it: the new pair is served from the next handshake.
    std::fs::copy(&other.key_path, &first.key_path).unwrap();
    let mark = running.log.so_far().len();
    kill(pid, Signal::SIGHUP).unwrap();
    running
        .log
        .line_after(mark, &["\"config reloaded\""], LOG_WAIT)
        .await;
    assert_eq!(served_at(running.addr, &other.der).await, other.der);
    running.stop();
}

#[test]
fn a_config_with_an_unusable_certificate_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_only = pair(dir.path(), "k");
    let cases = [
        (
            "/nonexistent/cert.pem",
            key_only.key_path.as_str(),
            "server.tls.cert_path",
        ),
        (
            key_only.cert_path.as_str(),
            "/nonexistent/key.pem",
            "server.tls.key_path",
        ),
    ];
    for (cert, key, named) in cases {
        let text = format!("[server.tls]\ncert_path = {cert:?}\nkey_path = {key:?}\n");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ayra-cache"))
            .args(["--check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains(named));
    }
}
