//! `output.kafka`: events as JSON records, one topic per event from a template, acknowledged
//! by librdkafka's delivery reports.
//!
//! A batch counts as delivered once every record's delivery report is in: acknowledged by the
//! broker (with `required_acks`), or refused for good and written to the dead-letter file. Any
//! other failure fails the whole batch, which the pipeline sends again; with the idempotent
//! producer librdkafka's own retries add no duplicates, the pipeline's may.

pub mod config;

pub use config::KafkaConfig;

use super::dead_letter::{Refusals, Refused};
use super::metrics::OutputMetrics;
use super::template::{Template, lookup};
use super::{Output, OutputError};
use crate::process::{Event, Text, Value, field};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

const NAME: &str = "kafka";

/// The pods remembered as warned about for their topic: a node runs a few hundred pods, and
/// churn must not grow the set without bound.
const WARNED_PODS: usize = 4096;

/// The last error librdkafka reported, shared with its client context.
type LastError = Arc<Mutex<Option<(RDKafkaErrorCode, String)>>>;

/// The Kafka output.
pub struct Kafka {
    config: KafkaConfig,
    producer: FutureProducer<Context>,
    last_error: LastError,
    topic: Template,
    allowed_topics: Vec<glob::Pattern>,
    /// The pods (`kubernetes.pod.uid`) warned about for a refused topic: each once, as every
    /// event of theirs is refused. Forgotten all at once past [`WARNED_PODS`].
    warned: Mutex<HashSet<Text>>,
    key: Option<Template>,
    refusals: Refusals,
    metrics: OutputMetrics,
    payload: Vec<u8>,
}

/// Why one record was not acknowledged.
enum Failure {
    /// The broker or librdkafka refuses this record for good: dead-letter it. The reason is
    /// a [`Refused::reason`].
    Permanent {
        reason: &'static str,
        detail: String,
    },
    /// Anything else: the batch is sent again.
    Transient(OutputError),
}

impl Kafka {
    /// Builds the producer. Nothing connects yet: librdkafka connects in the background, and an
    /// unreachable broker shows as a failed `send`.
    pub fn build(config: &KafkaConfig, metrics: OutputMetrics) -> Result<Self, OutputError> {
        let invalid = |message: String| OutputError::Config {
            output: NAME,
            message,
        };
        config.validate().map_err(invalid)?;
        let topic = Template::parse(&config.topic).map_err(|err| invalid(err.to_string()))?;
        let allowed_topics = config
            .allowed_topics
            .iter()
            .map(|glob| {
                glob::Pattern::new(glob)
                    .map_err(|err| invalid(format!("allowed_topics: {glob:?}: {err}")))
            })
            .collect::<Result<_, _>>()?;
        let key = config
            .key
            .as_deref()
            .map(Template::parse)
            .transpose()
            .map_err(|err| invalid(err.to_string()))?;
        let refusals = Refusals::open(NAME, config.dead_letter.as_ref(), metrics.clone())?;
        let last_error = Arc::new(Mutex::new(None));
        let producer = create_producer(config, &last_error)?;
        Ok(Self {
            config: config.clone(),
            producer,
            last_error,
            topic,
            allowed_topics,
            warned: Mutex::new(HashSet::new()),
            key,
            refusals,
            metrics,
            payload: Vec::new(),
        })
    }

    /// The event's topic: the override field when set (and allowed), else the template,
    /// else the fallback.
    fn topic_of(&self, event: &Event, out: &mut String) {
        out.clear();
        if let Some(Value::String(topic)) = lookup(event, &self.config.topic_field)
            && !topic.is_empty()
        {
            if self.allowed_topics.iter().any(|glob| glob.matches(topic)) {
                out.push_str(topic);
            } else {
                self.refuse_topic(event, topic);
                out.push_str(&self.config.fallback_topic);
            }
            return;
        }
        if let Err(missing) = self.topic.render(event, out) {
            tracing::debug!(%missing, topic = %self.config.fallback_topic, "topic template: fallback");
            self.metrics.fallback(NAME, "topic");
            out.clear();
            out.push_str(&self.config.fallback_topic);
        }
    }

    /// Counts an event whose topic field names a topic that is not allowed, and warns once
    /// for its pod.
    fn refuse_topic(&self, event: &Event, topic: &str) {
        self.metrics.refused_topic(NAME);
        let pod = field::get_str(event, "kubernetes.pod.uid").unwrap_or_default();
        let mut warned = self.warned.lock().expect("not poisoned");
        if warned.len() >= WARNED_PODS {
            warned.clear();
        }
        if warned.insert(pod.into()) {
            tracing::warn!(
                topic,
                namespace = field::get_str(event, "kubernetes.namespace").unwrap_or_default(),
                pod = field::get_str(event, "kubernetes.pod.name").unwrap_or_default(),
                fallback = %self.config.fallback_topic,
                "kafka: topic not in allowed_topics; using the fallback topic"
            );
        }
    }

