//! The I/O task against a scripted peer on a loopback socket: the protocol corners a real
//! broker shows rarely or never on demand.

use super::*;
use crate::channel::{Channel, Consumer};
use crate::frame::{FRAME_BODY, FRAME_HEADER, FRAME_METHOD, FieldTable, Properties};
use crate::{ConnectParams, Connection, Login};
use testkit::metrics::rss_kib;
use tokio::net::{TcpListener, TcpStream};

/// The broker's side of one connection, driven by the test.
struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    /// Accepts a client, logs it in with `channel_max` and `heartbeat`, and returns both
    /// ends.
    async fn start(channel_max: u16, heartbeat: u16) -> (Self, Connection) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let login = Login::Plain {
            user: "u".into(),
            password: "p".into(),
        };
        let params = ConnectParams::new("127.0.0.1", port, login)
            .heartbeat(heartbeat)
            .connection_name("scripted");
        let client = tokio::spawn(async move { Connection::open(&params).await });
        let (s, _) = listener.accept().await.unwrap();
        let mut peer = Self { s, buf: Vec::new() };
        let mut header = [0u8; 8];
        peer.s.read_exact(&mut header).await.unwrap();
        assert_eq!(&header, b"AMQP\x00\x00\x09\x01");
        peer.send(
            0,
            &Method::ConnectionStart {
                server_properties: FieldTable::new(),
                mechanisms: "PLAIN".into(),
                locales: "en_US".into(),
            },
        )
        .await;
        assert!(matches!(
            peer.method().await,
            (0, Method::ConnectionStartOk { .. })
        ));
        peer.send(
            0,
            &Method::ConnectionTune {
                channel_max,
                frame_max: 131_072,
                heartbeat,
            },
        )
        .await;
        assert!(matches!(
            peer.method().await,
            (0, Method::ConnectionTuneOk { .. })
        ));
        assert!(matches!(
            peer.method().await,
            (0, Method::ConnectionOpen { .. })
        ));
        peer.send(0, &Method::ConnectionOpenOk {}).await;
        (peer, client.await.unwrap().unwrap())
    }

    async fn send(&mut self, channel: u16, m: &Method) {
        let mut out = Vec::new();
        frame::write_method(&mut out, channel, m).unwrap();
        self.s.write_all(&out).await.unwrap();
    }

    /// The next frame the client sent: kind, channel, payload.
    async fn frame(&mut self) -> (u8, u16, Vec<u8>) {
        loop {
            if let Some((f, used)) = frame::parse_frame(&self.buf, 0).unwrap() {
                let out = (f.kind, f.channel, f.payload.to_vec());
                self.buf.drain(..used);
                return out;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk))
                .await
                .expect("the client sends something")
                .unwrap();
            assert!(n > 0, "the client hung up");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next method the client sent (content and heartbeat frames skipped).
    async fn method(&mut self) -> (u16, Method) {
        loop {
            let (kind, channel, payload) = self.frame().await;
            if kind == FRAME_METHOD {
                return (channel, Method::decode(&payload).unwrap());
            }
        }
    }

    /// Answers the client's `channel.open`; returns the channel number it chose.
    async fn open_channel(&mut self) -> u16 {
        let (id, m) = self.method().await;
        assert_eq!(m, Method::ChannelOpen {});
        self.send(id, &Method::ChannelOpenOk {}).await;
        id
    }
}

/// Opens a channel with the peer's help.
async fn channel(peer: &mut Peer, conn: &Connection) -> Channel {
    let conn = conn.clone();
    let opening = tokio::spawn(async move { conn.channel().await });
    peer.open_channel().await;
    opening.await.unwrap().unwrap()
}

/// A publish in its own task, once the peer saw its method frame.
async fn publish(
    peer: &mut Peer,
    ch: &Channel,
    mandatory: bool,
) -> tokio::task::JoinHandle<Confirm> {
    let ch = ch.clone();
    let task = tokio::spawn(async move {
        ch.publish("", "key", mandatory, &Properties::default(), b"body")
            .await
            .unwrap()
    });
    assert!(matches!(
        peer.method().await,
        (_, Method::BasicPublish { .. })
    ));
    task
}

#[tokio::test]
async fn confirms_settle_one_by_one_and_several_at_once() {
    let (mut peer, conn) = Peer::start(10, 0).await;
    let ch = channel(&mut peer, &conn).await;
    let selecting = tokio::spawn({
        let ch = ch.clone();
        async move { ch.confirm_select().await }
    });
    let (id, m) = peer.method().await;
    assert_eq!(m, Method::ConfirmSelect { no_wait: false });
    peer.send(id, &Method::ConfirmSelectOk {}).await;
    selecting.await.unwrap().unwrap();
    let (one, two, three) = (
        publish(&mut peer, &ch, false).await,
        publish(&mut peer, &ch, false).await,
        publish(&mut peer, &ch, false).await,
    );
    // One ack for the first two; the third waits.
    peer.send(
        id,
        &Method::BasicAck {
            delivery_tag: 2,
            multiple: true,
        },
    )
    .await;
    assert_eq!(one.await.unwrap(), Confirm::Ack);
    assert_eq!(two.await.unwrap(), Confirm::Ack);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!three.is_finished());
    peer.send(
        id,
        &Method::BasicNack {
            delivery_tag: 3,
            multiple: false,
            requeue: false,
        },
    )
    .await;
    assert_eq!(three.await.unwrap(), Confirm::Nack);
}

