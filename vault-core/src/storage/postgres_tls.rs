//! TLS to PostgreSQL, configured the way libpq is: `sslmode` and `sslrootcert` in the URL.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and nothing of certificates, so
//! [`split_url`] takes libpq's certificate parameters out of the URL before it is parsed,
//! and [`Connector`] does the handshake with rustls:
//! - `disable`: plain TCP;
//! - `prefer` (the default) and `require`: TLS when the server offers it (`require`: or no
//!   connection); the certificate is checked against `sslrootcert` when one is given, and
//!   not at all otherwise, as libpq does: encrypted, but to whoever answers. With
//!   `channel_binding=require` as well, a password login (SCRAM) fails through anyone in
//!   the middle; `verify-full` is the sure way;
//! - `verify-ca`: TLS, and a certificate chain that ends at `sslrootcert`;
//! - `verify-full`: the same, and a certificate for the host name in the URL.
//!
//! Certificates are checked by webpki, which is stricter than OpenSSL: the names must be
//! in the subject alternative names (the common name is not read), and a CA certificate
//! cannot be the server's own.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Result, VaultError};

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Nothing: the connection is encrypted, but to whoever answers.
    Nothing,
    /// The chain ends at the trusted root (`verify-ca`, or `sslrootcert` alone).
    Chain,
    /// The chain, and the host name (`verify-full`).
    ChainAndName,
}

/// The TLS settings of a database URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    pub check: Check,
    /// The trusted root certificates (PEM), from `sslrootcert`.
    pub root: Option<PathBuf>,
}

/// Takes `sslrootcert` and the `verify-ca`/`verify-full` modes out of a `postgres://` URL,
/// leaving a URL tokio-postgres parses (`verify-*` become `require`, which they imply).
pub fn split_url(url: &str) -> Result<(String, TlsOptions)> {
    let bad = |what: &str| VaultError::config(format!("VAULT_DB_URL: {what}"));
    // The query starts after the credentials, which end at the first `@` (as tokio-postgres
    // reads them): a password may hold a `?`.
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(start) = url[after_credentials..].find('?').map(|i| after_credentials + i) else {
        return Ok((url.to_owned(), TlsOptions { check: Check::Nothing, root: None }));
    };
    let (base, query) = (&url[..start], &url[start + 1..]);
    let mut kept = Vec::new();
    let mut verify = None;
    let mut root = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| bad(&format!("`{key}` is not valid UTF-8")))?;
        match (key, &*value) {
            ("sslrootcert", "") => return Err(bad("`sslrootcert` names no file")),
            ("sslrootcert", path) => root = Some(PathBuf::from(path)),
            ("sslmode", "verify-ca") => verify = Some(Check::Chain),
            ("sslmode", "verify-full") => verify = Some(Check::ChainAndName),
            _ => kept.push(pair),
        }
    }
    if verify.is_some() {
        kept.push("sslmode=require");
    }
    if verify.is_some() && root.is_none() {
        return Err(bad("`sslmode=verify-ca` and `verify-full` need `sslrootcert=<file of trusted CA certificates>`"));
    }
    let check = verify.unwrap_or(if root.is_some() { Check::Chain } else { Check::Nothing });
    let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, TlsOptions { check, root }))
}

/// Makes the TLS sessions of every connection to one database.
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    check: Check,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector").field("check", &self.check).finish_non_exhaustive()
    }
}

impl Connector {
    /// Reads the trusted roots (a missing or empty file is an error naming it).
    pub fn new(options: &TlsOptions) -> Result<Connector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match (&options.root, options.check) {
            (_, Check::Nothing) => None,
            (Some(path), _) => Some(Arc::new(read_roots(path)?)),
            (None, _) => return Err(VaultError::config("VAULT_DB_URL: checking the certificate needs `sslrootcert`")),
        };
        let verifier = Verifier { provider: provider.clone(), roots, check_name: options.check == Check::ChainAndName };
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| VaultError::config(format!("VAULT_DB_URL: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        // PostgreSQL 17 and later insist on it for `sslnegotiation=direct`; older servers
        // ignore it. libpq sends the same.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector { config: Arc::new(config), check: options.check })
    }
}

fn read_roots(path: &std::path::Path) -> Result<RootCertStore> {
    let unreadable =
        |e: &dyn fmt::Display| VaultError::config(format!("VAULT_DB_URL: sslrootcert {}: {e}", path.display()));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        roots.add(cert.map_err(|e| unreadable(&e))?).map_err(|e| unreadable(&e))?;
    }
    if roots.is_empty() {
        return Err(unreadable(&"holds no certificate"));
    }
    Ok(roots)
}

