//! The inbound half of the I/O task: parsing frames out of the read buffer and acting on them
//! (RPC replies, confirms, returns, deliveries, closes).

use super::state::{Incoming, IncomingKind};
use super::{BUFFER_KEEP, IoTask, MAX_BODY, Step};
use crate::channel::{ConsumerEvent, Delivery, return_key};
use crate::error::Error;
use crate::frame::{
    self, ContentHeader, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, Method, RawFrame,
};
use tokio::time::Instant;

impl IoTask {
    pub(super) fn handle_input(&mut self) -> Step {
        let mut used_total = 0;
        let mut step = Step::Continue;
        loop {
            let parsed = match frame::parse_frame(&self.rbuf[used_total..], self.frame_max) {
                Ok(Some((f, used))) => Some((f.kind, f.channel, used)),
                Ok(None) => None,
                Err(e) => {
                    step = self.protocol_error(Error::from(e));
                    break;
                }
            };
            let Some((kind, channel, used)) = parsed else {
                break;
            };
            let start = used_total;
            used_total += used;
            // Re-borrow the frame to hand its payload to the handler.
            let buf = std::mem::take(&mut self.rbuf);
            let frame = RawFrame {
                kind,
                channel,
                payload: &buf[start + 7..start + used - 1],
            };
            step = self.handle_frame(&frame);
            self.rbuf = buf;
            if matches!(step, Step::Exit(_)) {
                break;
            }
        }
        if self.rbuf.len() > BUFFER_KEEP {
            self.busy_at = Instant::now();
        }
        self.rbuf.drain(..used_total);
        step
    }

    fn protocol_error(&mut self, e: Error) -> Step {
        tracing::error!(error = %e, "closing the AMQP connection after a protocol error");
        self.write_method(
            0,
            &Method::ConnectionClose {
                code: 505,
                text: "UNEXPECTED_FRAME".into(),
                class_id: 0,
                method_id: 0,
            },
        );
        Step::Exit(e)
    }

    fn handle_frame(&mut self, f: &RawFrame<'_>) -> Step {
        match f.kind {
            FRAME_HEARTBEAT => Step::Continue,
            FRAME_METHOD => match Method::decode(f.payload) {
                Ok(m) if f.channel == 0 => self.on_connection_method(m),
                Ok(m) => self.on_channel_method(f.channel, m),
                Err(e) => self.protocol_error(e.into()),
            },
            FRAME_HEADER => match ContentHeader::decode(f.payload) {
                Ok(h) => self.on_header(f.channel, h),
                Err(e) => self.protocol_error(e.into()),
            },
            FRAME_BODY => self.on_body(f.channel, f.payload),
            other => self.protocol_error(Error::Protocol(format!("unexpected frame type {other}"))),
        }
    }

    fn on_connection_method(&mut self, m: Method) -> Step {
        match m {
            Method::ConnectionClose { code, text, .. } => {
                self.write_method(0, &Method::ConnectionCloseOk {});
                if code == 320 {
                    tracing::warn!(code, text, "the broker closed the connection");
                }
                Step::Exit(Error::ConnectionClosed { code, text })
            }
            Method::ConnectionCloseOk {} if self.closing.is_some() => Step::Exit(Error::Closed),
            Method::ConnectionBlocked { reason } => {
                tracing::warn!(reason, "the broker blocked publishing on this connection");
                self.shared.blocked.send_replace(Some(reason));
                Step::Continue
            }
            Method::ConnectionUnblocked {} => {
                tracing::info!("the broker unblocked publishing on this connection");
                self.shared.blocked.send_replace(None);
                Step::Continue
            }
            other => self.protocol_error(Error::Protocol(format!(
                "unexpected method {:?} on channel 0",
                other.id()
            ))),
        }
    }