#[tokio::test]
async fn a_return_is_matched_to_its_mandatory_publish() {
    let (mut peer, conn) = Peer::start(10, 0).await;
    let ch = channel(&mut peer, &conn).await;
    let selecting = tokio::spawn({
        let ch = ch.clone();
        async move { ch.confirm_select().await }
    });
    let (id, _) = peer.method().await;
    peer.send(id, &Method::ConfirmSelectOk {}).await;
    selecting.await.unwrap().unwrap();
    let returned = publish(&mut peer, &ch, true).await;
    // basic.return, its content (the same routing key and body), then the ack.
    let mut out = Vec::new();
    let method = Method::BasicReturn {
        code: 312,
        text: "NO_ROUTE".into(),
        exchange: String::new(),
        routing_key: "key".into(),
    };
    frame::write_method(&mut out, id, &method).unwrap();
    frame::frame(&mut out, FRAME_HEADER, id, |b| {
        let mut w = frame::Writer::new(b);
        w.short(60);
        w.short(0);
        w.longlong(4);
        Properties::default().encode(&mut w)
    })
    .unwrap();
    frame::frame(&mut out, FRAME_BODY, id, |b| {
        b.extend_from_slice(b"body");
        Ok(())
    })
    .unwrap();
    peer.s.write_all(&out).await.unwrap();
    peer.send(
        id,
        &Method::BasicAck {
            delivery_tag: 1,
            multiple: false,
        },
    )
    .await;
    assert_eq!(
        returned.await.unwrap(),
        Confirm::Returned {
            code: 312,
            text: "NO_ROUTE".into()
        }
    );
}

#[tokio::test]
async fn channel_numbers_go_round_and_run_out_cleanly() {
    let (mut peer, conn) = Peer::start(3, 0).await;
    let a = channel(&mut peer, &conn).await;
    let b = channel(&mut peer, &conn).await;
    assert_eq!((a.id(), b.id()), (1, 2));
    // A number given back is not reused at once: the broker may still be closing it.
    let closing = tokio::spawn({
        let a = a.clone();
        async move { a.close().await }
    });
    let (id, m) = peer.method().await;
    assert!(matches!(m, Method::ChannelClose { .. }));
    peer.send(id, &Method::ChannelCloseOk {}).await;
    closing.await.unwrap();
    let c = channel(&mut peer, &conn).await;
    assert_eq!(c.id(), 3);
    let d = channel(&mut peer, &conn).await;
    assert_eq!(d.id(), 1, "round the end, the first free number");
    let err = conn.channel().await.unwrap_err();
    assert!(
        matches!(&err, Error::Protocol(t) if t.contains("all 3 channel numbers")),
        "{err}"
    );
    assert!(a.error().is_some(), "a closed channel says so");
}

#[tokio::test]
async fn a_channel_whose_opener_gave_up_is_closed_when_it_opens() {
    let (mut peer, conn) = Peer::start(2, 0).await;
    let opening = tokio::spawn({
        let conn = conn.clone();
        async move { conn.channel().await }
    });
    let (id, m) = peer.method().await;
    assert_eq!(m, Method::ChannelOpen {});
    opening.abort();
    let _ = opening.await;
    peer.send(id, &Method::ChannelOpenOk {}).await;
    let (closed, m) = peer.method().await;
    assert_eq!(closed, id);
    assert!(matches!(m, Method::ChannelClose { code: 200, .. }), "{m:?}");
    peer.send(id, &Method::ChannelCloseOk {}).await;
    // Its number is free again: with channel_max 2 both numbers can be opened and used.
    let a = channel(&mut peer, &conn).await;
    let b = channel(&mut peer, &conn).await;
    assert_eq!((a.id(), b.id()), (2, 1));
}

#[tokio::test]
async fn a_channel_opened_but_never_collected_is_closed() {
    let (mut peer, conn) = Peer::start(2, 0).await;
    let mut opening = Box::pin(conn.channel());
    // One poll sends `channel.open` and waits for the answer.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(opening.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    let (id, m) = peer.method().await;
    assert_eq!(m, Method::ChannelOpen {});
    peer.send(id, &Method::ChannelOpenOk {}).await;
    // The answer reaches the future, which is dropped without reading it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(opening);
    let (closed, m) = peer.method().await;
    assert_eq!(closed, id);
    assert!(matches!(m, Method::ChannelClose { code: 200, .. }), "{m:?}");
}

