//! The box's TLS certificate and private key on disk (`cert.pem` and `key.pem` in the TLS
//! directory): a self-signed pair made for the box, or a pair an admin uploads, which is
//! validated in full before it replaces what is installed.

use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::error::{Result, VaultError};

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// Far beyond any real chain or key; anything larger is a wrong file.
const MAX_PEM_BYTES: usize = 1024 * 1024;

/// The longest validity Apple platforms accept for a TLS server certificate.
const SELF_SIGNED_VALIDITY: time::Duration = time::Duration::days(825);

/// A self-signed certificate starts a little in the past so that clients whose clocks run
/// behind the box's do not see it as not yet valid.
const SELF_SIGNED_BACKDATE: time::Duration = time::Duration::hours(1);

const SECONDS_PER_DAY: i64 = 86_400;

/// What a certificate says, for GET /vault/admin/config/tls and the setup wizard.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct CertificateInfo {
    /// The subject's distinguished name, e.g. "CN=vault.local".
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses the certificate is for, as text.
    pub sans: Vec<String>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Whole days until `not_after`; negative once expired.
    pub days_left: i64,
    /// SHA-256 over the certificate's DER, as uppercase hex pairs joined by ':'.
    pub fingerprint_sha256: String,
    /// Issued by itself: its issuer is its subject and it carries its own signature.
    pub self_signed: bool,
}

/// The certificate (chain) and key of the box, in a directory: `cert.pem` and `key.pem`.
#[derive(Debug, Clone)]
pub struct TlsStore {
    dir: PathBuf,
}

/// A chain and key that passed validation, in the form they are stored in.
struct ValidatedPair {
    chain_pem: String,
    key_pem: String,
    info: CertificateInfo,
}

impl TlsStore {
    pub fn new(dir: impl Into<PathBuf>) -> TlsStore {
        TlsStore { dir: dir.into() }
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    /// Generates a self-signed certificate (ECDSA P-256, valid for 825 days, CN = hostname,
    /// SANs = hostname, "localhost" and each of `ips`) and installs it.
    pub fn install_self_signed(&self, hostname: &str, ips: &[IpAddr]) -> Result<CertificateInfo> {
        let pair = self_signed_pair(hostname, ips, time::OffsetDateTime::now_utc())?;
        self.install(pair)
    }

    /// Validates a PEM certificate chain and private key, then installs them. Nothing on
    /// disk changes when validation fails.
    pub fn install_pem(&self, chain_pem: &str, key_pem: &str) -> Result<CertificateInfo> {
        let pair = validate_upload(chain_pem, key_pem, SystemTime::now())?;
        self.install(pair)
    }

    /// The installed certificate, if any (`None` when no `cert.pem` exists); an error if it
    /// exists but cannot be read or parsed.
    pub fn info(&self) -> Result<Option<CertificateInfo>> {
        let Some(chain_pem) = read_if_exists(&self.cert_path(), "reading the TLS certificate")? else {
            return Ok(None);
        };
        let ders = certificate_ders(&chain_pem)
            .map_err(|err| VaultError::internal("reading the TLS certificate", err.message))?;
        let leaf = parse_certificate(&ders[0], 0)
            .map_err(|err| VaultError::internal("reading the TLS certificate", err.message))?;
        Ok(Some(describe(&leaf, &ders[0], SystemTime::now())))
    }

    /// The installed PEM pair (chain, key) for a TLS server to load, if any.
    pub fn load_pem(&self) -> Result<Option<(String, String)>> {
        let Some(chain_pem) = read_if_exists(&self.cert_path(), "reading the TLS certificate")? else {
            return Ok(None);
        };
        let key_pem = fs::read_to_string(self.key_path())
            .map_err(|err| VaultError::internal("reading the TLS private key", err))?;
        Ok(Some((chain_pem, key_pem)))
    }

    /// Stages both files completely before moving either into place, so a failed write
    /// (a full disk) leaves the installed pair as it was.
    fn install(&self, pair: ValidatedPair) -> Result<CertificateInfo> {
        // Two installations at once (the wizard's certificate and an upload) could otherwise
        // leave one's key beside the other's certificate.
        static INSTALLING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
        let fail = |err: io::Error| VaultError::internal("installing the TLS certificate", err);
        create_private_dir(&self.dir).map_err(fail)?;
        let key = StagedFile::write(self.key_path(), pair.key_pem.as_bytes(), 0o600).map_err(fail)?;
        let cert = StagedFile::write(self.cert_path(), pair.chain_pem.as_bytes(), 0o644).map_err(fail)?;
        key.commit().map_err(fail)?;
        cert.commit().map_err(fail)?;
        sync_dir(&self.dir).map_err(fail)?;
        Ok(pair.info)
    }
}

/// Whether a certificate covers `hostname`: an exact DNS name, a single-label wildcard
/// (`*.example.org` covers `a.example.org`, not `example.org` nor `a.b.example.org`), or an
/// IP address equal to the text.
pub fn covers_host(info: &CertificateInfo, hostname: &str) -> bool {
    let host = hostname.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return info.sans.iter().any(|san| san.parse::<IpAddr>().is_ok_and(|san_ip| san_ip == ip));
    }
    let host = host.to_ascii_lowercase();
    info.sans.iter().any(|san| dns_name_matches(&san.to_ascii_lowercase(), &host))
}

