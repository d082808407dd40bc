//! What the daemon's HTTPS clients (the deliveries' and ClickHouse's)
//! share: the certificates they trust and the name they give. Below every
//! layer that makes a client, so neither client takes it from the other.

use std::sync::Arc;

use anyhow::{Context, Result};

pub const USER_AGENT_VALUE: &str = concat!("plausible-webhooks/", env!("CARGO_PKG_VERSION"));

/// rustls with the webpki roots plus the CAs in `extra_ca_file` (named by
/// its config `key` in errors).
pub fn tls_config(
    extra_ca_file: Option<&std::path::Path>,
    key: &str,
) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading {key} {}", path.display()))?;
        let mut found = 0;
        for cert in certs {
            let cert =
                cert.with_context(|| format!("parsing a certificate in {}", path.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("adding a CA from {}", path.display()))?;
            found += 1;
        }
        // An empty set would pass silently and trust nothing extra (a key
        // file put here by mistake printed "https client: ok").
        anyhow::ensure!(
            found > 0,
            "{key} {}: no certificate in it (no PEM `-----BEGIN CERTIFICATE-----` block); put the receiver's CA certificate there, not its key",
            path.display()
        );
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("configuring TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with no certificate in it (a private key, say) is refused,
    /// saying what the file must hold, rather than trusted as "no extra CA".
    #[test]
    fn an_extra_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        let pair = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&key, pair.serialize_pem()).unwrap();
        let err =
            tls_config(Some(&key), "delivery.extra_ca_file").expect_err("a key file is not a CA");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("delivery.extra_ca_file") && msg.contains("no certificate"),
            "{msg}"
        );
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca.cert.pem()).unwrap();
        assert!(tls_config(Some(&pem), "delivery.extra_ca_file").is_ok());
    }
}
