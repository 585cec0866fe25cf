//! TLS 1.3 for node connections (QUIC's own), in one of two modes
//! ([`TlsMode`]).
//!
//! **Self-signed** (the default): each node makes itself a certificate at
//! start and accepts any certificate the peer shows. TLS then gives secrecy
//! and integrity, and each side proves it holds the private key of the
//! certificate it shows, but not who it is: identity comes only from the
//! cookie proof of the handshake, which is bound to this TLS session's
//! exporter.
//!
//! **CA** (`--tls-ca`, `--tls-cert`, `--tls-key`): each node presents a
//! certificate chain signed by a cluster CA, and both sides verify the
//! other's chain against that CA (client authentication is required). The
//! certificate must name its node: it carries [`node_name_to_san`] of the
//! node name as a DNS subject alternative name. The initiator asks for the
//! target's name as the TLS server name, so TLS itself checks the
//! acceptor's certificate; and on both sides the handshake's admit step
//! checks that the name the peer claims in its `Hello` is named by the
//! certificate it presented ([`check_peer_names`]), refusing it otherwise
//! with "certificate does not name node …". The cookie handshake still
//! runs in CA mode: a peer needs both a certificate from the CA naming it
//! and the cookie. A node whose own certificate does not name it starts,
//! with a warning, and every peer refuses it; a node name too long to
//! encode as a DNS name cannot start in CA mode.

use std::any::Any;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DistinguishedName, SignatureScheme};

/// ALPN protocol id of molt's node-to-node protocol.
pub const ALPN: &[u8] = b"molt-dist/1";
/// Server name used in the TLS handshake in self-signed mode (there the
/// peer's name is not checked by TLS). In CA mode the initiator uses the
/// target's [`node_name_to_san`] instead.
pub const SERVER_NAME: &str = "molt-node";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Making the node's certificate failed.
    #[error("cannot make a certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// QUIC needs a TLS 1.3 cipher suite the configuration lacks.
    #[error("no TLS 1.3 cipher suite usable by QUIC")]
    NoQuicSuite,
    /// A PEM file could not be read or holds nothing usable.
    #[error("{}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// PEM text given in memory holds nothing usable.
    #[error("{what}: {problem}")]
    Pem {
        /// Which PEM: "the CA certificate", "the node certificate", "the
        /// node key".
        what: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The CA certificates cannot verify peers.
    #[error("the CA certificate cannot be used to verify peers: {0}")]
    Verifier(String),
    /// The node name has no valid DNS form for a certificate.
    #[error(
        "node name {node} cannot be named in a certificate: `{san}` is not a valid DNS name \
         (too long?)"
    )]
    NameNotEncodable {
        /// The node name.
        node: String,
        /// Its [`node_name_to_san`].
        san: String,
    },
}

/// How a node's TLS authenticates peers (see the module documentation).
#[derive(Clone, Default)]
pub enum TlsMode {
    /// A certificate the node makes itself; peers' certificates are not
    /// checked, identity rests on the cookie alone.
    #[default]
    SelfSigned,
    /// Mutual TLS against a CA: peers must present a chain to this CA whose
    /// certificate names them.
    Ca {
        /// The CA certificate(s), PEM: the trust anchors.
        ca_cert_pem: Vec<u8>,
        /// This node's certificate chain, PEM, leaf first, signed by the CA
        /// and naming the node ([`node_name_to_san`]).
        cert_pem: Vec<u8>,
        /// The private key of the leaf certificate, PEM (PKCS#8, PKCS#1 or
        /// SEC1).
        key_pem: Vec<u8>,
    },
}

impl std::fmt::Debug for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsMode::SelfSigned => f.write_str("SelfSigned"),
            // The key stays out of logs.
            TlsMode::Ca { .. } => f.write_str("Ca { .. }"),
        }
    }
}

/// Certificates of a PEM text, or what is wrong with it.
fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_string());
    }
    Ok(certs)
}

/// The private key of a PEM text, or what is wrong with it.
fn pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC) found".to_string()
        }
        e => format!("bad PEM: {e}"),
    })
}

