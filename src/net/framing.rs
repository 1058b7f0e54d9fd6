//! Framing: how one ISO 8583 message is cut out of a TCP byte stream, as a tokio-util codec.
//!
//! A framing is written as a short string, the same in configuration files and on the command
//! line: a delimiter (`binary2`, `bcd2`, `ascii4` (any `asciiN`, N = 1..6), `hex4`, `binary4`,
//! or `stx-etx`) followed by options joined with `+`: `self` (the length counts its own bytes),
//! `tpdu` (a 5-byte TPDU follows the length; replies swap source and destination), `header=N`
//! (N opaque header bytes follow), `lrc` (STX/ETX only: a check byte follows ETX).
//! Example: `binary2+tpdu`. A zero-length frame is a keep-alive. A frame longer than the
//! maximum is refused before any buffer is grown for it.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio_util::codec::{Decoder, Encoder};

/// Default maximum message size (SPEC §4.1).
pub const DEFAULT_MAX_FRAME: usize = 8192;

const STX: u8 = 0x02;
const ETX: u8 = 0x03;

/// How the start and end of a message are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    /// Two bytes, big-endian binary.
    Binary2,
    /// Two bytes of packed BCD (up to 9999).
    Bcd2,
    /// N ASCII decimal digits.
    Ascii(u8),
    /// Four ASCII hex digits.
    Hex4,
    /// Four bytes, big-endian binary.
    Binary4,
    /// STX, message, ETX (and an LRC byte when `lrc`).
    StxEtx,
}

impl Delimiter {
    fn prefix_len(self) -> usize {
        match self {
            Delimiter::Binary2 | Delimiter::Bcd2 => 2,
            Delimiter::Ascii(n) => usize::from(n),
            Delimiter::Hex4 | Delimiter::Binary4 => 4,
            Delimiter::StxEtx => 0,
        }
    }
    fn capacity(self) -> usize {
        match self {
            Delimiter::Binary2 => 0xFFFF,
            Delimiter::Bcd2 => 9999,
            Delimiter::Ascii(n) => 10usize.pow(u32::from(n)) - 1,
            Delimiter::Hex4 => 0xFFFF,
            Delimiter::Binary4 => u32::MAX as usize,
            Delimiter::StxEtx => usize::MAX,
        }
    }
}

/// A complete framing description; parse it from its string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    pub delimiter: Delimiter,
    /// The length prefix counts its own bytes too.
    pub counts_self: bool,
    /// A 5-byte TPDU precedes the message.
    pub tpdu: bool,
    /// Opaque fixed header bytes between the TPDU and the message.
    pub header_len: usize,
    /// STX/ETX framing carries an LRC byte after ETX.
    pub lrc: bool,
}

impl Default for Framing {
    /// The terminal contract's framing: 2-byte binary length (SPEC §4.1).
    fn default() -> Self {
        Framing {
            delimiter: Delimiter::Binary2,
            counts_self: false,
            tpdu: false,
            header_len: 0,
            lrc: false,
        }
    }
}

