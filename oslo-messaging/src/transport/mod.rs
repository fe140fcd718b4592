//! Transports: a handle on a messaging backend, chosen by URL.
//!
//! ```
//! use oslo_messaging::{Config, Transport};
//!
//! // In-memory, shared by every `memory://` transport of the process:
//! let a = Transport::from_url("memory://")?;
//! let b = Transport::from_url("memory://")?;
//! assert_eq!(a.control_exchange(), "openstack");
//!
//! // From configuration (the `[DEFAULT] transport_url`):
//! let conf = Config::builder().transport_url("fake://").control_exchange("nova").build()?;
//! let t = Transport::new(&conf)?;
//! assert_eq!(t.control_exchange(), "nova");
//! assert_eq!(t.url().scheme(), "fake");
//! # Ok::<(), oslo_messaging::Error>(())
//! ```

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::driver::Driver;
use crate::driver::memory::MemoryDriver;
use crate::error::{Error, Result};
use crate::telemetry::Telemetry;

pub use crate::driver::Retry;
pub use crate::driver::memory::{MemoryHandle, SentKind, SentMessage};
pub use crate::url::{DriverKind, TransportHost, TransportUrl};

/// A connection to a messaging backend: cheap to clone, shared by clients, servers, notifiers
/// and listeners.
///
/// The URL scheme picks the driver: `rabbit://` (or `kombu://`) for RabbitMQ, `kafka://` for
/// Kafka (notifications only, with the `kafka` feature), `memory://` (or `fake://`) for the
/// in-process broker. Connections are opened lazily, when first needed, so
/// building a transport never blocks.
///
/// # Examples
///
/// ```
/// use oslo_messaging::Transport;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> oslo_messaging::Result<()> {
/// # #[cfg(feature = "rabbit")] {
/// let transport = Transport::from_url("rabbit://nova:secret@rmq1:5672/nova")?;
/// assert_eq!(transport.url().to_string(), "rabbit://nova:***@rmq1:5672/nova");
/// transport.cleanup().await; // nothing was connected: building a transport never blocks
/// # }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    driver: Arc<dyn Driver>,
    /// The test handle, for memory transports.
    memory: Option<MemoryHandle>,
    config: Config,
    url: TransportUrl,
    /// `[oslo_messaging_tracing]`, ready to make spans.
    telemetry: Telemetry,
    /// State that the layers above keep per transport, by type (the `test` notification
    /// driver's captures), so the transport need not know their types.
    extensions: Mutex<Vec<Arc<dyn Any + Send + Sync>>>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("url", &self.inner.url)
            .field("driver", &self.inner.driver)
            .finish()
    }
}

#[cfg(feature = "rabbit")]
fn rabbit_driver(url: &TransportUrl, config: &Config, exchange: String) -> Result<Arc<dyn Driver>> {
    Ok(Arc::new(crate::driver::rabbit::RabbitDriver::new(
        url,
        &config.rabbit,
        exchange,
    )?))
}

#[cfg(not(feature = "rabbit"))]
fn rabbit_driver(
    url: &TransportUrl,
    _config: &Config,
    _exchange: String,
) -> Result<Arc<dyn Driver>> {
    Err(Error::new(
        crate::ErrorKind::Configuration,
        format!(
            "the RabbitMQ driver is not in this build (enable the `rabbit` feature); URL {url}"
        ),
    ))
}

#[cfg(feature = "kafka")]
fn kafka_driver(url: &TransportUrl, config: &Config) -> Result<Arc<dyn Driver>> {
    Ok(Arc::new(crate::driver::kafka::KafkaDriver::new(
        url,
        &config.kafka,
    )?))
}

#[cfg(not(feature = "kafka"))]
fn kafka_driver(url: &TransportUrl, _config: &Config) -> Result<Arc<dyn Driver>> {
    Err(Error::new(
        crate::ErrorKind::Configuration,
        format!("the Kafka driver is not in this build (enable the `kafka` feature); URL {url}"),
    ))
}

impl Transport {
    /// A transport for `[DEFAULT] transport_url` of `config`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidUrl`](crate::ErrorKind::InvalidUrl) for a URL that does not parse or names an unknown driver,
    /// [`ErrorKind::Configuration`](crate::ErrorKind::Configuration) for bad options (including URL query overrides).
    pub fn new(config: &Config) -> Result<Self> {
        Self::with_config(config.transport_url().expose(), config)
    }