impl TlsMode {
    /// CA mode from PEM files: the CA certificate(s), this node's
    /// certificate chain and its private key. Each file is read and
    /// checked to hold what it should; errors name the file.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<TlsMode, TlsError> {
        let read = |path: &Path, check: &dyn Fn(&[u8]) -> Result<(), String>| {
            let file_error = |problem: String| TlsError::File {
                path: path.to_path_buf(),
                problem,
            };
            let bytes = std::fs::read(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
            check(&bytes).map_err(file_error)?;
            Ok::<_, TlsError>(bytes)
        };
        let certs = |pem: &[u8]| pem_certificates(pem).map(|_| ());
        Ok(TlsMode::Ca {
            ca_cert_pem: read(ca, &certs)?,
            cert_pem: read(cert, &certs)?,
            key_pem: read(key, &|pem| pem_key(pem).map(|_| ()))?,
        })
    }

    /// Whether this is CA mode.
    pub fn is_ca(&self) -> bool {
        matches!(self, TlsMode::Ca { .. })
    }

    /// The node names this node's certificate names (the DNS subject
    /// alternative names that decode with [`san_to_node_name`]), in the
    /// certificate's order; empty in self-signed mode. The CLI takes its
    /// node name from here in CA mode.
    pub fn certificate_node_names(&self) -> Result<Vec<String>, TlsError> {
        let TlsMode::Ca { cert_pem, .. } = self else {
            return Ok(Vec::new());
        };
        let chain = pem_certificates(cert_pem).map_err(|problem| TlsError::Pem {
            what: "the node certificate",
            problem,
        })?;
        let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| TlsError::Pem {
            what: "the node certificate",
            problem: format!("cannot parse: {e}"),
        })?;
        Ok(leaf
            .valid_dns_names()
            .filter_map(san_to_node_name)
            .collect())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and key made for this node (valid for its name).
pub struct NodeIdentity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl NodeIdentity {
    /// A fresh self-signed certificate naming the node.
    pub fn self_signed(node_name: &str) -> Result<Self, TlsError> {
        let names = vec![SERVER_NAME.to_string(), node_name_to_san(node_name)];
        let certified = rcgen::generate_simple_self_signed(names)?;
        Ok(NodeIdentity {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        })
    }
}

/// The DNS subject alternative name that names node `node_name` in a
/// certificate (CA mode).
///
/// `name@host` becomes `N.at.H.molt`, where `N` and `H` encode `name` and
/// `host` (split at the first `@`) byte by byte: `a`–`z` and `0`–`9` stay
/// as they are; `.` becomes `-` (except as the first or last byte of a
/// part); every other byte (upper-case letters, `-`, `_`, `@`, UTF-8
/// bytes, a leading or trailing `.`) becomes `_` and two lower-case hex
/// digits. An empty part is `_`. A name without `@` becomes `N.molt`.
///
/// | node name           | SAN                          |
/// |---------------------|------------------------------|
/// | `a@127.0.0.1`       | `a.at.127-0-0-1.molt`        |
/// | `worker-1@10.0.0.2` | `worker_2d1.at.10-0-0-2.molt` |
/// | `db@host.example`   | `db.at.host-example.molt`    |
///
/// The encoding is injective, even under DNS's case-insensitive
/// comparison (it only makes lower-case letters), and
/// [`san_to_node_name`] reverses it. Its output is a valid DNS name as
/// long as each encoded part fits in 63 bytes and the whole in 253;
/// `Distribution::start` refuses longer names in CA mode. A CA may issue
/// a wildcard such as `*.at.10-0-0-2.molt` to name every node on a host.
pub fn node_name_to_san(node_name: &str) -> String {
    match node_name.split_once('@') {
        Some((name, host)) => format!("{}.at.{}.molt", encode_part(name), encode_part(host)),
        None => format!("{}.molt", encode_part(node_name)),
    }
}

fn encode_part(part: &str) -> String {
    if part.is_empty() {
        return "_".to_string();
    }
    let bytes = part.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => out.push(b as char),
            b'.' if i != 0 && i != bytes.len() - 1 => out.push('-'),
            _ => {
                let _ = write!(out, "_{b:02x}");
            }
        }
    }
    out
}