    fn on_channel_method(&mut self, channel: u16, m: Method) -> Step {
        let Some(ch) = self.channels.get_mut(&channel) else {
            // A late frame for a channel we already forgot (after our close): ignore it.
            return Step::Continue;
        };
        if ch.incoming.is_some() {
            return self
                .protocol_error(Error::Protocol("a method arrived inside a message".into()));
        }
        match m {
            Method::ChannelClose {
                code,
                text,
                class_id,
                method_id,
            } => {
                let e = Error::ChannelClosed {
                    code,
                    text,
                    class_id,
                    method_id,
                };
                tracing::debug!(channel, error = %e, "the broker closed a channel");
                if let Some(mut ch) = self.channels.remove(&channel) {
                    ch.fail(&e);
                }
                self.write_method(channel, &Method::ChannelCloseOk {});
            }
            Method::ChannelCloseOk {} => {
                if let Some(mut ch) = self.channels.remove(&channel) {
                    ch.fail(&Error::Closed);
                }
            }
            Method::ChannelFlow { active } => {
                self.write_method(channel, &Method::ChannelFlowOk { active })
            }
            Method::BasicDeliver {
                consumer_tag,
                delivery_tag,
                ..
            } => {
                ch.incoming = Some(Incoming {
                    kind: IncomingKind::Deliver {
                        consumer_tag,
                        delivery_tag,
                    },
                    header: None,
                    body: Vec::new(),
                });
            }
            Method::BasicReturn {
                code,
                text,
                routing_key,
                ..
            } => {
                ch.incoming = Some(Incoming {
                    kind: IncomingKind::Return {
                        code,
                        text,
                        routing_key,
                    },
                    header: None,
                    body: Vec::new(),
                });
            }
            Method::BasicAck {
                delivery_tag,
                multiple,
            } => ch.settle(delivery_tag, multiple, true),
            Method::BasicNack {
                delivery_tag,
                multiple,
                ..
            } => ch.settle(delivery_tag, multiple, false),
            Method::BasicCancel {
                consumer_tag,
                no_wait,
            } => {
                if let Some(tx) = ch.consumers.remove(&consumer_tag) {
                    let _ = tx.send(ConsumerEvent::Cancelled(consumer_tag.clone()));
                }
                if !no_wait {
                    self.write_method(channel, &Method::BasicCancelOk { consumer_tag });
                }
            }
            reply => {
                let Some(mut pending) = ch.rpcs.pop_front() else {
                    return self.protocol_error(Error::Protocol(format!(
                        "unexpected method {:?} on channel {channel}",
                        reply.id()
                    )));
                };
                if reply.id() != pending.expect {
                    return self.protocol_error(Error::Protocol(format!(
                        "expected method {:?}, got {:?} on channel {channel}",
                        pending.expect,
                        reply.id()
                    )));
                }
                match &reply {
                    Method::BasicConsumeOk { consumer_tag } => {
                        if let Some(tx) = pending.consumer.take() {
                            ch.consumers.insert(consumer_tag.clone(), tx);
                        }
                    }
                    Method::BasicCancelOk { consumer_tag } => {
                        ch.consumers.remove(consumer_tag);
                    }
                    _ => {}
                }
                if let Some(r) = pending.reply.take() {
                    let _ = r.send(Ok(reply));
                }
                if let Some(open) = pending.open.take()
                    && open.send(Ok((channel, ch.shared.clone()))).is_err()
                    && self.closing.is_none()
                {
                    // Whoever asked for the channel stopped waiting (its future was dropped):
                    // nobody can ever use or close it, so close it now rather than hold its
                    // number until the connection ends.
                    ch.closing = true;
                    self.write_channel_close(channel);
                }
            }
        }
        Step::Continue
    }

    fn on_header(&mut self, channel: u16, header: ContentHeader) -> Step {
        let ok = self
            .channels
            .get(&channel)
            .and_then(|c| c.incoming.as_ref())
            .is_some_and(|i| i.header.is_none());
        if !ok {
            return self.protocol_error(Error::Protocol("unexpected content header".into()));
        }
        if header.body_size > MAX_BODY {
            return self.protocol_error(Error::Protocol(format!(
                "message body of {} bytes exceeds the {MAX_BODY}-byte limit",
                header.body_size
            )));
        }
        let size = header.body_size;
        if let Some(incoming) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.incoming.as_mut())
        {
            // Reserve at most a few frames' worth up front: the size is the peer's claim.
            incoming
                .body
                .reserve((size as usize).min(4 * self.frame_max.max(4096)));
            incoming.header = Some(header);
        }
        if size == 0 {
            self.complete(channel);
        }
        Step::Continue
    }

    fn on_body(&mut self, channel: u16, payload: &[u8]) -> Step {
        let Some(incoming) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.incoming.as_mut())
        else {
            return self.protocol_error(Error::Protocol("unexpected content body".into()));
        };
        let Some(header) = &incoming.header else {
            return self.protocol_error(Error::Protocol("content body before its header".into()));
        };
        let size = header.body_size;
        incoming.body.extend_from_slice(payload);
        let have = incoming.body.len() as u64;
        if have > size {
            return self
                .protocol_error(Error::Protocol("content body longer than announced".into()));
        }
        if have == size {
            self.complete(channel);
        }
        Step::Continue
    }

    fn complete(&mut self, channel: u16) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        let Some(Incoming {
            kind,
            header: Some(header),
            body,
        }) = ch.incoming.take()
        else {
            return;
        };
        match kind {
            IncomingKind::Deliver {
                consumer_tag,
                delivery_tag,
            } => {
                let delivery = Delivery {
                    delivery_tag,
                    properties: header.properties,
                    body,
                };
                let refused = match ch.consumers.get(&consumer_tag) {
                    Some(tx) => tx
                        .send(ConsumerEvent::Delivery(consumer_tag.clone(), delivery))
                        .is_err(),
                    // Cancelled by us, and the broker had it on its way: give it back.
                    None => true,
                };
                if refused {
                    self.write_method(
                        channel,
                        &Method::BasicReject {
                            delivery_tag,
                            requeue: true,
                        },
                    );
                    self.cancel_abandoned();
                }
            }
            IncomingKind::Return {
                code,
                text,
                routing_key,
            } => {
                let key = return_key(&routing_key, &body);
                if let Some(c) = ch
                    .confirms
                    .iter_mut()
                    .find(|c| c.key == key && c.returned.is_none())
                {
                    c.returned = Some((code, text));
                } else {
                    tracing::debug!(
                        routing_key,
                        code,
                        "a returned message matched no pending publish"
                    );
                }
            }
        }
    }
}