impl FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split('+');
        let head = parts.next().unwrap_or("").trim();
        let delimiter = match head {
            "binary2" => Delimiter::Binary2,
            "bcd2" => Delimiter::Bcd2,
            "hex4" => Delimiter::Hex4,
            "binary4" => Delimiter::Binary4,
            "stx-etx" => Delimiter::StxEtx,
            _ => match head
                .strip_prefix("ascii")
                .and_then(|n| n.parse::<u8>().ok())
            {
                Some(n @ 1..=6) => Delimiter::Ascii(n),
                _ => {
                    return Err(format!(
                        "framing {s:?}: {head:?} is not binary2, bcd2, ascii1..ascii6, hex4, \
                         binary4 or stx-etx"
                    ))
                }
            },
        };
        let mut framing = Framing {
            delimiter,
            ..Framing::default()
        };
        for opt in parts {
            match opt.trim() {
                "self" => framing.counts_self = true,
                "tpdu" => framing.tpdu = true,
                "lrc" => framing.lrc = true,
                o => match o.strip_prefix("header=").map(str::parse::<usize>) {
                    Some(Ok(n)) if n <= 64 => framing.header_len = n,
                    _ => {
                        return Err(format!(
                        "framing {s:?}: option {o:?} is not self, tpdu, lrc or header=N (N ≤ 64)"
                    ))
                    }
                },
            }
        }
        if framing.lrc && delimiter != Delimiter::StxEtx {
            return Err(format!("framing {s:?}: lrc goes with stx-etx only"));
        }
        if framing.counts_self && delimiter == Delimiter::StxEtx {
            return Err(format!(
                "framing {s:?}: stx-etx has no length to count itself"
            ));
        }
        Ok(framing)
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.delimiter {
            Delimiter::Binary2 => f.write_str("binary2")?,
            Delimiter::Bcd2 => f.write_str("bcd2")?,
            Delimiter::Ascii(n) => write!(f, "ascii{n}")?,
            Delimiter::Hex4 => f.write_str("hex4")?,
            Delimiter::Binary4 => f.write_str("binary4")?,
            Delimiter::StxEtx => f.write_str("stx-etx")?,
        }
        if self.counts_self {
            f.write_str("+self")?;
        }
        if self.tpdu {
            f.write_str("+tpdu")?;
        }
        if self.header_len > 0 {
            write!(f, "+header={}", self.header_len)?;
        }
        if self.lrc {
            f.write_str("+lrc")?;
        }
        Ok(())
    }
}

/// Transport protocol data unit: id, destination address, source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tpdu(pub [u8; 5]);

impl Tpdu {
    /// The TPDU for a reply: destination and source swapped.
    pub fn reply(&self) -> Tpdu {
        let t = self.0;
        Tpdu([t[0], t[3], t[4], t[1], t[2]])
    }
}

/// One frame: an empty `message` (with no TPDU) is a keep-alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tpdu: Option<Tpdu>,
    pub header: Bytes,
    pub message: Bytes,
}

impl Frame {
    pub fn message(message: Bytes) -> Frame {
        Frame {
            tpdu: None,
            header: Bytes::new(),
            message,
        }
    }
    pub fn keep_alive() -> Frame {
        Frame::message(Bytes::new())
    }
    pub fn is_keep_alive(&self) -> bool {
        self.message.is_empty() && self.tpdu.is_none() && self.header.is_empty()
    }
    /// A reply frame: same header, TPDU swapped.
    pub fn reply(&self, message: Bytes) -> Frame {
        Frame {
            tpdu: self.tpdu.map(|t| t.reply()),
            header: self.header.clone(),
            message,
        }
    }
}

/// Why the byte stream cannot be framed; the connection is closed after any of these.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("length prefix is not valid: {0}")]
    BadLength(&'static str),
    #[error("frame of {len} bytes is shorter than its TPDU and header ({need} bytes)")]
    ShortFrame { len: usize, need: usize },
    #[error("stream does not start with STX (byte 0x{0:02X})")]
    NoStx(u8),
    #[error("LRC mismatch: computed 0x{computed:02X}, received 0x{received:02X}")]
    BadLrc { computed: u8, received: u8 },
    #[error("message of {len} bytes does not fit the {framing} length prefix")]
    Unencodable { len: usize, framing: Framing },
}

impl FrameError {
    /// Short stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FrameError::Io(_) => "io",
            FrameError::TooLarge { .. } => "too_large",
            FrameError::BadLength(_) => "bad_length",
            FrameError::ShortFrame { .. } => "short_frame",
            FrameError::NoStx(_) => "no_stx",
            FrameError::BadLrc { .. } => "bad_lrc",
            FrameError::Unencodable { .. } => "unencodable",
        }
    }
}

/// The tokio-util codec for one framing.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    framing: Framing,
    max_frame: usize,
}

