//! Authorization with `--broker redis://`: the same rules on two instances
//! sharing one password-protected Redis, with both logging at trace level,
//! and neither the Redis password nor the JWT secret nor a token in the
//! logs.

use std::{
    net::SocketAddr,
    path::Path,
    process::Stdio,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::process::Child;

use crate::{
    redis::{RedisServer, WAIT},
    support::EventReader,
};

const SECRET: &str = "redis-auth-test-secret-41";
const PASSWORD: &str = "redis-pass-never-logged-7";

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The real binary with `RUST_LOG=trace`, logging into `log`.
async fn traced(broker: &str, log: &Path) -> (Child, SocketAddr) {
    let child = crate::support::server_command()
        .args(["--addr", "127.0.0.1:0", "--tick", "0", "--jwt-leeway", "0"])
        .args(["--broker", broker, "--jwt-secret", SECRET])
        .env_clear()
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start sse-server");
    let addr = tokio::time::timeout(WAIT, async {
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(rest) = text.split("addr=").nth(1) {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("sse-server started");
    (child, addr)
}

async fn publish(addr: SocketAddr, topic: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/publish"))
        .header("authorization", format!("Bearer {token}"))
        .json(&json!({"topic": topic, "data": "shared"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_rule_the_same_across_instances_and_stay_out_of_trace_logs() {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), &["--requirepass", PASSWORD]).await;
    let broker = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let (logs_a, logs_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (child_a, a) = traced(&broker, &logs_a).await;
    let (child_b, b) = traced(&broker, &logs_b).await;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reader = token(json!({"sse": {"subscribe": ["orders/*"]}, "exp": now + 4}));
    let writer = token(json!({"sse": {"publish": ["orders/*"]}}));
    assert_eq!(status(&format!("http://{a}/sse?topic=orders/1")).await, 401);
    assert_eq!(
        status(&format!("http://{a}/sse?topic=news&access_token={reader}")).await,
        403
    );
    let mut stream = EventReader::open(
        &format!("http://{a}/sse?topic=orders/1&access_token={reader}"),
        None,
    )
    .await;
    // Published on the other instance, with publish rights only there.
    assert_eq!(publish(b, "orders/1", &writer).await, 202);
    assert_eq!(publish(b, "news", &writer).await, 403);
    assert_eq!(publish(b, "orders/1", &reader).await, 403);
    assert_eq!(stream.expect(WAIT).await.data, "shared");
    // The token expires: the stream ends cleanly.
    let mut bytes = stream.into_bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = bytes.next().await {
            chunk.expect("a clean end, not a reset");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after its token expired");

    for (child, log) in [(child_a, &logs_a), (child_b, &logs_b)] {
        let pid = child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let mut child = child;
        let _ = tokio::time::timeout(WAIT, child.wait()).await;
        let text = std::fs::read_to_string(log).unwrap();
        // The refusals above are logged at debug level, with their reason:
        // the lines most likely to carry a token, had we been careless.
        if log == &logs_a {
            assert!(text.contains("request refused"), "refusals are logged");
        }
        for secret in [
            PASSWORD,
            SECRET,
            reader.rsplit('.').next().unwrap(),
            writer.rsplit('.').next().unwrap(),
        ] {
            assert!(!text.contains(secret), "{secret} is in {}", log.display());
        }
    }
}