fn dns_name_matches(san: &str, host: &str) -> bool {
    match san.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => san == host,
    }
}

fn self_signed_pair(hostname: &str, ips: &[IpAddr], now: time::OffsetDateTime) -> Result<ValidatedPair> {
    let hostname = normalize_hostname(hostname)?;
    let params = self_signed_params(&hostname, ips, now)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|err| VaultError::internal("generating a TLS key", err))?;
    let cert = params.self_signed(&key).map_err(|err| VaultError::internal("generating a TLS certificate", err))?;
    let leaf = parse_certificate(cert.der(), 0)
        .map_err(|err| VaultError::internal("generating a TLS certificate", err.message))?;
    let info = describe(&leaf, cert.der(), SystemTime::now());
    Ok(ValidatedPair { chain_pem: cert.pem(), key_pem: key.serialize_pem(), info })
}

fn normalize_hostname(hostname: &str) -> Result<String> {
    let name = hostname.trim().trim_end_matches('.').to_ascii_lowercase();
    if name.parse::<IpAddr>().is_ok() || crate::settings::is_valid_hostname(&name) {
        Ok(name)
    } else {
        Err(VaultError::invalid_field(format!(
            "hostname: `{hostname}` is not a host name (letters, digits and hyphens in dot-separated labels)"
        )))
    }
}

fn self_signed_params(hostname: &str, ips: &[IpAddr], now: time::OffsetDateTime) -> Result<CertificateParams> {
    let mut sans = vec![hostname.to_string(), "localhost".to_string()];
    sans.extend(ips.iter().map(IpAddr::to_string));
    let mut seen = std::collections::HashSet::new();
    sans.retain(|san| seen.insert(san.clone()));

    let mut params = CertificateParams::new(sans).map_err(|err| {
        VaultError::invalid_field(format!("hostname: `{hostname}` cannot be put in a certificate: {err}"))
    })?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, hostname);
    params.distinguished_name = name;
    params.not_before = now - SELF_SIGNED_BACKDATE;
    params.not_after = params.not_before + SELF_SIGNED_VALIDITY;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

fn validate_upload(chain_pem: &str, key_pem: &str, now: SystemTime) -> Result<ValidatedPair> {
    check_size("certificate", chain_pem)?;
    check_size("key", key_pem)?;
    let ders = certificate_ders(chain_pem)?;
    let chain = ders.iter().enumerate().map(|(i, der)| parse_certificate(der, i)).collect::<Result<Vec<_>>>()?;
    let key = parse_private_key(key_pem)?;
    check_key_matches(&key, &chain[0])?;
    check_validity(&chain, now)?;
    check_order(&chain)?;
    Ok(ValidatedPair {
        chain_pem: encode_chain(&ders),
        key_pem: key.serialize_pem(),
        info: describe(&chain[0], &ders[0], now),
    })
}

/// An upload past the size any certificate chain or key has is refused as too large (413).
fn check_size(field: &str, pem: &str) -> Result<()> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(VaultError::new(
            crate::error::ErrorKind::PayloadTooLarge,
            crate::error::ErrorCode::PayloadTooLarge,
            format!("{field}: larger than 1 MiB"),
        ));
    }
    Ok(())
}

fn bad_certificate(message: impl std::fmt::Display) -> VaultError {
    VaultError::invalid_field(format!("certificate: {message}"))
}

fn bad_key(message: impl std::fmt::Display) -> VaultError {
    VaultError::invalid_field(format!("key: {message}"))
}