impl FrameCodec {
    pub fn new(framing: Framing, max_frame: usize) -> FrameCodec {
        FrameCodec { framing, max_frame }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    fn read_length(&self, prefix: &[u8]) -> Result<usize, FrameError> {
        let digits = |radix: u32| {
            prefix.iter().try_fold(0usize, |acc, &b| {
                (b as char)
                    .to_digit(radix)
                    .map(|d| acc * radix as usize + d as usize)
            })
        };
        let len = match self.framing.delimiter {
            Delimiter::Binary2 | Delimiter::Binary4 => prefix
                .iter()
                .fold(0usize, |acc, &b| acc << 8 | usize::from(b)),
            Delimiter::Bcd2 => {
                if prefix.iter().any(|b| b >> 4 > 9 || b & 0xF > 9) {
                    return Err(FrameError::BadLength("not packed BCD"));
                }
                prefix.iter().fold(0, |acc, &b| {
                    acc * 100 + usize::from(b >> 4) * 10 + usize::from(b & 0xF)
                })
            }
            Delimiter::Ascii(_) => digits(10).ok_or(FrameError::BadLength("not decimal digits"))?,
            Delimiter::Hex4 => digits(16).ok_or(FrameError::BadLength("not hex digits"))?,
            Delimiter::StxEtx => 0,
        };
        Ok(len)
    }

    fn write_length(&self, len: usize, dst: &mut BytesMut) {
        match self.framing.delimiter {
            Delimiter::Binary2 => dst.put_u16(len as u16), // ok: checked against capacity
            Delimiter::Binary4 => dst.put_u32(len as u32), // ok: checked against capacity
            Delimiter::Bcd2 => {
                let (hi, lo) = (len / 100, len % 100);
                dst.put_u8((((hi / 10) << 4) | (hi % 10)) as u8); // ok: two digits
                dst.put_u8((((lo / 10) << 4) | (lo % 10)) as u8); // ok: two digits
            }
            Delimiter::Ascii(n) => {
                dst.put_slice(format!("{len:0width$}", width = usize::from(n)).as_bytes())
            }
            Delimiter::Hex4 => dst.put_slice(format!("{len:04X}").as_bytes()),
            Delimiter::StxEtx => {}
        }
    }

    /// Split the TPDU and header off a frame's content.
    fn split_content(&self, mut content: BytesMut) -> Result<Frame, FrameError> {
        if content.is_empty() {
            return Ok(Frame::keep_alive());
        }
        let need = if self.framing.tpdu { 5 } else { 0 } + self.framing.header_len;
        if content.len() < need {
            return Err(FrameError::ShortFrame {
                len: content.len(),
                need,
            });
        }
        let tpdu = self.framing.tpdu.then(|| {
            let mut t = [0u8; 5];
            content.copy_to_slice(&mut t);
            Tpdu(t)
        });
        let header = content.split_to(self.framing.header_len).freeze();
        Ok(Frame {
            tpdu,
            header,
            message: content.freeze(),
        })
    }

    fn decode_length_prefixed(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let prefix_len = self.framing.delimiter.prefix_len();
        if src.len() < prefix_len {
            return Ok(None);
        }
        let counted = self.read_length(&src[..prefix_len])?;
        let len = if self.framing.counts_self && counted > 0 {
            counted
                .checked_sub(prefix_len)
                .ok_or(FrameError::BadLength("shorter than the prefix itself"))?
        } else {
            counted
        };
        // Refuse before reserving: a peer must not make us allocate what it claims.
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if src.len() < prefix_len + len {
            src.reserve(prefix_len + len - src.len());
            return Ok(None);
        }
        src.advance(prefix_len);
        let content = src.split_to(len);
        self.split_content(content).map(Some)
    }

    fn decode_stx_etx(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(&first) = src.first() else {
            return Ok(None);
        };
        if first != STX {
            return Err(FrameError::NoStx(first));
        }
        let trailer = 1 + usize::from(self.framing.lrc);
        let Some(etx) = src[1..].iter().position(|&b| b == ETX) else {
            if src.len() > self.max_frame + 1 {
                return Err(FrameError::TooLarge {
                    len: src.len() - 1,
                    max: self.max_frame,
                });
            }
            return Ok(None);
        };
        if etx > self.max_frame {
            return Err(FrameError::TooLarge {
                len: etx,
                max: self.max_frame,
            });
        }
        if src.len() < 1 + etx + trailer {
            return Ok(None);
        }
        if self.framing.lrc {
            // LRC: XOR of everything after STX up to and including ETX.
            let computed = src[1..=etx + 1].iter().fold(0u8, |a, &b| a ^ b);
            let received = src[etx + 2];
            if computed != received {
                return Err(FrameError::BadLrc { computed, received });
            }
        }
        src.advance(1);
        let content = src.split_to(etx);
        src.advance(trailer);
        self.split_content(content).map(Some)
    }
}

/// Room made in a sending connection's read buffer (bytes).
const READ_ROOM: usize = 4096;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let frame = match self.framing.delimiter {
            Delimiter::StxEtx => self.decode_stx_etx(src),
            _ => self.decode_length_prefixed(src),
        }?;
        // The reader reads into whatever room the buffer has left: with a few bytes of room, a
        // burst of frames costs a read each. A frame cut at the end of the buffer is the sign
        // of a burst larger than it: room is made for the next one. A connection that sends a
        // frame now and then keeps its small first buffer.
        if frame.is_none() && !src.is_empty() && src.capacity() - src.len() < READ_ROOM / 4 {
            src.reserve(READ_ROOM);
        }
        Ok(frame)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let content_len = if frame.is_keep_alive() {
            0
        } else {
            usize::from(self.framing.tpdu) * 5 + frame.header.len() + frame.message.len()
        };
        let prefix_len = self.framing.delimiter.prefix_len();
        let counted = if self.framing.counts_self && content_len > 0 {
            content_len + prefix_len
        } else {
            content_len
        };
        if content_len > self.max_frame || counted > self.framing.delimiter.capacity() {
            return Err(FrameError::Unencodable {
                len: content_len,
                framing: self.framing,
            });
        }
        dst.reserve(prefix_len + content_len + 3);
        if self.framing.delimiter == Delimiter::StxEtx {
            dst.put_u8(STX);
        } else {
            self.write_length(counted, dst);
        }
        let body_start = dst.len();
        if content_len > 0 {
            if self.framing.tpdu {
                dst.put_slice(&frame.tpdu.unwrap_or(Tpdu([0x60, 0, 0, 0, 0])).0);
            }
            // The header is fixed-size: pad or cut what the caller gave.
            let mut header = frame.header.to_vec();
            header.resize(self.framing.header_len, b' ');
            dst.put_slice(&header);
            dst.put_slice(&frame.message);
        }
        if self.framing.delimiter == Delimiter::StxEtx {
            dst.put_u8(ETX);
            if self.framing.lrc {
                let lrc = dst[body_start..].iter().fold(0u8, |a, &b| a ^ b);
                dst.put_u8(lrc);
            }
        }
        Ok(())
    }
}

