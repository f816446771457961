//! TLS (tokio-rustls) over ringloop streams through the `tokio-io` traits: a certificate made
//! in the test, 16 MiB each way at once, verified byte for byte.

use std::sync::Arc;

use ringloop::net::{TcpListener, TcpStream};
use ringloop::{spawn, EventLoop};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

mod common;
use common::pattern;

const EACH_WAY: usize = 16 << 20;

/// A server and a client configuration that trust one self-signed certificate for
/// "localhost".
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert: CertificateDer<'static> = made.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Writes `send` and reads until end of stream at once on one TLS stream, then checks that
/// what came is `expect`.
async fn exchange<S>(stream: S, send: Vec<u8>, expect: Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let write = async {
        for part in send.chunks(100_000) {
            wr.write_all(part).await.unwrap();
        }
        wr.shutdown().await.unwrap();
    };
    let read = async {
        let mut got = Vec::with_capacity(expect.len());
        rd.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = futures::join!(write, read);
    assert!(
        got == expect,
        "{} bytes came, other than the {} expected",
        got.len(),
        expect.len()
    );
}

#[test]
fn tls_carries_16_mib_each_way_over_ringloop_streams() {
    let (server_cfg, client_cfg) = configs();
    EventLoop::new().unwrap().block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = spawn(async move {
            let (conn, _) = listener.accept().await.unwrap();
            let tls = TlsAcceptor::from(server_cfg).accept(conn).await.unwrap();
            exchange(tls, pattern(1, EACH_WAY), pattern(2, EACH_WAY)).await;
        });
        let conn = TcpStream::connect(addr).await.unwrap();
        let name = "localhost".try_into().unwrap();
        let tls = TlsConnector::from(client_cfg)
            .connect(name, conn)
            .await
            .unwrap();
        exchange(tls, pattern(2, EACH_WAY), pattern(1, EACH_WAY)).await;
        server.await.unwrap();
    });
}
