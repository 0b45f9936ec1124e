//! Smoke test of the Kafka peer: a topic made through the admin API, a zstd-compressed record
//! produced with `acks=all` and read back by a consumer group from the beginning: the same
//! path skiff's Kafka output and its end-to-end tests take.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::timeout;

/// How long any one step may take before the broker counts as dead.
const STEP: Duration = Duration::from_secs(30);

#[tokio::test]
async fn produce_then_consume_from_the_beginning() {
    let brokers = skiff_tests::require_peer!(skiff_tests::env::KAFKA, "kafka");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let topic = format!("skiff-peer-smoke-{nanos}");
    let client = |extra: &[(&str, &str)]| {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &brokers)
            // A dead broker must fail the test, not retry for librdkafka's default minutes.
            .set("socket.timeout.ms", "10000")
            .set("message.timeout.ms", "20000");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config
    };

    let admin: AdminClient<DefaultClientContext> = client(&[]).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(STEP));
    let created = timeout(
        STEP,
        admin.create_topics(
            &[NewTopic::new(&topic, 3, TopicReplication::Fixed(1))],
            &options,
        ),
    )
    .await
    .expect("create_topics timed out")
    .expect("create_topics");
    assert_eq!(created, vec![Ok(topic.clone())]);

    let producer: FutureProducer = client(&[("acks", "all"), ("compression.type", "zstd")])
        .create()
        .expect("producer");
    let payload = r#"{"message":"hello from skiff","log":{"offset":0}}"#;
    let delivered = timeout(
        STEP,
        producer.send(FutureRecord::to(&topic).key("pod-1").payload(payload), STEP),
    )
    .await
    .expect("produce timed out")
    .map_err(|(err, _)| err)
    .expect("produce");

    let consumer: StreamConsumer = client(&[
        ("group.id", topic.as_str()),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
    ])
    .create()
    .expect("consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    let message = timeout(STEP, consumer.recv())
        .await
        .expect("no record consumed in time")
        .expect("consume")
        // Owned: a borrowed message still alive when its consumer is dropped keeps
        // librdkafka's broker thread waiting for it, and the drop never returns.
        .detach();
    assert_eq!(message.key(), Some(&b"pod-1"[..]));
    assert_eq!(message.payload(), Some(payload.as_bytes()));
    assert_eq!(
        (message.partition(), message.offset()),
        (delivered.partition, delivered.offset)
    );

    // Leave the group before its topic goes away.
    drop(consumer);
    let deleted = timeout(STEP, admin.delete_topics(&[&topic], &options))
        .await
        .expect("delete_topics timed out")
        .expect("delete_topics");
    assert_eq!(deleted, vec![Ok(topic)]);
}
