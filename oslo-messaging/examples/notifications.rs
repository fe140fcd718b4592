//! A notifier and a listener with a filter, in one process.
//!
//! `cargo run --example notifications [URL]`.

use std::time::Duration;

use oslo_messaging::notify::{
    Notification, NotificationEndpoint, NotificationFilter, NotificationListener, Notifier,
    NotifyDriver, Priority,
};
use oslo_messaging::{Context, Target, Transport};
use serde_json::json;

#[tokio::main]
async fn main() -> oslo_messaging::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "memory://".to_owned());
    let transport = Transport::from_url(&url)?;
    let topic = format!("example_notifications_{}", std::process::id());

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let endpoint = NotificationEndpoint::builder()
        .filter(
            NotificationFilter::builder()
                .event_type(r"compute\.instance\.")
                .build()?,
        )
        .on(Priority::Info, move |n: Notification| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(format!(
                    "{} {}",
                    n.event_type.unwrap_or_default(),
                    n.payload
                ));
            }
        })
        .build()
        .unwrap();
    let listener = NotificationListener::builder(&transport, vec![Target::new(&topic)])
        .endpoint(endpoint)
        .build()?;
    listener.start().await?;

    let notifier = Notifier::builder(&transport)
        .driver(NotifyDriver::MessagingV2)
        .publisher_id("compute.example-host")
        .topics([topic.clone()])
        .build()?;
    let ctx = Context::new().with("request_id", "req-42");
    notifier
        .info(&ctx, "volume.attach", &json!({"volume": "v-1"}))
        .await?; // filtered out
    notifier
        .info(
            &ctx,
            "compute.instance.create.end",
            &json!({"instance": "i-1"}),
        )
        .await?;

    let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .ok()
        .flatten();
    println!("received: {}", line.unwrap_or_else(|| "nothing".into()));

    listener.stop().await;
    listener.wait().await;
    transport.cleanup().await;
    Ok(())
}