#[tokio::test]
async fn a_dropped_consumer_is_cancelled_and_a_late_delivery_requeued() {
    let (mut peer, conn) = Peer::start(10, 0).await;
    let ch = channel(&mut peer, &conn).await;
    let consuming: tokio::task::JoinHandle<Consumer> = tokio::spawn({
        let ch = ch.clone();
        async move { ch.consume("q", "", false, FieldTable::new()).await.unwrap() }
    });
    let (id, m) = peer.method().await;
    assert!(matches!(m, Method::BasicConsume { .. }));
    peer.send(
        id,
        &Method::BasicConsumeOk {
            consumer_tag: "c1".into(),
        },
    )
    .await;
    let consumer = consuming.await.unwrap();
    assert_eq!(consumer.tag(), "c1");
    drop(consumer);
    // Cancelled once: by the drop, or by the I/O task's tick if that saw the receiver gone
    // first (the next method must then be the reject, not a second cancel).
    let (cancelled, m) = peer.method().await;
    assert_eq!(cancelled, id);
    assert!(
        matches!(&m, Method::BasicCancel { consumer_tag, .. } if consumer_tag == "c1"),
        "{m:?}"
    );
    // A delivery the broker had on its way goes back to the queue.
    let mut out = Vec::new();
    let deliver = Method::BasicDeliver {
        consumer_tag: "c1".into(),
        delivery_tag: 7,
        redelivered: false,
        exchange: String::new(),
        routing_key: "q".into(),
    };
    frame::write_method(&mut out, id, &deliver).unwrap();
    frame::frame(&mut out, FRAME_HEADER, id, |b| {
        let mut w = frame::Writer::new(b);
        w.short(60);
        w.short(0);
        w.longlong(0);
        Properties::default().encode(&mut w)
    })
    .unwrap();
    peer.s.write_all(&out).await.unwrap();
    assert_eq!(
        peer.method().await,
        (
            id,
            Method::BasicReject {
                delivery_tag: 7,
                requeue: true
            }
        )
    );
}

#[tokio::test]
async fn silence_past_two_heartbeats_ends_the_connection() {
    let (_peer, conn) = Peer::start(10, 1).await;
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("the connection ends");
    let took = started.elapsed();
    println!(
        "a silent peer detected after {:.2} s (heartbeat 1 s)",
        took.as_secs_f64()
    );
    assert!(matches!(err, Error::HeartbeatTimeout), "{err:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn an_unknown_frame_type_closes_the_connection_with_505() {
    let (mut peer, conn) = Peer::start(10, 0).await;
    // Frame type 9 does not exist.
    peer.s
        .write_all(&[9, 0, 0, 0, 0, 0, 0, 0xCE])
        .await
        .unwrap();
    assert_eq!(
        peer.method().await,
        (
            0,
            Method::ConnectionClose {
                code: 505,
                text: "UNEXPECTED_FRAME".into(),
                class_id: 0,
                method_id: 0
            }
        )
    );
    let err = conn.closed().await;
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
}

/// A delivery on channel 1 whose content header announces `body_size` bytes, followed by
/// `sent` bytes of body.
fn delivery(body_size: u64, sent: usize) -> Vec<u8> {
    let mut out = Vec::new();
    frame::write_method(
        &mut out,
        1,
        &Method::BasicDeliver {
            consumer_tag: "c".into(),
            delivery_tag: 1,
            redelivered: false,
            exchange: String::new(),
            routing_key: "q".into(),
        },
    )
    .unwrap();
    // class basic, weight 0, the announced size, no properties
    let mut header = vec![0, 60, 0, 0];
    header.extend_from_slice(&body_size.to_be_bytes());
    header.extend_from_slice(&[0, 0]);
    frame::frame(&mut out, FRAME_HEADER, 1, |b| {
        b.extend_from_slice(&header);
        Ok(())
    })
    .unwrap();
    if sent > 0 {
        frame::frame(&mut out, FRAME_BODY, 1, |b| {
            b.resize(b.len() + sent, b'x');
            Ok(())
        })
        .unwrap();
    }
    out
}

#[tokio::test]
async fn a_body_announced_above_the_limit_is_refused_before_allocating_it() {
    let before = rss_kib();
    let (mut peer, conn) = Peer::start(10, 0).await;
    let _ch = channel(&mut peer, &conn).await;
    peer.s.write_all(&delivery(MAX_BODY + 1, 0)).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), conn.closed())
        .await
        .expect("the connection is closed at once");
    assert!(
        matches!(&err, Error::Protocol(t) if t.contains("exceeds")),
        "{err:?}"
    );
    let grew = rss_kib().saturating_sub(before);
    println!("refused a {} byte body; RSS grew {grew} KiB", MAX_BODY + 1);
    assert!(grew < 8 * 1024, "RSS grew {grew} KiB");
}

#[tokio::test]
async fn a_large_announced_body_is_not_reserved_up_front() {
    let before = rss_kib();
    let (mut peer, conn) = Peer::start(10, 0).await;
    let _ch = channel(&mut peer, &conn).await;
    // Within the limit, but only 10 bytes ever come: nothing near 500 MiB is reserved.
    peer.s.write_all(&delivery(500 << 20, 10)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(conn.error().is_none());
    let grew = rss_kib().saturating_sub(before);
    println!("a 500 MiB body announced, 10 bytes sent: RSS grew {grew} KiB");
    assert!(grew < 8 * 1024, "RSS grew {grew} KiB");
}
