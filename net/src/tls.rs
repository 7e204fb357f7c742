//! TLS 1.3 over QUIC with the ring provider only, set explicitly (no process-wide default
//! provider is installed or needed).
//!
//! Cores present self-signed certificates made by `genesis`. Drivers and clients do not use a
//! certificate authority: they pin, per core, the exact certificate listed in the committee file,
//! and check the handshake signature against it. Drivers and clients are anonymous (no client
//! certificates): cores trust nothing they send anyway.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CertificateError, CipherSuite, DigitallySignedStruct, SignatureScheme};

use crate::config::{server_name, Testbed};
use crate::limits::NetLimits;

/// The ALPN protocol id.
pub const ALPN: &[u8] = b"sleepyseal/1";

/// TLS or QUIC configuration that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration (bad key, bad certificate...).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn refused the TLS configuration.
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

/// ring's TLS 1.3 suites with AES-128-GCM preferred: QUIC encrypts every packet, and every
/// payload byte crosses it several times; AES-128 runs 10 rounds per block against AES-256's 14,
/// with a margin that is ample for connections whose peers trust nothing they carry anyway.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

fn transport(limits: &NetLimits, server: bool) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let streams = if server {
        limits.max_streams_per_connection
    } else {
        0
    };
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(streams));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(limits.idle_timeout).expect("idle timeout fits"),
    ));
    // One request can fill a stream; several streams share the connection window.
    let stream_window =
        u32::try_from(limits.max_request_bytes.min(u32::MAX as usize)).expect("bounded above");
    t.stream_receive_window(quinn::VarInt::from_u32(stream_window));
    t.receive_window(quinn::VarInt::from_u64(4 * stream_window as u64).expect("fits"));
    // A core holds at most this much of its replies unacknowledged per connection: a peer
    // that asks for large replies and never reads them cannot make it buffer more (the write
    // waits, and `reply_write_timeout` resets the stream).
    t.send_window(if server {
        limits.reply_bytes_in_flight
    } else {
        4 * stream_window as u64
    });
    if !server {
        t.keep_alive_interval(Some(limits.idle_timeout / 3));
    }
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(limits.initial_window_bytes.max(14_720));
    t.congestion_controller_factory(Arc::new(cubic));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(crate::limits::udp_payload_bound(limits));
    t.mtu_discovery_config(Some(mtu));
    t
}

/// The QUIC server configuration of a core.
pub fn server_config(
    certificate: Vec<u8>,
    tls_key: Vec<u8>,
    limits: &NetLimits,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(certificate)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls_key)),
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport(limits, true)));
    // Answer a flood of new connections with address validation first.
    config.migration(false);
    Ok(config)
}

/// The QUIC client configuration for talking to the cores of `testbed`, each pinned to its
/// certificate.
pub fn client_config(
    testbed: &Testbed,
    limits: &NetLimits,
) -> Result<quinn::ClientConfig, TlsError> {
    let pinned = testbed
        .committee
        .indices()
        .zip(&testbed.certificates)
        .map(|(index, der)| (server_name(index), der.clone()))
        .collect();
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificates { pinned, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport(limits, false)));
    Ok(config)
}

/// Accepts a server only if it presents exactly the certificate pinned for its name.
#[derive(Debug)]
struct PinnedCertificates {
    /// Server name → certificate (DER).
    pinned: HashMap<String, Vec<u8>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = server_name.to_str();
        match self.pinned.get(name.as_ref()) {
            Some(expected) if expected.as_slice() == end_entity.as_ref() => {
                Ok(ServerCertVerified::assertion())
            }
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is offered.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How long a client waits for a connection to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_is_preferred_and_the_other_suites_stay() {
        let suites: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(suites.contains(&CipherSuite::TLS13_AES_256_GCM_SHA384));
        let all = rustls::crypto::ring::default_provider().cipher_suites.len();
        assert_eq!(suites.len(), all);
    }
}
