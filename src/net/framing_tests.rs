use super::*;

fn codec(s: &str) -> FrameCodec {
    FrameCodec::new(s.parse().unwrap(), DEFAULT_MAX_FRAME)
}

#[test]
fn a_sending_connection_gets_room_for_a_burst() {
    let mut c = codec("binary2");
    // Two whole frames and the start of a third, in a buffer with almost no room left.
    let mut buf = BytesMut::with_capacity(16);
    buf.extend_from_slice(&[0, 2, b'a', b'b', 0, 1, b'c', 0]);
    assert_eq!(&c.decode(&mut buf).unwrap().unwrap().message[..], b"ab");
    assert_eq!(&c.decode(&mut buf).unwrap().unwrap().message[..], b"c");
    assert!(c.decode(&mut buf).unwrap().is_none());
    assert!(
        buf.capacity() - buf.len() >= READ_ROOM,
        "room for the next burst"
    );
    assert_eq!(&buf[..], &[0], "the partial frame is kept");
}

#[test]
fn framing_strings_round_trip() {
    for s in [
        "binary2",
        "bcd2+self",
        "ascii4+tpdu",
        "hex4+header=3",
        "binary4",
        "stx-etx+lrc",
    ] {
        assert_eq!(s.parse::<Framing>().unwrap().to_string(), s);
    }
    assert!("ascii9".parse::<Framing>().is_err());
    assert!("binary2+lrc".parse::<Framing>().is_err());
    assert!("binary2+bogus".parse::<Framing>().is_err());
}

#[test]
fn tpdu_reply_swaps_addresses() {
    assert_eq!(Tpdu([0x60, 0, 1, 0, 2]).reply(), Tpdu([0x60, 0, 2, 0, 1]));
}

#[test]
fn partial_input_waits_for_more() {
    let mut c = codec("binary2");
    let mut buf = BytesMut::from(&[0x00, 0x04, b'0', b'8'][..]);
    assert!(c.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"00");
    assert_eq!(
        c.decode(&mut buf).unwrap().unwrap().message,
        Bytes::from_static(b"0800")
    );
    assert!(buf.is_empty());
}

#[test]
fn oversized_frame_is_refused_without_allocating() {
    let mut c = codec("binary4");
    let mut buf = BytesMut::from(&[0x7F, 0xFF, 0xFF, 0xFF][..]);
    let cap = buf.capacity();
    assert!(matches!(
        c.decode(&mut buf),
        Err(FrameError::TooLarge { .. })
    ));
    assert_eq!(buf.capacity(), cap);
}

/// A socket that takes `room` bytes in all, at most `chunk` per write, then fails as a
/// connection reset by its peer does.
struct Breaks {
    took: Vec<u8>,
    room: usize,
    chunk: usize,
}

impl AsyncWrite for Breaks {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let n = buf.len().min(self.room).min(self.chunk);
        if n == 0 {
            return std::task::Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.room -= n;
        self.took.extend_from_slice(&buf[..n]);
        std::task::Poll::Ready(Ok(n))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A TLS-like stream: writes go to its own buffer and always succeed; a flush puts the
/// buffer on a socket that takes `room` bytes in all, then fails.
struct Buffering {
    buffered: Vec<u8>,
    sent: Vec<u8>,
    room: usize,
}

impl AsyncWrite for Buffering {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.buffered.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let n = self.buffered.len().min(self.room);
        let head: Vec<u8> = self.buffered.drain(..n).collect();
        self.room -= n;
        self.sent.extend_from_slice(&head);
        if self.buffered.is_empty() {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Over TLS a write only reaches the TLS layer: a frame counts as written once a flush
/// has put it on the socket, not when the layer took it.
#[tokio::test]
async fn over_a_buffering_stream_only_flushed_frames_count_as_written() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tx.try_send(message("bbbbbbbbbbbbbbbbbbbb")).unwrap();
    tx.try_send(message("cccccccccccccccccccc")).unwrap();
    let mut out = Buffering {
        buffered: Vec::new(),
        sent: Vec::new(),
        room: 30,
    };
    let mut batch = Batch::flushing_each_frame();
    let first = message("aaaaaaaaaaaaaaaaaaaa");
    let result = send_batch(&mut out, &mut codec("binary2"), &mut rx, first, &mut batch).await;
    assert!(result.is_err());
    assert_eq!(batch.written(), [&b"aaaaaaaaaaaaaaaaaaaa"[..]]);
    assert_eq!(batch.unwritten().count(), 2);
    assert_eq!(
        out.sent.len(),
        30,
        "the second frame reached the socket only in part"
    );
}

fn message(text: &str) -> Frame {
    Frame::message(Bytes::copy_from_slice(text.as_bytes()))
}

/// Sends `first` and the queued frames into a socket with `room` bytes, in chunks of 7.
async fn send(
    codec: &mut FrameCodec,
    frames: Vec<Frame>,
    room: usize,
) -> (Result<(), FrameError>, Vec<Bytes>, Vec<Bytes>, Vec<u8>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mut frames = frames.into_iter();
    let first = frames.next().unwrap();
    for f in frames {
        tx.try_send(f).unwrap();
    }
    let mut out = Breaks {
        took: Vec::new(),
        room,
        chunk: 7,
    };
    let mut batch = Batch::default();
    let result = send_batch(&mut out, codec, &mut rx, first, &mut batch).await;
    let written = batch.written().to_vec();
    let unwritten = batch.unwritten().collect();
    (result, written, unwritten, out.took)
}

#[tokio::test]
async fn a_batch_cut_by_a_failing_socket_tells_the_frames_it_took_whole() {
    // Frames of 2 + 20 bytes end at 22, 24 (a keep-alive), 46 and 68; the socket takes 50.
    let frames = vec![
        message("aaaaaaaaaaaaaaaaaaaa"),
        Frame::keep_alive(),
        message("bbbbbbbbbbbbbbbbbbbb"),
        message("cccccccccccccccccccc"),
    ];
    let (result, written, unwritten, took) = send(&mut codec("binary2"), frames, 50).await;
    assert!(matches!(result, Err(FrameError::Io(_))));
    assert_eq!(
        written,
        [&b"aaaaaaaaaaaaaaaaaaaa"[..], &b"bbbbbbbbbbbbbbbbbbbb"[..]]
    );
    // The third reached the socket only in part: the peer cannot hold it.
    assert_eq!(unwritten, [&b"cccccccccccccccccccc"[..]]);
    assert_eq!(took.len(), 50);
}

#[tokio::test]
async fn a_whole_batch_written_and_a_frame_too_large_for_the_framing_left_out() {
    let mut small = FrameCodec::new("binary2".parse().unwrap(), 10);
    let frames = vec![
        message("short"),
        message("far too long for it"),
        message("fine"),
    ];
    let (result, written, unwritten, took) = send(&mut small, frames, usize::MAX).await;
    assert!(result.is_ok());
    assert_eq!(written, [&b"short"[..], &b"fine"[..]]);
    assert_eq!(unwritten, [&b"far too long for it"[..]]);
    assert_eq!(took, b"\x00\x05short\x00\x04fine");
}
