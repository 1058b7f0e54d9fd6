use super::*;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

struct NoLate;
impl LateAnswers for NoLate {
    fn late_answer(&self, _: &str, _: OwnedMessage, _: OwnedMessage) {}
}

/// A host on `listener` that signs on and echoes at once and approves money requests
/// only once `release` is told, echoing their fields.
async fn held_host(listener: TcpListener, profile: Profile, release: Arc<tokio::sync::Notify>) {
    let Ok((stream, _)) = listener.accept().await else {
        return;
    };
    let codec = FrameCodec::new(profile.framing, profile.max_frame);
    let (mut sink, mut frames) = Framed::new(stream, codec).split();
    while let Some(Ok(frame)) = frames.next().await {
        let msg = profile
            .spec
            .decode(&frame.message)
            .unwrap()
            .to_owned_message();
        let mut answer = msg.clone();
        answer.set_mti(msg.mti().response());
        answer.set(39, b"00");
        if msg.mti().class() != 8 {
            release.notified().await;
        }
        let mut out = BytesMut::new();
        profile.spec.encode(&answer, &mut out).unwrap();
        use futures::SinkExt;
        if sink.send(Frame::message(out.freeze())).await.is_err() {
            return;
        }
    }
}

fn debit(amount: u64) -> OwnedMessage {
    debit_at(amount, b"1207120000")
}

fn debit_at(amount: u64, transmission_time: &[u8]) -> OwnedMessage {
    let mut m = OwnedMessage::new(Mti(*b"0200"));
    m.set(3, b"000000")
        .set_number(4, amount, 12)
        .set(7, transmission_time)
        .set_number(11, 42, 6)
        .set(41, b"TERM0001")
        .set(49, b"410");
    m
}

/// Two requests with the same match key in flight at once (a queued advice carrying a
/// STAN of an earlier run, and a new leg given the same one) could not be told apart: the
/// first answer would go to whichever asked last. The second is not sent at all.
/// A link to a [`held_host`] answering after `timeout_ms` at the soonest.
async fn held_link(timeout_ms: u64) -> (Arc<Link>, Arc<tokio::sync::Notify>, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let profile = Profile::resolve("iso87-ascii", "binary2", 8192).unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(held_host(listener, profile.clone(), release.clone()));
    let mut config = LinkConfig::local("upstream", profile);
    config.hosts = vec![addr.to_string()];
    config.sessions = 1;
    config.sign_on = false;
    config.echo_interval_ms = 60_000;
    config.echo_failures = 3;
    config.reconnect_min_ms = 10;
    config.reconnect_max_ms = 100;
    config.timeout_ms = timeout_ms;
    let stop = CancellationToken::new();
    let link = Link::start(config, "SWITCH01".into(), Arc::new(NoLate), stop.clone());
    while !link.is_up() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (link, release, stop)
}

#[tokio::test]
async fn a_request_whose_match_key_is_in_flight_is_not_sent() {
    let (link, release, stop) = held_link(30_000).await;
    let first = tokio::spawn({
        let link = link.clone();
        async move { link.request(debit(100)).await }
    });
    while link.pending.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        link.request(debit(200)).await,
        Err(LinkError::Busy)
    ));
    release.notify_one();
    let answer = first.await.unwrap().unwrap();
    assert_eq!(answer.get(4), Some(&b"000000000100"[..]), "its own answer");
    assert!(link.pending.is_empty());
    stop.cancel();
}

/// A request that timed out may still be answered late: until it is forgotten, only
/// another attempt of it (a queued item sent again) goes under its key; another request
/// would take its late answer.
#[tokio::test]
async fn a_key_whose_request_timed_out_takes_only_that_request_again() {
    let (link, _release, stop) = held_link(200).await;
    assert!(matches!(
        link.request(debit(100)).await,
        Err(LinkError::Timeout)
    ));
    assert!(matches!(
        link.request(debit_at(300, b"1207120005")).await,
        Err(LinkError::Busy)
    ));
    assert!(
        matches!(link.request(debit(100)).await, Err(LinkError::Timeout)),
        "the same request again is sent"
    );
    stop.cancel();
}

/// A caller that stops waiting (an admin call cut off by its deadline) left its request's
/// entry behind: its key was taken for good, and its answer matched nothing. Now it counts
/// as timed out: the key goes to that request's repeats only, and its late answer is
/// recognised as late.
#[tokio::test]
async fn a_request_whose_caller_stopped_waiting_counts_as_timed_out() {
    let (link, release, stop) = held_link(30_000).await;
    let waiting = tokio::spawn({
        let link = link.clone();
        async move { link.request(debit(100)).await }
    });
    while link.pending.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert!(link.pending.is_empty(), "its entry went with it");
    assert_eq!(link.timed_out.len(), 1, "remembered as timed out");
    assert!(matches!(
        link.request(debit_at(300, b"1207120005")).await,
        Err(LinkError::Busy)
    ));
    // Its answer, when it comes, is the late answer of that request.
    release.notify_one();
    while !link.timed_out.is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
}
