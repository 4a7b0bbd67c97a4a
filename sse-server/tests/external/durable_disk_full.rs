//! A full disk under `--data-dir`: publishes get `503` JSON, subscribers
//! keep streaming, `/healthz` says why, and publishing resumes when space
//! comes back. The disk is a real small filesystem: a tmpfs mounted with
//! `size=` (needs root, as `cargo xtask test` in CI runs).

use std::{path::PathBuf, process::Command, time::Duration};

use crate::{
    redis::WAIT,
    support::{BinaryServer, EventReader},
};

/// A tmpfs of a given size, unmounted on drop.
struct SmallDisk {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a {size} tmpfs at {}: this test needs root (CI runs as root)",
            path.display()
        );
        Self { path, _dir: dir }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot resize the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Publishes `data` on topic `t`: status, body, and whether Retry-After came.
async fn publish(server: &BinaryServer, data: &str) -> (u16, serde_json::Value, bool) {
    let response = reqwest::Client::new()
        .post(server.url("/publish?topic=t"))
        .header("content-type", "text/plain")
        .body(data.to_owned())
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    (status, response.json().await.expect("JSON"), retry_after)
}

async fn healthz(server: &BinaryServer) -> (u16, serde_json::Value) {
    let response = reqwest::get(server.url("/healthz")).await.expect("healthz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

async fn wait_until_serving(server: &BinaryServer) {
    tokio::time::timeout(WAIT, async {
        while reqwest::get(server.url("/healthz")).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_with_503_while_subscribers_keep_streaming() {
    let disk = SmallDisk::mount("1m");
    let data_dir = disk.path.join("data");
    let dir_arg = data_dir.to_str().unwrap().to_owned();
    let args = ["--tick", "0", "--data-dir", &dir_arg];
    let server = BinaryServer::start("127.0.0.1:0", &args).await;
    wait_until_serving(&server).await;
    let mut subscriber = EventReader::open(&server.url("/sse?topic=t"), None).await;

    let mut accepted = Vec::new();
    let mut refusal = None;
    for n in 0..200 {
        let data = format!("{n} {}", "x".repeat(30 * 1024));
        let (status, body, retry_after) = publish(&server, &data).await;
        match status {
            202 => accepted.push(data),
            503 => {
                assert!(retry_after, "503 without Retry-After");
                refusal = Some(body);
                break;
            }
            other => panic!("publish answered {other}: {body}"),
        }
    }
    let refusal = refusal.expect("the 1 MiB disk filled up");
    assert!(!accepted.is_empty());
    assert!(
        refusal["error"].as_str().unwrap().contains("disk is full"),
        "{refusal}"
    );
    let (status, health) = healthz(&server).await;
    assert_eq!(status, 503);
    assert!(
        health["error"].as_str().unwrap().contains("disk is full"),
        "{health}"
    );
    // The subscriber got every accepted event, and nothing refused.
    for data in &accepted {
        assert_eq!(&subscriber.expect(WAIT).await.data, data);
    }

    // Space comes back: publishing resumes, on the same subscriber stream.
    disk.resize("16m");
    let (status, body, _) = publish(&server, "after the disk was freed").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        subscriber.expect(WAIT).await.data,
        "after the disk was freed"
    );
    assert_eq!(healthz(&server).await.0, 200);
    accepted.push("after the disk was freed".to_owned());
    drop(subscriber);
    let addr = server.addr.to_string();
    assert!(server.terminate().await.success());

    // What was accepted, and only that, is there after a restart.
    let server = BinaryServer::start(&addr, &args).await;
    wait_until_serving(&server).await;
    let mut replay = EventReader::open(&server.url("/sse?topic=t"), Some("0-0")).await;
    assert_eq!(replay.expect(WAIT).await.event, "too-old");
    for data in &accepted {
        assert_eq!(&replay.expect(WAIT).await.data, data);
    }
    assert!(server.terminate().await.success());
}