fn decode_part(label: &str) -> Option<Vec<u8>> {
    if label == "_" {
        return Some(Vec::new());
    }
    let mut out = Vec::with_capacity(label.len());
    let mut bytes = label.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => out.push(b),
            b'-' => out.push(b'.'),
            b'_' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The node name a DNS subject alternative name encodes (the inverse of
/// [`node_name_to_san`], compared case-insensitively), or `None` if it
/// is not such a name.
pub fn san_to_node_name(san: &str) -> Option<String> {
    let san = san.to_ascii_lowercase();
    let labels: Vec<&str> = san.split('.').collect();
    let bytes = match labels.as_slice() {
        [name, "at", host, "molt"] => {
            let mut bytes = decode_part(name)?;
            bytes.push(b'@');
            bytes.extend(decode_part(host)?);
            bytes
        }
        [name, "molt"] => decode_part(name)?,
        _ => return None,
    };
    let name = String::from_utf8(bytes).ok()?;
    // Only the canonical encoding decodes, so decoding is injective too.
    (node_name_to_san(&name) == san).then_some(name)
}

/// The DNS name to check certificates against for `node_name`.
fn server_name_of(node_name: &str) -> Result<ServerName<'static>, TlsError> {
    let san = node_name_to_san(node_name);
    ServerName::try_from(san.clone()).map_err(|_| TlsError::NameNotEncodable {
        node: node_name.to_string(),
        san,
    })
}

/// The TLS server name the initiator asks for when connecting to
/// `node_name`: in CA mode its [`node_name_to_san`], so that TLS checks
/// the acceptor's certificate names it; [`SERVER_NAME`] otherwise.
pub fn server_name_for(mode: &TlsMode, node_name: &str) -> Result<String, TlsError> {
    match mode {
        TlsMode::SelfSigned => Ok(SERVER_NAME.to_string()),
        TlsMode::Ca { .. } => {
            server_name_of(node_name)?;
            Ok(node_name_to_san(node_name))
        }
    }
}

/// Whether `certificate` (DER) names node `node_name`.
fn names_node(certificate: &CertificateDer<'_>, node_name: &str) -> bool {
    let Ok(server_name) = server_name_of(node_name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(certificate)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(&server_name))
        .is_ok()
}

/// The leaf certificate of the chain a peer presented, from what
/// `quinn::Connection::peer_identity` returns (rustls gives a
/// `Vec<CertificateDer>`).
pub fn presented_leaf(peer_identity: Option<Box<dyn Any>>) -> Option<CertificateDer<'static>> {
    peer_identity?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}

/// CA mode's admit check: the leaf certificate the peer presented
/// ([`presented_leaf`]) must name the node the peer claims to be. The
/// chain itself was already verified against the CA by TLS. The error is
/// the reason the peer is refused.
pub fn check_peer_names(leaf: Option<&CertificateDer<'_>>, node_name: &str) -> Result<(), String> {
    match leaf {
        Some(cert) if names_node(cert, node_name) => Ok(()),
        Some(_) => Err(format!(
            "certificate does not name node {node_name} (no subject alternative name {})",
            node_name_to_san(node_name)
        )),
        None => Err(format!("node {node_name} presented no certificate")),
    }
}

/// Accepts any certificate but checks the handshake signature made with
/// it: the peer holds the key. Who the peer is, the cookie proof decides.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AnyCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// QUIC server and client configurations for node `node_name` in `mode`.
pub fn quic_configs(
    mode: &TlsMode,
    node_name: &str,
) -> Result<
    (
        quinn::crypto::rustls::QuicServerConfig,
        quinn::crypto::rustls::QuicClientConfig,
    ),
    TlsError,
