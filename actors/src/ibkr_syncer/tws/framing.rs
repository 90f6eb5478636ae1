//! Framing: the handshake bytes, the version range, length-prefixed frames read and written.

use super::{MAX_FRAME, MAX_VERSION, MIN_VERSION, TwsError, malformed};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Encodes one message: the length prefix and the NUL-terminated fields.
pub fn encode_fields<S: AsRef<str>>(fields: &[S]) -> Vec<u8> {
    let len: usize = fields.iter().map(|f| f.as_ref().len() + 1).sum();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    for field in fields {
        out.extend_from_slice(field.as_ref().as_bytes());
        out.push(0);
    }
    out
}

/// The client's opening bytes: `API\0`, then the version range as one length-prefixed string.
pub fn client_hello() -> Vec<u8> {
    let range = format!("v{MIN_VERSION}..{MAX_VERSION}");
    let mut out = b"API\0".to_vec();
    out.extend_from_slice(&u32::try_from(range.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(range.as_bytes());
    out
}

/// Parses the version range a client advertises (`v157..178`, or `v100` for one version).
pub fn parse_version_range(text: &str) -> Result<(u32, u32), TwsError> {
    let body = text
        .strip_prefix('v')
        .ok_or_else(|| malformed(format!("version range {text:?} does not start with v")))?;
    let (min, max) = body.split_once("..").unwrap_or((body, body));
    let parse = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| malformed(format!("version range {text:?}")))
    };
    let (min, max) = (parse(min)?, parse(max)?);
    if min > max {
        return Err(malformed(format!("version range {text:?} is empty")));
    }
    Ok((min, max))
}

/// Reads one length-prefixed frame; `Ok(None)` at a clean end of stream between frames. Not
/// cancel-safe (a cancelled read loses what it read): under a timeout use [`FrameReader`].
pub async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<Option<Vec<u8>>, TwsError> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(malformed(format!(
            "frame of {len} bytes (most is {MAX_FRAME})"
        )));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

/// Reads frames so that a read may be cancelled (by a timeout) at any point without losing a
/// byte: what arrived is kept in a buffer until a whole frame is there. `AsyncReadExt::read_buf`
/// is cancel-safe; `read_exact` is not.
#[derive(Debug)]
pub struct FrameReader<R> {
    pub(super) inner: R,
    pub(super) buf: Vec<u8>,
    /// Where the unread bytes of `buf` start
    pub(super) start: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads frames from `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// The next whole frame, if the buffer holds one.
    pub(super) fn take_frame(&mut self) -> Result<Option<Vec<u8>>, TwsError> {
        let unread = &self.buf[self.start..];
        if unread.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([unread[0], unread[1], unread[2], unread[3]]) as usize;
        if len > MAX_FRAME {
            return Err(malformed(format!(
                "frame of {len} bytes (most is {MAX_FRAME})"
            )));
        }
        if unread.len() < 4 + len {
            return Ok(None);
        }
        let frame = unread[4..4 + len].to_vec();
        self.start += 4 + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Reads one frame; `Ok(None)` at a clean end of stream between frames. Cancel-safe.
    pub async fn next_frame(&mut self) -> Result<Option<Vec<u8>>, TwsError> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            if self.start > 0 {
                // move the partial frame to the front before reading more
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.len() == self.start {
                    Ok(None)
                } else {
                    Err(TwsError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "TWS closed the connection in the middle of a message",
                    )))
                };
            }
        }
    }
}

/// Writes one message.
pub async fn write_fields<S: AsRef<str>>(
    writer: &mut (impl AsyncWrite + Unpin),
    fields: &[S],
) -> Result<(), TwsError> {
    writer.write_all(&encode_fields(fields)).await?;
    Ok(())
}