/// How many queued frames one write may carry: bounds what is buffered before a write.
pub(crate) const MAX_BATCH: usize = 64;

/// The most a connection's batch buffer keeps between batches.
const RETAINED_BATCH_BYTES: usize = 16 * 1024;

/// Frames on their way to one socket, written together: a burst of answers costs one write
/// system call instead of one each. It knows where each message's frame ends in the bytes,
/// so that when the connection fails part-way, the messages whose frames were handed whole
/// to the socket are told from those that were not (SPEC F7: only an answer that could not
/// be delivered is undone; one the peer may hold is not).
#[derive(Default)]
pub struct Batch {
    bytes: BytesMut,
    /// The batch's messages (keep-alives aside), in the order of their frames.
    messages: Vec<Bytes>,
    /// Where each message's frame ends in `bytes`.
    ends: Vec<usize>,
    /// How many messages' frames were handed whole to the socket.
    written: usize,
    /// Messages whose frame could not be encoded (too large for the framing): never sent.
    refused: Vec<Bytes>,
    /// Flush after every frame (see [`Batch::flushing_each_frame`]).
    flush_each: bool,
    /// How many of `bytes` the socket took.
    at: usize,
}

impl Batch {
    /// A batch for a stream whose writes may stop short of the socket (TLS: a write hands
    /// the bytes to the TLS layer, a flush puts them on the socket): each frame is flushed
    /// before it counts as written, so that a frame still inside the process when the
    /// connection fails is undelivered, not taken for delivered. A plain TCP socket takes
    /// the whole batch in one write.
    pub fn flushing_each_frame() -> Batch {
        Batch {
            flush_each: true,
            ..Batch::default()
        }
    }