    /// The event's key, or `None` when there is no key template or the event lacks its fields.
    fn key_of(&self, event: &Event, out: &mut String) -> bool {
        out.clear();
        let Some(key) = &self.key else {
            return false;
        };
        if key.render(event, out).is_err() {
            self.metrics.fallback(NAME, "key");
            return false;
        }
        true
    }

    /// Classifies a failed delivery, using the last error librdkafka reported to say why.
    fn failure(&self, err: &KafkaError) -> Failure {
        let code = err.rdkafka_error_code();
        if let Some(reason) = code.and_then(permanent_reason) {
            return Failure::Permanent {
                reason,
                detail: err.to_string(),
            };
        }
        if code == Some(RDKafkaErrorCode::QueueFull) {
            return Failure::Transient(OutputError::Overloaded {
                output: NAME,
                message: err.to_string(),
            });
        }
        let last = self.last_error.lock().expect("not poisoned").clone();
        let message = match &last {
            Some((_, reason)) => format!("{err}; last client error: {reason}"),
            None => err.to_string(),
        };
        Failure::Transient(match last.map(|(code, _)| code) {
            Some(RDKafkaErrorCode::SSL) => OutputError::Tls {
                output: NAME,
                message,
            },
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                OutputError::Auth {
                    output: NAME,
                    message,
                }
            }
            Some(
                RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve,
            ) => OutputError::Unreachable {
                output: NAME,
                message,
            },
            _ if code == Some(RDKafkaErrorCode::MessageTimedOut) => OutputError::Timeout {
                output: NAME,
                message,
            },
            _ => OutputError::Rejected {
                output: NAME,
                message,
            },
        })
    }

    /// Waits for one delivery report and records its outcome.
    async fn settle(
        &self,
        index: usize,
        delivery: DeliveryFuture,
        refused: &mut Vec<Refused>,
        first_error: &mut Option<OutputError>,
    ) {
        let failure = match delivery.await {
            Ok(Ok(_)) => return,
            Ok(Err((err, _))) => self.failure(&err),
            Err(_canceled) => Failure::Transient(OutputError::Rejected {
                output: NAME,
                message: "the producer was closed before the delivery report".into(),
            }),
        };
        match failure {
            Failure::Permanent { reason, detail } => refused.push(Refused {
                index,
                reason,
                detail,
            }),
            Failure::Transient(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
}

#[async_trait::async_trait]
impl Output for Kafka {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn send(&mut self, events: &[Event]) -> Result<(), OutputError> {
        // An idempotent producer that hit a fatal error (a sequence gap it cannot repair)
        // refuses every record from then on: start a new one.
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(?code, %reason, "kafka producer hit a fatal error; recreating it");
            self.producer = create_producer(&self.config, &self.last_error)?;
        }
        let mut pending: VecDeque<(usize, DeliveryFuture)> = VecDeque::with_capacity(events.len());
        let mut refused: Vec<Refused> = Vec::new();
        let mut first_error = None;
        let (mut topic, mut key) = (String::new(), String::new());
        let mut payload = std::mem::take(&mut self.payload);
        for (index, event) in events.iter().enumerate() {
            payload.clear();
            serde_json::to_writer(&mut payload, event).expect("a JSON map serialises");
            if payload.len() > self.config.max_message_bytes as usize {
                refused.push(Refused {
                    index,
                    reason: "oversized",
                    detail: format!(
                        "oversized: the event is {} bytes, max_message_bytes is {}",
                        payload.len(),
                        self.config.max_message_bytes
                    ),
                });
                continue;
            }
            self.topic_of(event, &mut topic);
            let keyed = self.key_of(event, &mut key);
            loop {
                let mut record = FutureRecord::to(&topic).payload(&payload);
                if keyed {
                    record = record.key(&key);
                }
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push_back((index, delivery));
                        break;
                    }
                    Err((err, _)) => match self.failure(&err) {
                        // librdkafka's queue is full: wait for the oldest report, then retry.
                        Failure::Transient(OutputError::Overloaded { .. })
                            if !pending.is_empty() =>
                        {
                            let (i, delivery) = pending.pop_front().expect("not empty");
                            self.settle(i, delivery, &mut refused, &mut first_error)
                                .await;
                        }
                        Failure::Permanent { reason, detail } => {
                            refused.push(Refused {
                                index,
                                reason,
                                detail,
                            });
                            break;
                        }
                        Failure::Transient(err) => {
                            first_error.get_or_insert(err);
                            break;
                        }
                    },
                }
            }
            if first_error.is_some() {
                break;
            }
        }
        self.payload = payload;
        // Every report is awaited even after a failure: the batch is retried as a whole, and
        // records still in flight would otherwise race with their own retries.
        while let Some((i, delivery)) = pending.pop_front() {
            self.settle(i, delivery, &mut refused, &mut first_error)
                .await;
        }
        if let Some(err) = first_error {
            self.metrics.error(NAME, err.metric_label());
            return Err(err);
        }
        // Delivered: an error remembered from an earlier outage no longer explains anything.
        *self.last_error.lock().expect("not poisoned") = None;
        self.refusals.keep(events, &mut refused)?;
        self.metrics
            .outcome(NAME, "acked", (events.len() - refused.len()) as u64);
        Ok(())
    }
}