> {
    let provider = provider();
    let server_builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let client_builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let (mut server, mut client) = match mode {
        TlsMode::SelfSigned => {
            let identity = NodeIdentity::self_signed(node_name)?;
            let verifier = Arc::new(AnyCertificate(provider));
            let chain = vec![identity.cert.clone()];
            let key = || PrivateKeyDer::Pkcs8(identity.key.clone_key());
            let server = server_builder
                .with_client_cert_verifier(verifier.clone())
                .with_single_cert(chain.clone(), key())?;
            let client = client_builder
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_client_auth_cert(chain, key())?;
            (server, client)
        }
        TlsMode::Ca {
            ca_cert_pem,
            cert_pem,
            key_pem,
        } => {
            let pem_error = |what| move |problem| TlsError::Pem { what, problem };
            let anchors = pem_certificates(ca_cert_pem).map_err(pem_error("the CA certificate"))?;
            let chain = pem_certificates(cert_pem).map_err(pem_error("the node certificate"))?;
            let key = pem_key(key_pem).map_err(pem_error("the node key"))?;
            server_name_of(node_name)?;
            if !names_node(&chain[0], node_name) {
                // Not an error, so that the refusal by peers can be tested,
                // but it will be refused by every peer.
                tracing::warn!(
                    node = %node_name,
                    "this node's certificate does not name it (it needs the DNS subject \
                     alternative name {}): every peer will refuse it",
                    node_name_to_san(node_name)
                );
            }
            let mut roots = RootCertStore::empty();
            for anchor in anchors {
                roots.add(anchor).map_err(|e| TlsError::Pem {
                    what: "the CA certificate",
                    problem: e.to_string(),
                })?;
            }
            let roots = Arc::new(roots);
            let client_verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
            let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            let server = server_builder
                .with_client_cert_verifier(client_verifier)
                .with_single_cert(chain.clone(), key.clone_key())?;
            let client = client_builder
                .with_webpki_verifier(server_verifier)
                .with_client_auth_cert(chain, key)?;
            (server, client)
        }
    };
    server.alpn_protocols = vec![ALPN.to_vec()];
    client.alpn_protocols = vec![ALPN.to_vec()];

    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|_| TlsError::NoQuicSuite)?;
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|_| TlsError::NoQuicSuite)?;
    Ok((server, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a certificate it signed for each of `sans`: (CA PEM, cert
    /// PEM, key PEM).
    fn ca_signed(sans: &[&str]) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (ca.pem(), cert.pem(), key.serialize_pem())
    }

    #[test]
    fn node_names_have_documented_sans() {
        assert_eq!(node_name_to_san("a@127.0.0.1"), "a.at.127-0-0-1.molt");
        assert_eq!(
            node_name_to_san("worker-1@10.0.0.2"),
            "worker_2d1.at.10-0-0-2.molt"
        );
        assert_eq!(
            node_name_to_san("db@host.example"),
            "db.at.host-example.molt"
        );
        assert_eq!(node_name_to_san("A@.x."), "_41.at._2ex_2e.molt");
        assert_eq!(node_name_to_san("@"), "_.at._.molt");
        assert_eq!(node_name_to_san("solo"), "solo.molt");
    }

    #[test]
    fn sans_are_valid_dns_names_that_decode_back() {
        for name in [
            "a@127.0.0.1",
            "worker-1@10.0.0.2",
            "Worker_1@host.example",
            "a..b@::1",
            "ünï@h",
            "x@y@z",
            "solo",
            "@",
            ".a.@.b.",
        ] {
            let san = node_name_to_san(name);
            assert!(ServerName::try_from(san.as_str()).is_ok(), "{name} → {san}");
            assert_eq!(san_to_node_name(&san).as_deref(), Some(name), "{san}");
            assert_eq!(
                san_to_node_name(&san.to_ascii_uppercase()).as_deref(),
                Some(name)
            );
        }
        for not_ours in [
            "molt-node",
            "a.at.b",
            "a.b.c.molt",
            "a_4.molt",
            "a_zz.molt",
            "a_61.molt",
        ] {
            assert_eq!(san_to_node_name(not_ours), None, "{not_ours}");
        }
        // DNS names compare case-insensitively, and so does decoding.
        assert_eq!(san_to_node_name("A_2D.MOLT").as_deref(), Some("a-"));
    }

    #[test]
    fn distinct_names_have_distinct_sans() {
        let names = [
            "a@b", "A@b", "a@B", "a-b@c", "a.b@c", "a_b@c", "a@b.c", "a@b-c", "a@b_c", "ab@c",
            "a@bc", "a", "a@", "@a", "a.@b", "a@.b",
        ];
        let mut sans: Vec<String> = names
            .iter()
            .map(|n| node_name_to_san(n).to_ascii_lowercase())
            .collect();
        sans.sort();
        sans.dedup();
        assert_eq!(sans.len(), names.len(), "{sans:?}");
    }

    #[test]
    fn the_name_check_accepts_only_the_named_node() {
        let (_, cert, _) = ca_signed(&["a.at.127-0-0-1.molt"]);
        let leaf = pem_certificates(cert.as_bytes()).unwrap().remove(0);
        assert_eq!(check_peer_names(Some(&leaf), "a@127.0.0.1"), Ok(()));
        let err = check_peer_names(Some(&leaf), "b@127.0.0.1").unwrap_err();
        assert!(
            err.starts_with("certificate does not name node b@127.0.0.1"),
            "{err}"
        );
        // Prefixes and look-alikes are other names.
        assert!(check_peer_names(Some(&leaf), "a@127.0.0.10").is_err());
        assert!(check_peer_names(Some(&leaf), "A@127.0.0.1").is_err());
        assert!(check_peer_names(None, "a@127.0.0.1").is_err());
        // A wildcard names every node of its host.
        let (_, cert, _) = ca_signed(&["*.at.10-0-0-2.molt"]);
        let leaf = pem_certificates(cert.as_bytes()).unwrap().remove(0);
        assert!(check_peer_names(Some(&leaf), "worker-1@10.0.0.2").is_ok());
        assert!(check_peer_names(Some(&leaf), "worker-1@10.0.0.3").is_err());
    }

    #[test]
    fn ca_mode_reads_its_certificate_and_refuses_unencodable_names() {
        let (ca, cert, key) = ca_signed(&["molt-node", "a.at.127-0-0-1.molt"]);
        let mode = TlsMode::Ca {
            ca_cert_pem: ca.into_bytes(),
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
        };
        assert_eq!(
            mode.certificate_node_names().unwrap(),
            vec!["a@127.0.0.1".to_string()]
        );
        assert!(quic_configs(&mode, "a@127.0.0.1").is_ok());
        assert!(format!("{mode:?}").find("PRIVATE").is_none());
        let long = format!("{}@127.0.0.1", "n".repeat(64));
        let err = quic_configs(&mode, &long).err().expect("refused");
        assert!(matches!(err, TlsError::NameNotEncodable { .. }), "{err}");
    }

    #[test]
    fn from_files_names_the_bad_file() {
        let dir = std::env::temp_dir().join(format!("molt-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = ca_signed(&["a.at.127-0-0-1.molt"]);
        let (ca_file, cert_file, key_file) = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&ca_file, &ca).unwrap();
        std::fs::write(&cert_file, &cert).unwrap();
        std::fs::write(&key_file, &key).unwrap();
        assert!(
            TlsMode::from_files(&ca_file, &cert_file, &key_file)
                .unwrap()
                .is_ca()
        );
        // A key where the certificate should be, and the other way round.
        let err = TlsMode::from_files(&ca_file, &key_file, &key_file)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("key.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = TlsMode::from_files(&ca_file, &cert_file, &cert_file)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("cert.pem") && err.contains("no PEM private key"),
            "{err}"
        );
        let missing = dir.join("missing.pem");
        let err = TlsMode::from_files(&missing, &cert_file, &key_file)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("missing.pem") && err.contains("cannot read"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