/// The DER of each CERTIFICATE block, in order. Other blocks (a key pasted along, say) and
/// text between blocks (openssl's "Bag Attributes") are left out.
fn certificate_ders(chain_pem: &str) -> Result<Vec<Vec<u8>>> {
    let blocks = pem::parse_many(chain_pem).map_err(|err| bad_certificate(format!("not valid PEM ({err})")))?;
    let ders: Vec<Vec<u8>> =
        blocks.into_iter().filter(|block| block.tag() == "CERTIFICATE").map(pem::Pem::into_contents).collect();
    if ders.is_empty() {
        return Err(bad_certificate("contains no CERTIFICATE block (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(ders)
}

fn parse_certificate(der: &[u8], index: usize) -> Result<X509Certificate<'_>> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|err| bad_certificate(format!("block {} is not a valid X.509 certificate ({err})", index + 1)))
}

fn encode_chain(ders: &[Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = ders.iter().map(|der| pem::Pem::new("CERTIFICATE", der.clone())).collect();
    pem::encode_many_config(&blocks, pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF))
}

fn parse_private_key(key_pem: &str) -> Result<KeyPair> {
    if key_pem.trim().is_empty() {
        return Err(bad_key("missing; paste the private key that belongs to the certificate, in PEM"));
    }
    if is_encrypted(key_pem) {
        return Err(bad_key(
            "the private key is encrypted; Vault needs it unencrypted, so decrypt it first \
             (openssl pkey -in key.pem -out key-plain.pem)",
        ));
    }
    let blocks = pem::parse_many(key_pem).map_err(|err| bad_key(format!("not valid PEM ({err})")))?;
    let mut keys = blocks.iter().filter(|block| block.tag().ends_with("PRIVATE KEY"));
    let (Some(block), None) = (keys.next(), keys.next()) else {
        return Err(bad_key("expected exactly one PRIVATE KEY block (-----BEGIN PRIVATE KEY-----)"));
    };
    key_pair_from_block(block).ok_or_else(|| {
        bad_key(
            "not a supported private key; use an unencrypted ECDSA P-256 or P-384, Ed25519 or RSA \
             (2048 bits or more) key",
        )
    })
}

fn is_encrypted(key_pem: &str) -> bool {
    key_pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || key_pem.lines().any(|line| line.trim_start().starts_with("Proc-Type:") && line.contains("ENCRYPTED"))
}

/// Loads a PKCS#8 key, or a SEC1 ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY") one
/// wrapped into PKCS#8 first: the crypto backend reads only PKCS#8, but openssl writes the
/// older forms by default and admins should not have to convert them.
fn key_pair_from_block(block: &pem::Pem) -> Option<KeyPair> {
    let der = block.contents();
    let candidates = match block.tag() {
        "PRIVATE KEY" => vec![der.to_vec()],
        "RSA PRIVATE KEY" => vec![pkcs8::wrap_rsa(der)],
        "EC PRIVATE KEY" => pkcs8::EC_CURVES.iter().map(|curve| pkcs8::wrap_ec(der, curve)).collect(),
        _ => Vec::new(),
    };
    candidates.into_iter().find_map(|pkcs8| KeyPair::try_from(pkcs8).ok())
}

fn check_key_matches(key: &KeyPair, leaf: &X509Certificate<'_>) -> Result<()> {
    // Both sides are the raw public key (an EC point, an Ed25519 key or an RSAPublicKey
    // structure), so no re-encoding of either can make equal keys differ.
    if key.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
        return Err(bad_key(
            "does not match the certificate (the first certificate of the chain must be the one for this key)",
        ));
    }
    Ok(())
}

fn check_validity(chain: &[X509Certificate<'_>], now: SystemTime) -> Result<()> {
    let now = unix_seconds(now);
    for (i, cert) in chain.iter().enumerate() {
        let validity = cert.validity();
        let which =
            if i == 0 { String::new() } else { format!("certificate {} of the chain ({}) ", i + 1, cert.subject()) };
        if validity.not_before.timestamp() > now {
            return Err(bad_certificate(format!("{which}not valid before {}", rfc3339(validity.not_before))));
        }
        if validity.not_after.timestamp() < now {
            return Err(bad_certificate(format!("{which}expired on {}", rfc3339(validity.not_after))));
        }
    }
    Ok(())
}

fn check_order(chain: &[X509Certificate<'_>]) -> Result<()> {
    for (i, pair) in chain.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        if !issued_by(child, parent) {
            return Err(bad_certificate(format!(
                "the chain is out of order: certificate {} ({}) was issued by {}, but certificate {} is {}; \
                 list the server certificate first, then each issuer in turn",
                i + 1,
                child.subject(),
                child.issuer(),
                i + 2,
                parent.subject()
            )));
        }
    }
    Ok(())
}

fn issued_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    child.issuer().as_raw() == parent.subject().as_raw() || child.issuer().to_string() == parent.subject().to_string()
}

fn describe(cert: &X509Certificate<'_>, der: &[u8], now: SystemTime) -> CertificateInfo {
    let validity = cert.validity();
    CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans: subject_alt_names(cert),
        not_before: rfc3339(validity.not_before),
        not_after: rfc3339(validity.not_after),
        days_left: (validity.not_after.timestamp() - unix_seconds(now)).div_euclid(SECONDS_PER_DAY),
        fingerprint_sha256: fingerprint(der),
        self_signed: is_self_signed(cert),
    }
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(extension)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    extension
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|byte| format!("{byte:02X}")).collect::<Vec<_>>().join(":")
}

