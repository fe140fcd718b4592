//! TLS for broker connections, from the `ssl*` options.
//!
//! Broker host names are always verified (as Python 18.3.1 does: "verification is always
//! enabled now"), against `ssl_ca_file` when given, else the system's trusted certificates.
//! A client certificate (`ssl_cert_file` + `ssl_key_file`) is presented when configured (for
//! the `EXTERNAL` login); as in Python, without `ssl_key_file` the key is read from
//! `ssl_cert_file`. TLS 1.2 and 1.3 only; `ssl_version` can pin one of them.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use super::amqp::{AsyncReadWrite, Error as AmqpError, Upgrade};
use crate::config::RabbitOptions;
use crate::error::{Error, Result};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(ssl_version: &str) -> Result<&'static [&'static rustls::SupportedProtocolVersion]> {
    static BOTH: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];
    static V12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    static V13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match ssl_version
        .to_ascii_lowercase()
        .replace(['.', '-'], "_")
        .as_str()
    {
        // SSLv23 meant "the best both sides speak" in Python's ssl module.
        "" | "sslv23" | "tls" | "tls_client" => Ok(BOTH),
        "tlsv1_2" => Ok(V12),
        "tlsv1_3" => Ok(V13),
        "tlsv1" | "tlsv1_1" | "sslv3" | "sslv2" => Err(Error::config(format!(
            "ssl_version {ssl_version} is not supported: only TLS 1.2 and 1.3 are"
        ))),
        _ => Err(Error::config(format!(
            "unknown ssl_version {ssl_version:?} (use TLSv1_2 or TLSv1_3, or leave it empty)"
        ))),
    }
}

fn load_certs(path: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::config(format!("cannot read {what} {path}: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::config(format!("cannot parse {what} {path}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::config(format!(
            "{what} {path} holds no PEM certificate"
        )));
    }
    Ok(certs)
}

/// Builds the TLS client configuration, checking files up front so a bad one is a clear
/// configuration error at start-up, not a failure at the first connection.
pub(crate) fn client_config(opts: &RabbitOptions) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    if opts.ssl_ca_file.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(Error::config(
                "ssl is on but no ssl_ca_file is set and the system has no trusted certificates",
            ));
        }
    } else {
        for cert in load_certs(&opts.ssl_ca_file, "ssl_ca_file")? {
            roots
                .add(cert)
                .map_err(|e| Error::config(format!("ssl_ca_file {}: {e}", opts.ssl_ca_file)))?;
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(&opts.ssl_version)?)
        .map_err(|e| Error::config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots);
    let config = match (opts.ssl_cert_file.is_empty(), opts.ssl_key_file.is_empty()) {
        (true, true) => builder.with_no_client_auth(),
        (false, key_in_cert) => {
            let chain = load_certs(&opts.ssl_cert_file, "ssl_cert_file")?;
            let (option, path) = if key_in_cert {
                ("ssl_cert_file", &opts.ssl_cert_file)
            } else {
                ("ssl_key_file", &opts.ssl_key_file)
            };
            let key = PrivateKeyDer::from_pem_file(path).map_err(|e| {
                Error::config(format!("cannot read the key in {option} {path}: {e}"))
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                Error::config(format!(
                    "ssl_cert_file and ssl_key_file do not fit together: {e}"
                ))
            })?
        }
        (true, false) => {
            return Err(Error::config("ssl_key_file needs ssl_cert_file"));
        }
    };
    Ok(Arc::new(config))
}

/// The upgrade that wraps a TCP connection to `host` in TLS, verifying that name.
pub(crate) fn upgrade(config: Arc<rustls::ClientConfig>, host: &str) -> Result<Upgrade> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Error::config(format!("{host:?} is not a valid TLS server name: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(config);
    Ok(Arc::new(move |tcp: TcpStream| {
        let connector = connector.clone();
        let name = name.clone();
        Box::pin(async move {
            match connector.connect(name, tcp).await {
                Ok(s) => Ok(Box::new(s) as Box<dyn AsyncReadWrite>),
                Err(e) => Err(AmqpError::Tls(e.to_string())),
            }
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions() {
        assert_eq!(versions("").unwrap().len(), 2);
        assert_eq!(versions("TLSv1_2").unwrap().len(), 1);
        assert_eq!(versions("tlsv1.3").unwrap().len(), 1);
        assert!(
            versions("TLSv1")
                .unwrap_err()
                .to_string()
                .contains("only TLS 1.2 and 1.3")
        );
        assert!(versions("nonsense").is_err());
    }

    #[test]
    fn bad_files_are_configuration_errors() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let opts = RabbitOptions {
            ssl: true,
            ssl_ca_file: garbage.display().to_string(),
            ..RabbitOptions::default()
        };
        let err = client_config(&opts).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );

        let opts = RabbitOptions {
            ssl_ca_file: "/no/such/ca.pem".into(),
            ..RabbitOptions::default()
        };
        assert!(
            client_config(&opts)
                .unwrap_err()
                .to_string()
                .contains("cannot read ssl_ca_file")
        );

        let opts = RabbitOptions {
            ssl_key_file: "/x.pem".into(),
            ..RabbitOptions::default()
        };
        assert!(
            client_config(&opts)
                .unwrap_err()
                .to_string()
                .contains("ssl_key_file needs ssl_cert_file")
        );
    }
}
