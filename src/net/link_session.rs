//! A link's sessions: each kept connected (hosts in failover order, back-off with jitter),
//! signed on and echoed when idle, its connection's reader matching answers and its writer
//! sending requests in batches; and the sweep of requests that timed out long ago.

use super::*;

/// Keep one session connected: connect (hosts in order, back-off with jitter), sign on, echo
/// when idle, and start over when the connection drops or echoes fail.
pub(super) async fn run_session(
    link: Arc<Link>,
    session: Arc<Session>,
    index: usize,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(link.config.reconnect_min_ms);
    let max_backoff = Duration::from_millis(link.config.reconnect_max_ms);
    let mut host = 0usize;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let addr = link.config.hosts[host % link.config.hosts.len()].clone();
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = tokio::time::timeout(link.config.timeout(), TcpStream::connect(&addr)) => c,
        };
        match connected {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                match &link.config.tls {
                    None => {
                        tracing::info!(link = %link.name, session = index, %addr, "connected");
                        backoff = Duration::from_millis(link.config.reconnect_min_ms);
                        serve_connection(&link, &session, stream, &stop).await;
                        tracing::warn!(link = %link.name, session = index, %addr, "session ended");
                    }
                    // A host whose certificate does not chain to the link's CA or does not
                    // carry its name is treated as unreachable: back off and fail over.
                    Some(tls) => match tokio::select! {
                        _ = stop.cancelled() => return,
                        c = tls.connect(&addr, stream) => c,
                    } {
                        Ok(stream) => {
                            tracing::info!(link = %link.name, session = index, %addr, "connected (TLS)");
                            backoff = Duration::from_millis(link.config.reconnect_min_ms);
                            serve_connection(&link, &session, stream, &stop).await;
                            tracing::warn!(link = %link.name, session = index, %addr, "session ended");
                        }
                        Err(e) => {
                            metrics::counter!("cyberswitch_tls_handshake_failures_total", "link" => link.name.to_string())
                                .increment(1);
                            tracing::warn!(link = %link.name, session = index, %addr, error = %e, "TLS handshake failed");
                        }
                    },
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(link = %link.name, session = index, %addr, error = %e, "connect failed")
            }
            Err(_) => {
                tracing::warn!(link = %link.name, session = index, %addr, "connect timed out")
            }
        }
        session.up.store(false, Ordering::Relaxed);
        link.publish_state();
        host += 1; // fail over to the next host
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2 + 1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

impl Link {
    fn publish_state(&self) {
        metrics::gauge!("cyberswitch_link_up", "link" => self.name.to_string())
            .set(if self.is_up() { 1.0 } else { 0.0 });
    }
}

async fn serve_connection<S>(
    link: &Arc<Link>,
    session: &Arc<Session>,
    stream: S,
    stop: &CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let codec = FrameCodec::new(link.config.profile.framing, link.config.profile.max_frame);
    let (reading, mut writing) = tokio::io::split(stream);
    let mut frames = FramedRead::new(reading, codec.clone());
    let mut codec = codec;
    let (tx, mut rx) = mpsc::channel::<Frame>(link.config.max_in_flight.max(16));
    if let Ok(mut s) = session.sender.lock() {
        *s = Some(tx.clone());
    }
    let conn_stop = stop.child_token();
    let writer_stop = conn_stop.clone();
    let writer = tokio::spawn(async move {
        // Requests not written are answered by their timeouts.
        let mut batch = Batch::default();
        loop {
            let frame = tokio::select! {
                _ = writer_stop.cancelled() => break,
                f = rx.recv() => match f { Some(f) => f, None => break },
            };
            // A host that stops reading fills the socket: the write is given up when the
            // connection ends (stop, the reader gone, echoes failing).
            let sent = tokio::select! {
                _ = writer_stop.cancelled() => break,
                r = send_batch(&mut writing, &mut codec, &mut rx, frame, &mut batch) => r,
            };
            if sent.is_err() {
                break;
            }
        }
        writer_stop.cancel();
    });
    let reader_link = link.clone();
    let reader_stop = conn_stop.clone();
    let reader_tx = tx.clone();
    let reader = tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                _ = reader_stop.cancelled() => break,
                n = frames.next() => n,
            };
            match next {
                Some(Ok(frame)) if frame.is_keep_alive() => {}
                Some(Ok(frame)) => reader_link.on_message(&frame.message, &reader_tx),
                Some(Err(e)) => {
                    tracing::warn!(link = %reader_link.name, error = %e, "framing error from upstream");
                    break;
                }
                None => break,
            }
        }
        reader_stop.cancel();
    });

    // Sign on, then keep the session alive with echoes.
    // Neither the sign-on nor an echo outlives the connection (a stop waits for sessions).
    let exchange = |code: &'static str| {
        let conn_stop = conn_stop.clone();
        async move {
            tokio::select! {
                _ = conn_stop.cancelled() => None,
                ok = network_exchange(link, session, code) => Some(ok),
            }
        }
    };
    let signed_on = !link.config.sign_on || exchange("001").await == Some(true);
    if signed_on {
        session.up.store(true, Ordering::Relaxed);
        tracing::info!(link = %link.name, "session up: legs may be sent");
        link.publish_state();
        metrics::gauge!("cyberswitch_link_signed_on", "link" => link.name.to_string()).set(1.0);
        let mut failures = 0u32;
        let interval = Duration::from_millis(link.config.echo_interval_ms);
        loop {
            tokio::select! {
                _ = conn_stop.cancelled() => break,
                _ = tokio::time::sleep(interval / 4) => {}
            }
            if link.idle_for() < interval {
                continue;
            }
            let Some(answered) = exchange("301").await else {
                break;
            };
            if answered {
                failures = 0;
            } else {
                failures += 1;
                tracing::warn!(link = %link.name, failures, "echo failed");
                if failures >= link.config.echo_failures {
                    break;
                }
            }
        }
    } else {
        tracing::warn!(link = %link.name, "sign-on refused or unanswered");
    }
    session.up.store(false, Ordering::Relaxed);
    metrics::gauge!("cyberswitch_link_signed_on", "link" => link.name.to_string()).set(0.0);
    if let Ok(mut s) = session.sender.lock() {
        *s = None;
    }
    conn_stop.cancel();
    let _ = writer.await;
    let _ = reader.await;
}

/// Send 0800 with the given network code on this session; true when answered 00.
async fn network_exchange(link: &Link, session: &Session, code: &str) -> bool {
    let msg = link.network_message(code);
    matches!(link.send_on(session, msg).await, Ok(a) if a.code() == Some(ResponseCode::Approved))
}

/// Forget timed-out requests after a while: an answer later than that is merely unmatched.
pub(super) async fn sweep_timed_out(link: Arc<Link>, stop: CancellationToken) {
    let keep = link.remembered_after_timeout();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        link.timed_out.retain(|_, (_, at)| at.elapsed() < keep);
    }
}