/// The issuer is the subject and the certificate's own key verifies its signature. When the
/// signature algorithm is one the verifier does not know, the names decide.
fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == cert.subject().as_raw()
        && matches!(cert.verify_signature(None), Ok(()) | Err(X509Error::SignatureUnsupportedAlgorithm))
}

fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |secs| -secs),
    }
}

/// Certificate times can lie before 1970 or far ahead; the formatter covers 1970 to 9999,
/// so times outside are shown at the nearest end rather than failing.
fn rfc3339(at: ASN1Time) -> String {
    const LAST_SECOND_OF_9999: i64 = 253_402_300_799;
    let secs = at.timestamp().clamp(0, LAST_SECOND_OF_9999);
    let secs = u64::try_from(secs).unwrap_or_default();
    crate::time::format_rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

fn read_if_exists(path: &Path, context: &str) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(VaultError::internal(context, err)),
    }
}

/// The directory holds a private key, so only its owner may look inside.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes the renames themselves survive a power loss.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A file written and synced beside its target, then renamed over it, so readers see the
/// old file or the new one and never a part. Removed again unless committed.
struct StagedFile {
    temp: PathBuf,
    target: PathBuf,
}

impl StagedFile {
    fn write(target: PathBuf, contents: &[u8], mode: u32) -> io::Result<StagedFile> {
        let file_name = target.file_name().and_then(|name| name.to_str()).unwrap_or("tls");
        let temp = target.with_file_name(format!(".{file_name}.{}.tmp", crate::secrets::new_id()));
        let staged = StagedFile { temp, target };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let mut file = options.open(&staged.temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        Ok(staged)
    }

    fn commit(self) -> io::Result<()> {
        fs::rename(&self.temp, &self.target)
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // After a commit the temp name is gone and this finds nothing to remove.
        let _ = fs::remove_file(&self.temp);
    }
}

/// Just enough DER to put a SEC1 or PKCS#1 private key inside a PKCS#8 envelope
/// (RFC 5208: version 0, the key's algorithm, the key as an OCTET STRING).
mod pkcs8 {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;

