//! TLS 1.3 for node connections (QUIC's own): certificates the node makes
//! itself, or a CA's for mutual TLS.
//!
//! With self-made certificates TLS gives secrecy and integrity, and each
//! side proves it holds the private key of the certificate it shows, but
//! not who it is: identity comes from the cookie proof of the handshake,
//! which is bound to this TLS session's exporter. With `--tls-ca`, both
//! sides also verify the other's certificate against the CA and check that
//! it names the peer node.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DistinguishedName, SignatureScheme};

/// ALPN protocol id of molt's node-to-node protocol.
pub const ALPN: &[u8] = b"molt-dist/1";
/// Server name used in the TLS handshake (nodes are not DNS names).
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
        let names = vec![SERVER_NAME.to_string(), sanitize(node_name)];
        let certified = rcgen::generate_simple_self_signed(names)?;
        Ok(NodeIdentity {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        })
    }
}

/// DNS-name form of a node name for a certificate (`a@127.0.0.1` →
/// `a.at.127.0.0.1`).
fn sanitize(node_name: &str) -> String {
    node_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '.'
            }
        })
        .collect()
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

/// QUIC server and client configurations for a node.
pub fn quic_configs(
    identity: &NodeIdentity,
) -> Result<
    (
        quinn::crypto::rustls::QuicServerConfig,
        quinn::crypto::rustls::QuicClientConfig,
    ),
    TlsError,
> {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let chain = vec![identity.cert.clone()];
    let key = || PrivateKeyDer::Pkcs8(identity.key.clone_key());

    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain.clone(), key())?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key())?;
    client.alpn_protocols = vec![ALPN.to_vec()];

    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
        .map_err(|_| TlsError::NoQuicSuite)?;
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
        .map_err(|_| TlsError::NoQuicSuite)?;
    Ok((server, client))
}