/// The [`Refused::reason`] of an error that no retry can cure, or `None` for the others.
fn permanent_reason(code: RDKafkaErrorCode) -> Option<&'static str> {
    Some(match code {
        RDKafkaErrorCode::MessageSizeTooLarge => "message_too_large",
        RDKafkaErrorCode::InvalidTopic => "invalid_topic",
        RDKafkaErrorCode::InvalidRecord => "invalid_record",
        RDKafkaErrorCode::TopicAuthorizationFailed => "topic_authorization_failed",
        _ => return None,
    })
}

fn create_producer(
    config: &KafkaConfig,
    last_error: &LastError,
) -> Result<FutureProducer<Context>, OutputError> {
    let mut client = config.client_config();
    client.set_log_level(RDKafkaLogLevel::Warning);
    client
        .create_with_context(Context {
            last_error: Arc::clone(last_error),
        })
        .map_err(|err| OutputError::Config {
            output: NAME,
            message: err.to_string(),
        })
}

/// Routes librdkafka's logs to `tracing` and remembers its last error, which explains a
/// delivery timeout (connection refused, TLS handshake, SASL).
struct Context {
    last_error: LastError,
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", fac, "{message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, reason, "kafka client error");
        if let Some(code) = error.rdkafka_error_code() {
            *self.last_error.lock().expect("not poisoned") = Some((code, reason.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topic(output: &Kafka, event: serde_json::Value) -> String {
        let mut topic = String::new();
        let event: Event = event.as_object().unwrap().clone().into();
        output.topic_of(&event, &mut topic);
        topic
    }

    fn annotated(pod: &str, topic: &str) -> serde_json::Value {
        json!({
            "service": { "name": "checkout" },
            "kubernetes": {
                "namespace": "shop",
                "pod": { "name": pod, "uid": pod },
                "annotations": { "skiff_dev/log-topic": topic },
            },
        })
    }

    /// Regression: `skiff.dev/log-topic` was honoured as written, so a tenant could write
    /// into any topic the agent may write to.
    #[test]
    fn annotated_topics_outside_the_allowed_ones_fall_back() {
        // Nothing listens there: building connects to nothing yet.
        let config = KafkaConfig::new(vec!["127.0.0.1:9".into()]);
        assert_eq!(config.allowed_topics, ["logs-*"]);
        let metrics = OutputMetrics::default();
        let output = Kafka::build(&config, metrics.clone()).unwrap();
        assert_eq!(
            topic(&output, annotated("a", "logs-billing")),
            "logs-billing"
        );
        for (pod, refused) in [
            ("a", "payments-audit"),
            ("a", "__consumer_offsets"),
            ("b", "x"),
        ] {
            assert_eq!(topic(&output, annotated(pod, refused)), "logs-default");
        }
        assert_eq!(metrics.refused_topics_of(NAME), 3);
        assert_eq!(output.warned.lock().unwrap().len(), 2, "once per pod");
        assert_eq!(
            topic(&output, json!({ "service": { "name": "x" } })),
            "logs-x"
        );

        let mut config = config.clone();
        config.allowed_topics = vec!["payments-*".into(), "audit".into()];
        let output = Kafka::build(&config, metrics.clone()).unwrap();
        assert_eq!(
            topic(&output, annotated("a", "payments-audit")),
            "payments-audit"
        );
        assert_eq!(topic(&output, annotated("a", "audit")), "audit");
        assert_eq!(
            topic(&output, annotated("a", "logs-billing")),
            "logs-default"
        );
        config.allowed_topics = vec!["[".into()];
        assert!(Kafka::build(&config, metrics).is_err(), "an invalid glob");
    }
}
