//! `output.logstash`: events to Logstash's Beats input (or any lumberjack v2 server).
//!
//! A batch goes out in windows of `bulk_max_size` events; a window counts as delivered when the
//! server's ACK reaches its last sequence number. When a connection fails, the rest of the
//! window is sent again over a new connection, to the next host; the windows before it stay
//! delivered.

pub mod config;
mod protocol;

pub use config::LogstashConfig;

use super::metrics::OutputMetrics;
use super::{Output, OutputError};
use crate::process::Event;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const NAME: &str = "logstash";

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// The Logstash output.
pub struct Logstash {
    config: LogstashConfig,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Index into `hosts` of the host in use (or to use next).
    host: usize,
    /// One connection per host, made when first needed and dropped when it fails.
    connections: Vec<Option<Box<dyn Stream>>>,
    metrics: OutputMetrics,
    /// The `@metadata` object Logstash's Beats input expects, already serialised.
    metadata: Vec<u8>,
}

impl Logstash {
    /// Builds the output; the first `send` connects.
    pub fn build(config: &LogstashConfig, metrics: OutputMetrics) -> Result<Self, OutputError> {
        let invalid = |message: String| OutputError::Config {
            output: NAME,
            message,
        };
        config.validate().map_err(invalid)?;
        let tls = config
            .ssl
            .as_ref()
            .filter(|ssl| ssl.enabled)
            .map(|ssl| {
                ssl.rustls()
                    .map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
                    .map_err(|err| invalid(format!("ssl: {err}")))
            })
            .transpose()?;
        let metadata = serde_json::to_vec(&serde_json::json!({
            "beat": "skiff",
            "type": "_doc",
            "version": env!("CARGO_PKG_VERSION"),
        }))
        .expect("JSON serialises");
        Ok(Self {
            config: config.clone(),
            tls,
            host: 0,
            connections: config.hosts.iter().map(|_| None).collect(),
            metrics,
            metadata,
        })
    }

