//! The sample nginx configuration (`deploy/nginx/sse.conf`) in front of
//! three instances on one Redis, run for real: a private nginx on a free
//! port, its configuration derived from the sample with the ports replaced.

use std::{path::Path, process::Stdio, time::Duration};

use tokio::process::{Child, Command};

use crate::{
    redis::{expect_nothing_more, free_port, instances, program, RedisServer, WAIT},
    support::{metric, publish, BinaryServer, EventReader},
};

/// The sample, as shipped.
const SAMPLE: &str = include_str!("../../../deploy/nginx/sse.conf");
/// The instance addresses and the listen directive the sample uses.
const SAMPLE_UPSTREAMS: [&str; 3] = ["127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003"];
const SAMPLE_LISTEN: &str = "listen 8080;";

/// A private nginx, one process (`master_process off`), so dropping the
/// child stops it.
pub struct Nginx {
    port: u16,
    _child: Child,
}

impl Nginx {
    /// nginx with the sample configuration, as shipped.
    pub async fn start(dir: &Path, upstreams: &[&BinaryServer]) -> Self {
        Self::start_with(dir, upstreams, |site| site).await
    }

    /// nginx with the sample configuration changed by `edit` (to test a
    /// misconfiguration), applied after the ports are replaced.
    pub async fn start_with(
        dir: &Path,
        upstreams: &[&BinaryServer],
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let port = free_port();
        let mut site = SAMPLE.to_owned();
        for (sample, server) in SAMPLE_UPSTREAMS.iter().zip(upstreams) {
            assert!(site.contains(sample), "the sample names {sample}");
            site = site.replace(sample, &server.addr.to_string());
        }
        assert!(
            site.contains(SAMPLE_LISTEN),
            "the sample has `{SAMPLE_LISTEN}`"
        );
        site = site.replace(SAMPLE_LISTEN, &format!("listen 127.0.0.1:{port};"));
        let site = edit(site);
        let dir = dir.display();
        // What Debian's /etc/nginx/nginx.conf provides around conf.d/*.conf,
        // with every path in the temporary folder.
        let main = format!(
            "daemon off;\n\
             master_process off;\n\
             pid {dir}/nginx.pid;\n\
             error_log {dir}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
                 access_log {dir}/access.log;\n\
                 client_body_temp_path {dir}/client_body;\n\
                 proxy_temp_path {dir}/proxy;\n\
                 fastcgi_temp_path {dir}/fastcgi;\n\
                 uwsgi_temp_path {dir}/uwsgi;\n\
                 scgi_temp_path {dir}/scgi;\n\
                 include {dir}/sse.conf;\n\
             }}\n"
        );
        std::fs::write(format!("{dir}/sse.conf"), site).unwrap();
        std::fs::write(format!("{dir}/nginx.conf"), main).unwrap();
        let child = Command::new(program("nginx", "/usr/sbin/nginx", "nginx"))
            .args(["-p", &dir.to_string()])
            .args(["-e", &format!("{dir}/error.log")])
            .args(["-c", &format!("{dir}/nginx.conf")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nginx");
        let nginx = Self {
            port,
            _child: child,
        };
        let up = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(response) = reqwest::get(nginx.url("/healthz")).await {
                    if response.status() == 200 {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            up.is_ok(),
            "nginx did not proxy /healthz; see {dir}/error.log:\n{}",
            std::fs::read_to_string(format!("{dir}/error.log")).unwrap_or_default()
        );
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_nginx_config_spreads_streams_and_every_event_reaches_all() {
    let redis_dir = tempfile::tempdir().unwrap();
    let nginx_dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(redis_dir.path(), &[]).await;
    let servers = instances(3, &redis.url(), &[]).await;
    let nginx = Nginx::start(nginx_dir.path(), &servers.iter().collect::<Vec<_>>()).await;
    let mut readers = Vec::new();
    for _ in 0..6 {
        let reader = EventReader::open(&nginx.url("/sse?topic=t"), None).await;
        let headers = reader.response().headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers["cache-control"], "no-cache");
        readers.push(reader);
    }
    // Round robin put streams on every instance.
    for (n, server) in servers.iter().enumerate() {
        assert!(
            metric(&server.url(""), "sse_clients").await >= 1,
            "no stream reached instance {n}"
        );
    }
    let mut published = Vec::new();
    for i in 0..6 {
        let data = format!("through nginx {i}");
        let id = publish(&nginx.url(""), "t", "message", &data).await;
        published.push((id, data));
    }
    for (n, reader) in readers.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..published.len() {
            let event = reader.expect(WAIT).await;
            got.push((event.id, event.data));
        }
        assert_eq!(got, published, "stream {n} through nginx");
    }
    // Resuming through nginx lands on any instance and gets the rest.
    let mut resumed = EventReader::open(&nginx.url("/sse?topic=t"), Some(&published[2].0)).await;
    for expected in &published[3..] {
        let event = resumed.expect(WAIT).await;
        assert_eq!((&event.id, &event.data), (&expected.0, &expected.1));
    }
    readers.push(resumed);
    expect_nothing_more(&mut readers, &servers[0], "t").await;
}
