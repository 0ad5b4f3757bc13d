//! An async Kafka-protocol connection from this broker to another (follower fetches,
//! OffsetsForLeaderEpoch, ListOffsets as a replica): framing, headers, correlation ids, timeouts.
//! Connections are made through the [`crate::transport`] seam.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::transport::{self, BoxStream};

/// Largest response frame accepted from a peer broker.
const MAX_RESPONSE: usize = 256 << 20;

/// One connection to a peer broker.
#[derive(Debug)]
pub struct PeerConn {
    stream: BoxStream,
    corr: i32,
    client_id: String,
}

impl PeerConn {
    /// Connects to `addr` within `timeout`.
    pub async fn connect(
        addr: &str,
        client_id: String,
        timeout: Duration,
    ) -> std::io::Result<PeerConn> {
        let stream = tokio::time::timeout(timeout, transport::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect {addr}"))
            })??;
        Ok(PeerConn {
            stream,
            corr: 0,
            client_id,
        })
    }

    /// Sends one request and reads its response within `timeout`.
    pub async fn call<Req: Encodable + HeaderVersion, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
        timeout: Duration,
    ) -> std::io::Result<Resp> {
        self.corr = self.corr.wrapping_add(1);
        let mut h = RequestHeader::default();
        h.request_api_key = key as i16;
        h.request_api_version = version;
        h.correlation_id = self.corr;
        h.client_id = Some(StrBytes::from_string(self.client_id.clone()));
        let mut body = BytesMut::new();
        h.encode(&mut body, Req::header_version(version))
            .map_err(std::io::Error::other)?;
        req.encode(&mut body, version)
            .map_err(std::io::Error::other)?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(body.len() as i32);
        frame.put(body);
        let fut = async {
            self.stream.write_all(&frame).await?;
            let mut len = [0u8; 4];
            self.stream.read_exact(&mut len).await?;
            let len = i32::from_be_bytes(len);
            if len < 0 || len as usize > MAX_RESPONSE {
                return Err(std::io::Error::other(format!(
                    "response frame of {len} bytes refused"
                )));
            }
            let mut buf = vec![0u8; len as usize];
            self.stream.read_exact(&mut buf).await?;
            Ok(Bytes::from(buf))
        };
        let mut resp = tokio::time::timeout(timeout, fut).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "peer request timed out")
        })??;
        let header = ResponseHeader::decode(&mut resp, key.response_header_version(version))
            .map_err(std::io::Error::other)?;
        if header.correlation_id != self.corr {
            return Err(std::io::Error::other("correlation id mismatch"));
        }
        Resp::decode(&mut resp, version).map_err(std::io::Error::other)
    }
}