    /// The current connection, made (to the current host) if there is none.
    async fn connect(&mut self) -> Result<&mut Box<dyn Stream>, OutputError> {
        if self.connections[self.host].is_none() {
            let host = &self.config.hosts[self.host];
            let tcp = timeout(self.config.timeout, TcpStream::connect(host))
                .await
                .map_err(|_| OutputError::Timeout {
                    output: NAME,
                    message: format!(
                        "connecting to {host}: no answer in {:?}",
                        self.config.timeout
                    ),
                })?
                .map_err(|err| OutputError::Unreachable {
                    output: NAME,
                    message: format!("{host}: {err}"),
                })?;
            tcp.set_nodelay(true).ok();
            let stream: Box<dyn Stream> = match &self.tls {
                None => Box::new(tcp),
                Some(connector) => {
                    let name = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h);
                    let name = ServerName::try_from(name.trim_matches(['[', ']']).to_string())
                        .map_err(|err| OutputError::Config {
                            output: NAME,
                            message: format!("{host}: not a server name: {err}"),
                        })?;
                    let tls = timeout(self.config.timeout, connector.connect(name, tcp))
                        .await
                        .map_err(|_| OutputError::Timeout {
                            output: NAME,
                            message: format!(
                                "TLS handshake with {host}: no answer in {:?}",
                                self.config.timeout
                            ),
                        })?
                        .map_err(|err| OutputError::Tls {
                            output: NAME,
                            message: format!("{host}: {err}"),
                        })?;
                    Box::new(tls)
                }
            };
            tracing::info!(host, tls = self.tls.is_some(), "connected to logstash");
            self.connections[self.host] = Some(stream);
        }
        Ok(self.connections[self.host]
            .as_mut()
            .expect("connected above"))
    }

    /// Sends one window and waits for its last ACK. Returns how many of `payloads` the server
    /// acknowledged before an error, along with the error.
    async fn send_window(&mut self, payloads: &[Vec<u8>]) -> Result<(), (usize, OutputError)> {
        let host = self.config.hosts[self.host].clone();
        let count = u32::try_from(payloads.len()).expect("bulk_max_size fits u32");
        let mut frames = Vec::with_capacity(payloads.iter().map(|p| p.len() + 10).sum());
        for (seq, payload) in (1..).zip(payloads) {
            protocol::json_frame(&mut frames, seq, payload);
        }
        let mut bytes = Vec::with_capacity(frames.len() + 6);
        protocol::window(&mut bytes, count);
        if self.config.compression_level > 0 {
            protocol::compressed_frame(&mut bytes, &frames, self.config.compression_level)
                .map_err(|source| {
                    (
                        0,
                        OutputError::Io {
                            output: NAME,
                            source,
                        },
                    )
                })?;
        } else {
            bytes.extend_from_slice(&frames);
        }
        let wait = self.config.timeout;
        let stream = self.connect().await.map_err(|err| (0, err))?;
        let io_error = |acked: u32, err: std::io::Error| {
            (
                acked as usize,
                OutputError::Unreachable {
                    output: NAME,
                    message: format!("{host}: {err}"),
                },
            )
        };
        match timeout(wait, async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        })
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(io_error(0, err)),
            Err(_) => {
                return Err((
                    0,
                    OutputError::Timeout {
                        output: NAME,
                        message: format!("{host}: writing a window took over {wait:?}"),
                    },
                ));
            }
        }
        // ACKs until the last sequence number; each one (keep-alives too) restarts the clock.
        let mut acked = 0u32;
        while acked < count {
            let mut frame = [0u8; 6];
            match timeout(wait, stream.read_exact(&mut frame)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(io_error(acked, err)),
                Err(_) => {
                    return Err((
                        acked as usize,
                        OutputError::Timeout {
                            output: NAME,
                            message: format!(
                                "{host}: no ACK for {wait:?} ({acked} of {count} acknowledged)"
                            ),
                        },
                    ));
                }
            }
            let seq = protocol::parse_ack(&frame).map_err(|message| {
                (
                    acked as usize,
                    OutputError::Protocol {
                        output: NAME,
                        message: format!("{host}: {message}"),
                    },
                )
            })?;
            if seq > count {
                return Err((
                    acked as usize,
                    OutputError::Protocol {
                        output: NAME,
                        message: format!("{host}: ACK {seq} for a window of {count}"),
                    },
                ));
            }
            acked = acked.max(seq);
        }
        Ok(())
    }

    /// The event as the Beats input expects it: its fields plus `@metadata`.
    fn payload(&self, event: &Event) -> Vec<u8> {
        let mut payload = Vec::with_capacity(256);
        payload.extend_from_slice(b"{\"@metadata\":");
        payload.extend_from_slice(&self.metadata);
        let body = serde_json::to_vec(event).expect("JSON serialises");
        if body.len() > 2 {
            payload.push(b',');
            payload.extend_from_slice(&body[1..]);
        } else {
            payload.push(b'}');
        }
        payload
    }
}

#[async_trait::async_trait]
impl Output for Logstash {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
        let payloads: Vec<Vec<u8>> = events.iter().map(|e| self.payload(e)).collect();
        for window in payloads.chunks(self.config.bulk_max_size) {
            let mut rest = window;
            // Two tries per host: a failed connection hands the unacknowledged rest to the next
            // host, and a connection kept from an earlier batch may fail once only because its
            // server restarted since.
            let mut tries = 0;
            loop {
                match self.send_window(rest).await {
                    Ok(()) => break,
                    Err((acked, err)) => {
                        self.connections[self.host] = None;
                        self.metrics.error(NAME, err.metric_label());
                        self.metrics.outcome(NAME, "acked", acked as u64);
                        rest = &rest[acked..];
                        tries += 1;
                        tracing::warn!(%err, acked, remaining = rest.len(), "logstash window failed");
                        self.host = (self.host + 1) % self.config.hosts.len();
                        if tries >= 2 * self.config.hosts.len() {
                            return Err(err);
                        }
                        self.metrics
                            .retry(NAME, err.metric_label(), rest.len() as u64);
                    }
                }
            }
            self.metrics.outcome(NAME, "acked", rest.len() as u64);
            if self.config.loadbalance {
                // The next window goes to the next host; this connection stays open for later.
                self.host = (self.host + 1) % self.config.hosts.len();
            }
        }
        Ok(())
    }
}