    pub(crate) fn clear(&mut self) {
        // A burst's buffer is not kept by a connection that goes idle after it.
        if self.bytes.capacity() > RETAINED_BATCH_BYTES {
            self.bytes = BytesMut::new();
        }
        self.bytes.clear();
        self.messages.clear();
        self.ends.clear();
        self.written = 0;
        self.at = 0;
        self.refused.clear();
    }

    pub(crate) fn add(&mut self, codec: &mut FrameCodec, frame: Frame) {
        let keep_alive = frame.is_keep_alive();
        let message = frame.message.clone();
        match codec.encode(frame, &mut self.bytes) {
            Ok(()) if keep_alive => {}
            Ok(()) => {
                self.messages.push(message);
                self.ends.push(self.bytes.len());
            }
            Err(e) => {
                tracing::error!(error = %e, "answer does not fit the framing: not sent");
                self.refused.push(message);
            }
        }
    }

    /// Write the whole batch. On an error, [`Batch::written`] still says which frames the
    /// socket took whole before it failed.
    async fn write_to<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> Result<(), FrameError> {
        std::future::poll_fn(|cx| self.poll_write_to(cx, out)).await
    }

    /// Write the batch as far as the socket takes it now. The progress is kept in the batch,
    /// so that a connection's one task can poll it beside its reads and requests and resume
    /// where the socket stopped taking bytes. On an error, [`Batch::written`] still says
    /// which frames the socket took whole before it failed.
    pub fn poll_write_to<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut W,
    ) -> Poll<Result<(), FrameError>> {
        loop {
            // With `flush_each`, a message counts as written once its frame is flushed; else
            // once the socket took its last byte (counted after every write, so that it holds
            // even if this is given up part-way: a peer that stopped reading).
            let end = match self.flush_each {
                true => self.ends.get(self.written).copied(),
                false => None,
            }
            .unwrap_or(self.bytes.len());
            if self.at < end {
                let n = ready!(Pin::new(&mut *out).poll_write(cx, &self.bytes[self.at..end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                }
                self.at += n;
                if !self.flush_each {
                    self.written = self.ends.partition_point(|&end| end <= self.at);
                }
                continue;
            }
            ready!(Pin::new(&mut *out).poll_flush(cx))?;
            if self.flush_each && self.written < self.ends.len() {
                self.written += 1;
                continue;
            }
            return Poll::Ready(Ok(()));
        }
    }

    /// The messages whose frames the socket took whole.
    pub fn written(&self) -> &[Bytes] {
        &self.messages[..self.written]
    }

    /// The messages that never reached the socket whole: after a failed write, and those
    /// that could not be framed.
    pub fn unwritten(&mut self) -> impl Iterator<Item = Bytes> + '_ {
        self.refused
            .drain(..)
            .chain(self.messages.drain(self.written..))
    }
}

/// Write `first` and every frame already waiting in `queue` (up to [`MAX_BATCH`]) with one
/// write: a burst of answers costs one system call instead of one each, and a lone frame is
/// written at once, as before. Afterwards `batch` tells which messages were written.
pub async fn send_batch<W: AsyncWrite + Unpin>(
    out: &mut W,
    codec: &mut FrameCodec,
    queue: &mut tokio::sync::mpsc::Receiver<Frame>,
    first: Frame,
    batch: &mut Batch,
) -> Result<(), FrameError> {
    batch.clear();
    // Under load, other tasks are about to produce frames for this connection: let them run
    // first, so that one write carries them all (a write to a socket costs far more than a
    // frame's bytes).
    if queue.is_empty() {
        tokio::task::yield_now().await;
    }
    let mut next = Some(first);
    let mut frames = 0;
    while let Some(frame) = next.take() {
        frames += 1;
        batch.add(codec, frame);
        if frames < MAX_BATCH {
            next = queue.try_recv().ok();
        }
    }
    batch.write_to(out).await
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
