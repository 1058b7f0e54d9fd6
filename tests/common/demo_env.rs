//! The in-process demo as the integration tests start and drive it: logs, start-up on
//! ephemeral ports, one terminal request, the store-and-forward queue drained, admin API
//! clients, and small readers of answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cyberswitch::admin::client::ApiClient;
use cyberswitch::demo::{self, Demo, DemoPorts};
use cyberswitch::iso8583::{OwnedMessage, Spec};
use cyberswitch::net::client::Client;
use tokio_util::sync::CancellationToken;

/// How long a terminal waits for its answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The switch's logs (info) in the test's output, set up once per test binary.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
}

/// The demo in `dir` on ephemeral ports, with `extra_toml` appended to its configuration,
/// and the token that stops it.
pub async fn start_demo(dir: &Path, extra_toml: &str) -> (Demo, CancellationToken) {
    let stop = CancellationToken::new();
    let demo = demo::start_with(
        dir,
        DemoPorts::ephemeral(),
        stop.clone(),
        |_| {},
        extra_toml,
    )
    .await
    .unwrap();
    (demo, stop)
}

/// The demo's terminal spec.
pub fn terminal_spec() -> Arc<Spec> {
    Arc::new(Spec::resolve("iso87-ascii").unwrap())
}

/// A new terminal connection to the demo's switch.
pub async fn terminal(demo: &Demo, spec: &Arc<Spec>) -> Client {
    Client::connect(
        &demo.switch_addr().to_string(),
        spec.clone(),
        "binary2".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// One request from a new terminal connection, and its answer.
pub async fn call(demo: &Demo, spec: &Arc<Spec>, m: &OwnedMessage) -> OwnedMessage {
    terminal(demo, spec)
        .await
        .call(m, ANSWER_WAIT)
        .await
        .unwrap()
}

/// Until the store-and-forward queue is empty (dead letters are not in it).
pub async fn drained(demo: &Demo) {
    for _ in 0..200 {
        if demo.running.switch.saf.depth() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("store-and-forward queue did not drain");
}

/// The demo's admin API (plain HTTP) with the token kept in its data directory's
/// `token_file` (`operator.token`, `partner.token` …).
pub fn api_client(demo: &Demo, token_file: &str) -> ApiClient {
    let url = format!("http://{}", demo.running.admin.unwrap());
    let token = demo::secret(&demo.dir, token_file).unwrap();
    ApiClient::new(&url, Some(token)).unwrap()
}

/// Field `n` of `m` as a number.
pub fn number(m: &OwnedMessage, n: u16) -> u64 {
    std::str::from_utf8(m.get(n).unwrap())
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A copy of a directory tree (a data directory as it stood, to start from again).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