impl<S> MakeTlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Handshake;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<Handshake> {
        let name = match ServerName::try_from(host.to_owned()) {
            Ok(name) => name,
            // Only a host name can be checked; with no check, any name will do for the
            // handshake (an address sends no SNI).
            Err(_) if self.check != Check::ChainAndName => {
                ServerName::IpAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED).into())
            }
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("host `{host}`: {e}"))),
        };
        Ok(Handshake { connector: tokio_rustls::TlsConnector::from(self.config.clone()), name })
    }
}

/// One connection's handshake.
pub struct Handshake {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for Handshake
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move { Ok(Stream(self.connector.connect(self.name, stream).await?)) })
    }
}

/// A TLS session with the database.
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        match session.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| server_end_point(leaf)) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929's `tls-server-end-point`: the certificate hashed with its signature's hash,
/// SHA-256 standing in for MD5 and SHA-1. `None` for other signatures (Ed25519, RSA-PSS),
/// which then log in without channel binding.
fn server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    match cert.signature_algorithm.algorithm.to_id_string().as_str() {
        // RSA with MD5, SHA-1, SHA-256; ECDSA with SHA-1, SHA-256.
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.2" => Some(Sha256::digest(der).to_vec()),
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Some(Sha384::digest(der).to_vec()),
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Some(Sha512::digest(der).to_vec()),
        _ => None,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Checks the server's certificate as far as the URL asks: its chain up to the trusted
/// roots, and its name; or, with no roots, nothing. The handshake's signatures are checked
/// either way, so the session is with the holder of the certificate's key.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            let algorithms = self.provider.signature_verification_algorithms.all;
            verify_server_cert_signed_by_trust_anchor(&cert, roots, intermediates, now, algorithms)?;
            if self.check_name {
                verify_server_name(&cert, server_name)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_parameters_are_taken_out_of_the_url() {
        let (url, options) = split_url("postgres://v:p@db/vault").unwrap();
        assert_eq!((url.as_str(), options.check, options.root), ("postgres://v:p@db/vault", Check::Nothing, None));

        let (url, options) =
            split_url("postgres://v@db/vault?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem")
                .unwrap();
        assert_eq!(url, "postgres://v@db/vault?application_name=x&sslmode=require");
        assert_eq!((options.check, options.root), (Check::ChainAndName, Some(PathBuf::from("/etc/ca x.pem"))));

        let (url, options) = split_url("postgres://v@db/vault?sslmode=verify-ca&sslrootcert=/ca.pem").unwrap();
        assert_eq!((url.as_str(), options.check), ("postgres://v@db/vault?sslmode=require", Check::Chain));

        // A `?` in the password is not the start of the query.
        let (url, options) = split_url("postgres://v:p?w@db/vault?sslmode=verify-ca&sslrootcert=/ca.pem").unwrap();
        assert_eq!((url.as_str(), options.check), ("postgres://v:p?w@db/vault?sslmode=require", Check::Chain));
        let (url, options) = split_url("postgres://v:p?w@db/vault").unwrap();
        assert_eq!((url.as_str(), options.check), ("postgres://v:p?w@db/vault", Check::Nothing));

        // A root alone checks the chain, as libpq does; the mode stays what it was.
        let (url, options) = split_url("postgres://v@db/vault?sslmode=require&sslrootcert=/ca.pem").unwrap();
        assert_eq!((url.as_str(), options.check), ("postgres://v@db/vault?sslmode=require", Check::Chain));
    }

    #[test]
    fn verifying_without_a_root_is_refused_by_name() {
        let err = split_url("postgres://v@db/vault?sslmode=verify-full").unwrap_err();
        assert!(err.message.starts_with("VAULT_DB_URL") && err.message.contains("sslrootcert"), "{}", err.message);
        let err = split_url("postgres://v@db/vault?sslrootcert=").unwrap_err();
        assert!(err.message.contains("names no file"), "{}", err.message);
    }

    #[test]
    fn unreadable_roots_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let options = TlsOptions { check: Check::ChainAndName, root: Some(missing.clone()) };
        let err = Connector::new(&options).unwrap_err();
        assert!(err.message.contains(&missing.display().to_string()), "{}", err.message);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Connector::new(&TlsOptions { check: Check::Chain, root: Some(empty) }).unwrap_err();
        assert!(err.message.contains("holds no certificate"), "{}", err.message);
    }

    #[test]
    fn channel_binding_hashes_with_the_signature_hash() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".to_owned()]).unwrap().self_signed(&key).unwrap();
        assert_eq!(server_end_point(cert.der()).unwrap(), Sha384::digest(cert.der()).to_vec());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".to_owned()]).unwrap().self_signed(&key).unwrap();
        assert_eq!(server_end_point(cert.der()).unwrap(), Sha256::digest(cert.der()).to_vec());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db".to_owned()]).unwrap().self_signed(&key).unwrap();
        assert_eq!(server_end_point(cert.der()), None);
    }

    /// Whether a connection opened with this URL is encrypted, or why none opened.
    async fn encrypted(url: &str) -> Result<bool> {
        let opened = super::super::postgres::open(url).await?;
        let client = opened.pool.get().await.unwrap();
        let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
        Ok(row.get(0))
    }

    #[tokio::test]
    async fn connections_are_encrypted_and_checked_as_the_url_says() {
        use super::super::test_cluster;
        let Some(url) = test_cluster::database().await else { return };
        let root = test_cluster::tls_root().unwrap();
        let root = root.display();
        let by_name = url.replace("127.0.0.1", test_cluster::TLS_HOST) + "?hostaddr=127.0.0.1";

        // As libpq: TLS when the server offers it, unless disabled.
        assert!(encrypted(&url).await.unwrap(), "prefer");
        assert!(!encrypted(&format!("{url}?sslmode=disable")).await.unwrap(), "disable");
        assert!(encrypted(&format!("{url}?sslmode=require")).await.unwrap(), "require");
        // An address without a host name still gets TLS (tokio-postgres alone would fail).
        let (server, name) = url.rsplit_once('/').unwrap();
        let port = server.rsplit_once(':').unwrap().1;
        assert!(encrypted(&format!("postgres://postgres@/{name}?hostaddr=127.0.0.1&port={port}")).await.unwrap());

        // The full check passes for the certificate's name, and only for it.
        let full = format!("{by_name}&sslmode=verify-full&sslrootcert={root}");
        assert!(encrypted(&full).await.unwrap(), "verify-full");
        let err = encrypted(&format!("{url}?sslmode=verify-full&sslrootcert={root}")).await.unwrap_err();
        assert!(err.message.starts_with("VAULT_DB_URL: cannot connect"), "{}", err.message);
        assert!(err.message.contains("not valid for name"), "{}", err.message);
        assert!(encrypted(&format!("{url}?sslmode=verify-ca&sslrootcert={root}")).await.unwrap(), "verify-ca");

        // A certificate from another CA is refused, whatever the name.
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other-ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![test_cluster::TLS_HOST.to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "another CA");
        std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
        for mode in ["verify-full", "verify-ca", "require"] {
            let err =
                encrypted(&format!("{by_name}&sslmode={mode}&sslrootcert={}", other.display())).await.unwrap_err();
            assert!(err.message.contains("UnknownIssuer"), "{mode}: {}", err.message);
        }
    }

    #[tokio::test]
    async fn passwords_are_bound_to_the_tls_session() {
        use super::super::test_cluster;
        let Some(url) = test_cluster::database().await else { return };
        let admin = super::super::postgres::open(&url).await.unwrap().pool.get().await.unwrap();
        let role = test_cluster::SCRAM_ROLE;
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE {role} LOGIN PASSWORD 'pass-word'; \
                 EXCEPTION WHEN duplicate_object THEN NULL; END $$"
            ))
            .await
            .unwrap();
        // SCRAM-SHA-256-PLUS: the server refuses unless both ends hash the same certificate.
        let bound = url.replace("postgres@", &format!("{role}:pass-word@")) + "?channel_binding=require";
        assert!(encrypted(&bound).await.unwrap());
        // And the role does log in with its password (SCRAM), not by trust.
        let wrong = url.replace("postgres@", &format!("{role}:wrong@"));
        let err = encrypted(&wrong).await.unwrap_err();
        assert!(err.message.contains("password authentication failed"), "{}", err.message);
    }
}