    /// A transport for notifications: `[oslo_messaging_notifications] transport_url` when set,
    /// else `[DEFAULT] transport_url`.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn for_notifications(config: &Config) -> Result<Self> {
        Self::with_config(config.notification_transport_url().expose(), config)
    }

    /// A transport for `url` with default options.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::with_config(url, &Config::default())
    }

    /// A transport for `url` with `config`'s options.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_config(url: &str, config: &Config) -> Result<Self> {
        let url = TransportUrl::parse(url)?;
        let mut config = config.clone();
        config.validate()?;
        let exchange = config.default.control_exchange.clone();
        let telemetry = Telemetry::new(&config)?;
        match url.driver_kind()? {
            DriverKind::Memory => {
                if let Some((k, _)) = url.query().first() {
                    return Err(Error::config(format!(
                        "the memory driver takes no options, but the URL sets {k:?}"
                    )));
                }
                let vhost = url.virtual_host().unwrap_or_default();
                let driver = MemoryDriver::shared(vhost, exchange, config.rabbit.clone());
                Ok(Self::from_memory(driver, config, url, telemetry))
            }
            DriverKind::Rabbit => {
                config.rabbit.apply_query(url.query())?;
                let driver = rabbit_driver(&url, &config, exchange)?;
                Ok(Self::from_parts(driver, None, config, url, telemetry))
            }
            DriverKind::Kafka => {
                config.kafka.apply_query(url.query())?;
                let driver = kafka_driver(&url, &config)?;
                Ok(Self::from_parts(driver, None, config, url, telemetry))
            }
        }
    }

    /// A transport on a private in-memory broker that nothing else in the process shares: the
    /// usual choice for tests.
    pub fn memory() -> Self {
        Self::memory_with_config(&Config::default())
    }

    /// As [`memory`](Self::memory), with `config`'s options (control exchange, timeouts...).
    pub fn memory_with_config(config: &Config) -> Self {
        let driver = MemoryDriver::private(
            config.default.control_exchange.clone(),
            config.rabbit.clone(),
        );
        let url = TransportUrl::parse("memory://").expect("a valid URL");
        let telemetry = Telemetry::new(config).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "tracing is off for this memory transport");
            Telemetry::default()
        });
        Self::from_memory(driver, config.clone(), url, telemetry)
    }

    fn from_memory(
        driver: MemoryDriver,
        config: Config,
        url: TransportUrl,
        telemetry: Telemetry,
    ) -> Self {
        let handle = driver.handle();
        Self::from_parts(Arc::new(driver), Some(handle), config, url, telemetry)
    }

    fn from_parts(
        driver: Arc<dyn Driver>,
        memory: Option<MemoryHandle>,
        config: Config,
        url: TransportUrl,
        telemetry: Telemetry,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                driver,
                memory,
                config,
                url,
                telemetry,
                extensions: Mutex::default(),
            }),
        }
    }

    /// The URL (its `Display` masks passwords).
    pub fn url(&self) -> &TransportUrl {
        &self.inner.url
    }

    /// The options this transport uses (URL query overrides applied).
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The exchange used when a target names none (`[DEFAULT] control_exchange`).
    pub fn control_exchange(&self) -> &str {
        &self.inner.config.default.control_exchange
    }

    /// The memory broker's test handle, for `memory://` transports.
    pub fn memory_handle(&self) -> Option<MemoryHandle> {
        self.inner.memory.clone()
    }

    /// This transport's value of type `T`, created on first use.
    pub(crate) fn extension<T: Any + Send + Sync + Default>(&self) -> Arc<T> {
        let mut slots = self
            .inner
            .extensions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = slots.iter().find_map(|s| s.clone().downcast::<T>().ok()) {
            return found;
        }
        let value = Arc::new(T::default());
        slots.push(value.clone());
        value
    }

    /// This transport's tracing.
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    pub(crate) fn driver(&self) -> &dyn Driver {
        &*self.inner.driver
    }

    /// The broker's reason while it blocks this transport's publishing (RabbitMQ's
    /// `connection.blocked`, sent on memory or disk alarms); `None` otherwise, and while there
    /// is no connection. While blocked, publishes with a finite retry budget fail with
    /// [`ErrorKind::Blocked`](crate::ErrorKind::Blocked); the others wait.
    ///
    /// Answers at once from the connection's last word: it never waits for a reconnect.
    ///
    /// # Examples
    ///
    /// ```
    /// let transport = oslo_messaging::Transport::memory();
    /// assert_eq!(transport.blocked(), None);
    /// ```
    pub fn blocked(&self) -> Option<String> {
        self.inner.driver.blocked()
    }

    /// Closes connections and stops background work. Clients and servers built on this
    /// transport fail with [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown) afterwards.
    /// With tracing on, it then waits (5 s at most) for the spans still queued to be exported.
    ///
    /// # Cancel safety
    ///
    /// The transport is shut, and calls in flight fail, from the first poll: dropping the future
    /// part-way leaves it so, and only skips closing its connections now (they close when the
    /// transport's last handle is dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use oslo_messaging::{Context, ErrorKind, Target, Transport};
    /// use oslo_messaging::rpc::RpcClient;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let transport = Transport::memory();
    /// let client = RpcClient::new(&transport, Target::new("demo"));
    /// transport.cleanup().await;
    /// let err = client.cast(&Context::new(), "ping", &serde_json::json!({})).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::ShutDown);
    /// # }
    /// ```
    pub async fn cleanup(&self) {
        self.inner.driver.cleanup().await;
        self.inner
            .telemetry
            .flush(crate::telemetry::FLUSH_TIMEOUT)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the `rabbit` feature a RabbitMQ URL is a clear configuration error that names
    /// the feature, and never shows the password; with it, the same URL builds a transport.
    #[test]
    fn rabbit_urls_need_the_rabbit_feature() {
        let got = Transport::from_url("rabbit://nova:s3cret@rmq1:5672/");
        if cfg!(feature = "rabbit") {
            assert!(got.is_ok());
        } else {
            let err = got.unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Configuration);
            assert!(err.to_string().contains("`rabbit` feature"), "{err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }
}