    /// OID 1.2.840.113549.1.1.1 (rsaEncryption) followed by its NULL parameters.
    const RSA_ALGORITHM: &[u8] = &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00];
    /// OID 1.2.840.10045.2.1 (id-ecPublicKey).
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
    /// OID 1.2.840.10045.3.1.7 (P-256).
    const P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
    /// OID 1.3.132.0.34 (P-384).
    const P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];

    /// A SEC1 key need not name its curve, so each supported one is tried in turn.
    pub(super) const EC_CURVES: &[&[u8]] = &[P256, P384];

    pub(super) fn wrap_rsa(pkcs1: &[u8]) -> Vec<u8> {
        envelope(RSA_ALGORITHM, pkcs1)
    }

    pub(super) fn wrap_ec(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
        envelope(&[EC_PUBLIC_KEY, curve].concat(), sec1)
    }

    fn envelope(algorithm: &[u8], key: &[u8]) -> Vec<u8> {
        let version = tlv(INTEGER, &[0]);
        let algorithm = tlv(SEQUENCE, algorithm);
        let key = tlv(OCTET_STRING, key);
        tlv(SEQUENCE, &[version, algorithm, key].concat())
    }

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(length(value.len()));
        out.extend_from_slice(value);
        out
    }

    /// DER length: one byte below 128, else 0x80 + the count of big-endian bytes that follow.
    fn length(len: usize) -> Vec<u8> {
        if len < 0x80 {
            return vec![len as u8];
        }
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        let mut out = vec![0x80 | bytes.len() as u8];
        out.extend(bytes);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, IsCa, Issuer};

    const SEC1_P256_KEY: &str = include_str!("../testdata/tls/ec-p256-sec1.key.pem");
    // Throwaway keys made with openssl for these tests only: ring cannot make RSA keys, and
    // the SEC1 and PKCS#1 forms are what openssl writes by default.
    const PKCS1_RSA_KEY: &str = include_str!("../testdata/tls/rsa-2048-pkcs1.key.pem");
    const PKCS8_RSA_KEY: &str = include_str!("../testdata/tls/rsa-2048-pkcs8.key.pem");

    fn store() -> (tempfile::TempDir, TlsStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TlsStore::new(dir.path().join("tls"));
        (dir, store)
    }

    fn days(n: i64) -> time::Duration {
        time::Duration::days(n)
    }

    /// A certificate for `cn` (also its one SAN), valid from `from` to `to` relative to now.
    fn params(cn: &str, from: time::Duration, to: time::Duration) -> CertificateParams {
        let mut params = CertificateParams::new(vec![cn.to_string()]).unwrap();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, cn);
        params.distinguished_name = name;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + from;
        params.not_after = now + to;
        params
    }

    fn ca_params(cn: &str) -> CertificateParams {
        let mut params = params(cn, days(-10), days(3650));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
    }

    fn p256() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    /// A self-signed leaf for `vault.example.org` valid from `from` to `to`, and its key.
    fn leaf_valid(from: time::Duration, to: time::Duration) -> (String, String) {
        let key = p256();
        let cert = params("vault.example.org", from, to).self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf signed by an intermediate signed by a root: (leaf, intermediate, root, leaf key).
    fn ca_chain() -> (String, String, String, String) {
        let (root_key, mid_key, leaf_key) = (p256(), p256(), p256());
        let root_params = ca_params("Test Root CA");
        let root = root_params.self_signed(&root_key).unwrap();
        let mid_params = ca_params("Test Intermediate CA");
        let mid = mid_params.signed_by(&mid_key, &Issuer::from_params(&root_params, &root_key)).unwrap();
        let leaf = params("vault.example.org", days(-1), days(90))
            .signed_by(&leaf_key, &Issuer::from_params(&mid_params, &mid_key))
            .unwrap();
        (leaf.pem(), mid.pem(), root.pem(), leaf_key.serialize_pem())
    }

    fn files(store: &TlsStore) -> (Vec<u8>, Vec<u8>) {
        (fs::read(store.cert_path()).unwrap(), fs::read(store.key_path()).unwrap())
    }

    /// Installs a first pair, tries `chain` + `key`, and checks the upload is refused with a
    /// 400 whose message starts with `expected` while the first pair stays byte for byte.
    fn assert_rejected(chain: &str, key: &str, expected: &str) {
        assert_rejected_with(400, chain, key, expected);
    }

    fn assert_rejected_with(status: u16, chain: &str, key: &str, expected: &str) {
        let (_dir, store) = store();
        store.install_self_signed("vault.local", &[]).unwrap();
        let before = files(&store);
        let err = store.install_pem(chain, key).unwrap_err();
        assert_eq!(err.status(), status, "{}", err.message);
        assert!(err.message.starts_with(expected), "expected `{expected}…`, got `{}`", err.message);
        assert_eq!(files(&store), before, "a refused upload changed the installed pair");
        assert_eq!(fs::read_dir(store.cert_path().parent().unwrap()).unwrap().count(), 2, "temp files left behind");
    }

    #[test]
    fn self_signed_certificate_names_the_host_localhost_and_addresses() {
        let (_dir, store) = store();
        let ip: IpAddr = "192.168.1.10".parse().unwrap();
        let installed = store.install_self_signed("Vault.Local", &[ip]).unwrap();
        let info = store.info().unwrap().unwrap();
        assert_eq!(info, installed);
        assert_eq!(info.subject, "CN=vault.local");
        assert_eq!(info.issuer, info.subject);
        assert_eq!(info.sans, ["vault.local", "localhost", "192.168.1.10"]);
        assert!(info.self_signed);
        assert!((824..=825).contains(&info.days_left), "{}", info.days_left);
        let not_before = crate::time::parse_rfc3339(&info.not_before).unwrap();
        let not_after = crate::time::parse_rfc3339(&info.not_after).unwrap();
        assert_eq!(not_after.duration_since(not_before).unwrap(), Duration::from_secs(825 * 86_400));
        assert!(not_before < SystemTime::now());
    }

    #[test]
    fn self_signed_certificate_lists_each_name_once() {
        let (_dir, store) = store();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let info = store.install_self_signed("localhost", &[ip, ip]).unwrap();
        assert_eq!(info.sans, ["localhost", "10.0.0.5"]);
    }

    #[test]
    fn a_certificate_named_after_its_issuer_is_not_self_signed_without_its_own_signature() {
        let (ca_key, leaf_key) = (p256(), p256());
        let ca = ca_params("vault.example.org");
        let leaf = params("vault.example.org", days(-1), days(30))
            .signed_by(&leaf_key, &Issuer::from_params(&ca, &ca_key))
            .unwrap();
        let (_dir, store) = store();
        let info = store.install_pem(&leaf.pem(), &leaf_key.serialize_pem()).unwrap();
        assert_eq!(info.issuer, info.subject);
        assert!(!info.self_signed);
    }

    #[test]
    fn fingerprint_is_uppercase_sha256_pairs_of_the_leaf_der() {
        let (_dir, store) = store();
        let info = store.install_self_signed("vault.local", &[]).unwrap();
        let (chain, _) = store.load_pem().unwrap().unwrap();
        let der = pem::parse(chain).unwrap().into_contents();
        let expected: Vec<String> = Sha256::digest(&der).iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(info.fingerprint_sha256, expected.join(":"));
        assert_eq!(info.fingerprint_sha256.len(), 32 * 3 - 1);
        assert!(info.fingerprint_sha256.bytes().all(|b| b == b':' || b.is_ascii_digit() || b.is_ascii_uppercase()));
    }

    #[test]
    fn self_signed_certificate_refuses_a_bad_hostname() {
        let (_dir, store) = store();
        let err = store.install_self_signed("not a host", &[]).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message.starts_with("hostname: "), "{}", err.message);
        assert!(!store.cert_path().exists());
    }

    #[test]
    fn self_signed_certificate_covers_its_names_and_nothing_else() {
        let (_dir, store) = store();
        let info = store.install_self_signed("vault.local", &["10.0.0.5".parse().unwrap()]).unwrap();
        assert!(covers_host(&info, "vault.local"));
        assert!(covers_host(&info, "VAULT.local."));
        assert!(covers_host(&info, "localhost"));
        assert!(covers_host(&info, "10.0.0.5"));
        assert!(!covers_host(&info, "10.0.0.6"));
        assert!(!covers_host(&info, "other.local"));
        assert!(!covers_host(&info, "sub.vault.local"));
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        let (_dir, store) = store();
        let info = store.install_self_signed("vault.local", &["::1".parse().unwrap()]).unwrap();
        let info = CertificateInfo { sans: vec!["*.example.org".into(), "::1".into()], ..info };
        assert!(covers_host(&info, "vault.example.org"));
        assert!(!covers_host(&info, "example.org"));
        assert!(!covers_host(&info, "a.b.example.org"));
        assert!(!covers_host(&info, ".example.org"));
        assert!(covers_host(&info, "[0:0:0:0:0:0:0:1]"), "IPv6 compares as an address, not as text");
    }

    #[test]
    fn nothing_installed_reads_as_none() {
        let (_dir, store) = store();
        assert_eq!(store.info().unwrap(), None);
        assert_eq!(store.load_pem().unwrap(), None);
    }

    #[test]
    fn an_unreadable_installed_certificate_is_an_internal_error() {
        let (_dir, store) = store();
        fs::create_dir_all(store.cert_path().parent().unwrap()).unwrap();
        fs::write(store.cert_path(), "not a certificate").unwrap();
        assert_eq!(store.info().unwrap_err().status(), 500);
    }

    #[test]
    fn an_ordered_chain_with_its_key_is_installed() {
        let (_dir, store) = store();
        store.install_self_signed("vault.local", &[]).unwrap();
        let (leaf, mid, root, key) = ca_chain();
        let chain = format!("{leaf}{mid}{root}");
        let info = store.install_pem(&chain, &key).unwrap();
        assert_eq!(info.subject, "CN=vault.example.org");
        assert_eq!(info.issuer, "CN=Test Intermediate CA");
        assert_eq!(info.sans, ["vault.example.org"]);
        assert!(!info.self_signed);
        assert!((89..=90).contains(&info.days_left), "{}", info.days_left);
        assert_eq!(store.info().unwrap(), Some(info));
        let (stored_chain, stored_key) = store.load_pem().unwrap().unwrap();
        assert_eq!(pem::parse_many(&stored_chain).unwrap(), pem::parse_many(&chain).unwrap());
        assert_eq!(pem::parse(stored_key).unwrap(), pem::parse(key).unwrap());
    }

    #[test]
    fn text_around_the_blocks_is_dropped_when_stored() {
        let (_dir, store) = store();
        let (leaf, key) = leaf_valid(days(-1), days(30));
        store.install_pem(&format!("Bag Attributes\n    friendlyName: vault\n{leaf}"), &key).unwrap();
        let (stored_chain, _) = store.load_pem().unwrap().unwrap();
        assert_eq!(stored_chain, leaf);
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, store) = store();
        store.install_self_signed("vault.local", &[]).unwrap();
        assert_eq!(fs::metadata(store.key_path()).unwrap().permissions().mode() & 0o777, 0o600);
        let (leaf, key) = leaf_valid(days(-1), days(30));
        store.install_pem(&leaf, &key).unwrap();
        assert_eq!(fs::metadata(store.key_path()).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn an_installation_leaves_only_the_two_files() {
        let (_dir, store) = store();
        store.install_self_signed("vault.local", &[]).unwrap();
        store.install_self_signed("vault.local", &[]).unwrap();
        let mut names: Vec<String> = fs::read_dir(store.cert_path().parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cert.pem", "key.pem"]);
    }

    #[test]
    fn ed25519_and_p384_keys_are_accepted() {
        for alg in [&rcgen::PKCS_ED25519, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let (_dir, store) = store();
            let key = KeyPair::generate_for(alg).unwrap();
            let cert = params("vault.example.org", days(-1), days(30)).self_signed(&key).unwrap();
            let info = store.install_pem(&cert.pem(), &key.serialize_pem()).unwrap();
            assert!(info.self_signed, "{alg:?}");
        }
    }

    #[test]
    fn sec1_ec_keys_are_accepted_and_stored_as_pkcs8() {
        let (_dir, store) = store();
        let key = parse_private_key(SEC1_P256_KEY).unwrap();
        let cert = params("vault.example.org", days(-1), days(30)).self_signed(&key).unwrap();
        store.install_pem(&cert.pem(), SEC1_P256_KEY).unwrap();
        let (_, stored_key) = store.load_pem().unwrap().unwrap();
        assert!(stored_key.starts_with("-----BEGIN PRIVATE KEY-----"), "{stored_key}");
    }

    #[test]
    fn rsa_keys_are_accepted_as_pkcs1_and_pkcs8() {
        let key = parse_private_key(PKCS8_RSA_KEY).unwrap();
        let cert = params("vault.example.org", days(-1), days(30)).self_signed(&key).unwrap();
        for key_pem in [PKCS1_RSA_KEY, PKCS8_RSA_KEY] {
            let (_dir, store) = store();
            let info = store.install_pem(&cert.pem(), key_pem).unwrap();
            assert!(info.self_signed);
        }
    }

    #[test]
    fn a_pkcs1_key_is_wrapped_as_openssl_would() {
        let pkcs1 = pem::parse(PKCS1_RSA_KEY).unwrap().into_contents();
        let pkcs8 = pem::parse(PKCS8_RSA_KEY).unwrap().into_contents();
        assert_eq!(pkcs8::wrap_rsa(&pkcs1), pkcs8);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let (_, key) = leaf_valid(days(-1), days(30));
        assert_rejected("hello", &key, "certificate: contains no CERTIFICATE block");
        assert_rejected(&key, &key, "certificate: contains no CERTIFICATE block");
        assert_rejected(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            &key,
            "certificate: not valid PEM",
        );
        let junk = pem::encode(&pem::Pem::new("CERTIFICATE", b"not DER".to_vec()));
        assert_rejected(&junk, &key, "certificate: block 1 is not a valid X.509 certificate");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let (leaf, _) = leaf_valid(days(-1), days(30));
        assert_rejected(&leaf, "", "key: missing");
        assert_rejected(&leaf, "hello", "key: expected exactly one PRIVATE KEY block");
        assert_rejected(&leaf, &leaf, "key: expected exactly one PRIVATE KEY block");
        let junk = pem::encode(&pem::Pem::new("PRIVATE KEY", b"not a key".to_vec()));
        assert_rejected(&leaf, &junk, "key: not a supported private key");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (leaf, _) = leaf_valid(days(-1), days(30));
        let (_, other_key) = leaf_valid(days(-1), days(30));
        assert_rejected(&leaf, &other_key, "key: does not match the certificate");
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let (leaf, key) = leaf_valid(days(-400), days(-5));
        assert_rejected(&leaf, &key, "certificate: expired on ");
    }

    #[test]
    fn a_certificate_not_yet_valid_is_refused() {
        let (leaf, key) = leaf_valid(days(5), days(400));
        assert_rejected(&leaf, &key, "certificate: not valid before ");
    }

    #[test]
    fn an_expired_intermediate_is_refused() {
        let (root_key, mid_key, leaf_key) = (p256(), p256(), p256());
        let root_params = ca_params("Test Root CA");
        let mut mid_params = ca_params("Test Intermediate CA");
        mid_params.not_after = time::OffsetDateTime::now_utc() - days(1);
        let mid = mid_params.signed_by(&mid_key, &Issuer::from_params(&root_params, &root_key)).unwrap();
        let leaf = params("vault.example.org", days(-1), days(30))
            .signed_by(&leaf_key, &Issuer::from_params(&mid_params, &mid_key))
            .unwrap();
        let chain = format!("{}{}", leaf.pem(), mid.pem());
        assert_rejected(
            &chain,
            &leaf_key.serialize_pem(),
            "certificate: certificate 2 of the chain (CN=Test Intermediate CA) expired on ",
        );
    }

    #[test]
    fn expiry_dates_are_rfc3339() {
        let (leaf, key) = leaf_valid(days(-400), days(-5));
        let (_dir, store) = store();
        let err = store.install_pem(&leaf, &key).unwrap_err();
        let date = err.message.trim_start_matches("certificate: expired on ");
        assert!(crate::time::parse_rfc3339(date).is_some(), "{}", err.message);
    }

    #[test]
    fn encrypted_keys_are_refused_with_how_to_decrypt() {
        let (leaf, _) = leaf_valid(days(-1), days(30));
        let pkcs8 = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,3F17F5316E2BAC89\n\nMIIBvTBXBgkqhkiG9w0BBQ0wSjApBgkqhkiG9w0BBQwwHAQI\n-----END EC PRIVATE KEY-----\n";
        for key in [pkcs8, legacy] {
            assert_rejected(&leaf, key, "key: the private key is encrypted");
            let (_dir, store) = store();
            let message = store.install_pem(&leaf, key).unwrap_err().message;
            assert!(message.contains("openssl pkey -in key.pem -out key-plain.pem"), "{message}");
        }
    }

    #[test]
    fn a_chain_out_of_order_is_refused() {
        let (leaf, mid, root, key) = ca_chain();
        assert_rejected(&format!("{leaf}{root}{mid}"), &key, "certificate: the chain is out of order");
        assert_rejected(&format!("{leaf}{root}"), &key, "certificate: the chain is out of order");
    }

    #[test]
    fn inputs_over_one_mib_are_refused() {
        let (leaf, key) = leaf_valid(days(-1), days(30));
        let padding = "\n".repeat(MAX_PEM_BYTES);
        assert_rejected_with(413, &format!("{leaf}{padding}"), &key, "certificate: larger than 1 MiB");
        assert_rejected_with(413, &leaf, &format!("{key}{padding}"), "key: larger than 1 MiB");
    }

    #[test]
    fn der_lengths_use_the_short_and_long_forms() {
        // Version (3 bytes) + algorithm (15) + the key's OCTET STRING header and bytes.
        assert_eq!(pkcs8::wrap_rsa(&[0xAB; 3])[..2], [0x30, 3 + 15 + 2 + 3]);
        let long = pkcs8::wrap_rsa(&[0xAB; 300]);
        let body = 3 + 15 + 4 + 300;
        assert_eq!(long[..4], [0x30, 0x82, 0x01, (body - 256) as u8]);
        assert_eq!(long.len(), 4 + body);
    }
}
