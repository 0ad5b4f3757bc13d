//! The Kafka listener: accepts TCP connections and runs one loop per connection that reads
//! size-prefixed frames, decodes request headers and bodies, dispatches to the handlers and
//! writes responses in order (one request at a time per connection, as Kafka does).
//!
//! Hostile input: a frame length that is negative or above `socket.request.max.bytes` closes the
//! connection before anything is allocated; an undecodable header or body, an unknown API key,
//! or an unsupported version of an API whose response cannot carry an error also closes that
//! connection (logged). ApiVersions at an unsupported version is answered at v0 with
//! UNSUPPORTED_VERSION and our version list (KIP-511). Other connections are never affected.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::transport::Listener;

use super::handlers;
use super::Broker;

/// Accepts connections forever (a TCP listener in production, a simulated one under
/// `harness sim`).
pub async fn serve<L: Listener>(broker: Arc<Broker>, mut listener: L) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                broker.metrics.connection_opened();
                let b = broker.clone();
                tokio::spawn(async move {
                    if let Err(reason) = connection(b, stream).await {
                        tracing::debug!(%peer, %reason, "connection closed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a connection ended.
type Reason = String;

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    broker: Arc<Broker>,
    mut stream: S,
) -> Result<(), Reason> {
    let max = broker.config.socket_request_max_bytes;
    loop {
        let mut len_buf = [0u8; 4];
        match stream.read_exact(&mut len_buf).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        }
        let len = i32::from_be_bytes(len_buf);
        if len < 4 || len as usize > max {
            broker.metrics.bad_frame();
            return Err(format!(
                "frame length {len} outside [4, socket.request.max.bytes={max}]"
            ));
        }
        let mut frame = vec![0u8; len as usize];
        stream
            .read_exact(&mut frame)
            .await
            .map_err(|e| format!("truncated frame: {e}"))?;
        broker.metrics.add_bytes_in(4 + frame.len());
        let started = broker.clock.instant();
        let (api_name, reply) = match decode_and_handle(&broker, Bytes::from(frame)).await {
            Ok(x) => x,
            Err(reason) => {
                broker.metrics.bad_frame();
                return Err(reason);
            }
        };
        // Counted before the response goes out: a client that has its answer sees the request
        // in /metrics (the latency is the handling time, the write excluded).
        let elapsed = broker.clock.instant().duration_since(started);
        broker.metrics.record_request(api_name, elapsed, false);
        if let Some(out) = reply {
            broker.metrics.add_bytes_out(out.len());
            stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
        }
    }
}

/// The API's name as Kafka spells it (`Produce`, `InitProducerId`, ...), for per-API metrics.
fn api_name(key: ApiKey) -> &'static str {
    static NAMES: std::sync::OnceLock<std::collections::HashMap<ApiKey, &'static str>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            // One small string per API key, made once for the life of the process.
            ApiKey::iter()
                .map(|k| (k, &*Box::leak(format!("{k:?}").into_boxed_str())))
                .collect()
        })
        .get(&key)
        .copied()
        .unwrap_or("Other")
}

/// Decodes one frame, handles it and encodes the reply frame (None: nothing to send).
async fn decode_and_handle(
    broker: &Arc<Broker>,
    mut frame: Bytes,
) -> Result<(&'static str, Option<BytesMut>), Reason> {
    if frame.len() < 8 {
        return Err("frame too short for a request header".into());
    }
    let key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(key_raw).map_err(|_| format!("unknown API key {key_raw}"))?;
    let name = api_name(key);
    let ours = handlers::supported_range(key);
    let in_ours = ours.is_some_and(|(lo, hi)| (lo..=hi).contains(&version));
    if key == ApiKey::ApiVersions && !in_ours {
        // KIP-511: answer at v0 with UNSUPPORTED_VERSION and our ranges.
        let resp = handlers::api_versions(handlers::codes::UNSUPPORTED_VERSION);
        let out = encode_response(correlation_id, 0, 0, &ResponseKind::ApiVersions(resp))?;
        return Ok((name, Some(out)));
    }
    if !in_ours && !handlers::ERROR_CAPABLE.contains(&key) {
        return Err(format!(
            "{name} v{version} is not implemented by this broker"
        ));
    }
    let valid = key.valid_versions();
    if version < valid.min || version > valid.max {
        return Err(format!(
            "{name} v{version} is not a version this broker can decode"
        ));
    }
    let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
        .map_err(|e| format!("bad {name} v{version} request header: {e}"))?;
    let req = RequestKind::decode(key, &mut frame, version)
        .map_err(|e| format!("bad {name} v{version} request body: {e}"))?;
    let resp = if in_ours {
        handlers::handle(broker, req, version).await
    } else {
        match handlers::unsupported(&req, version) {
            Some(r) => Some(r),
            None => {
                return Err(format!(
                    "{name} v{version} is not implemented and its response cannot carry an error"
                ))
            }
        }
    };
    let Some(resp) = resp else {
        return Ok((name, None));
    };
    let resp_header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    let out = encode_response(header.correlation_id, resp_header_version, version, &resp)?;
    Ok((name, Some(out)))
}

fn encode_response(
    correlation_id: i32,
    header_version: i16,
    version: i16,
    resp: &ResponseKind,
) -> Result<BytesMut, Reason> {
    let mut body = BytesMut::new();
    let mut h = ResponseHeader::default();
    h.correlation_id = correlation_id;
    h.encode(&mut body, header_version)
        .map_err(|e| format!("encoding response header: {e}"))?;
    resp.encode(&mut body, version)
        .map_err(|e| format!("encoding response v{version}: {e}"))?;
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_i32(body.len() as i32);
    out.put(body.freeze());
    Ok(out)
}
