//! `GET /openapi.json`: the description of the HTTP API. (Its conformance
//! with the server is checked by schemathesis, in the external tests.)

use crate::support::TestServer;

#[tokio::test]
async fn openapi_describes_every_route() {
    let server = TestServer::start(&[]).await;
    let response = reqwest::get(server.url("/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let spec: serde_json::Value = response.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    for (path, methods) in [
        ("/", &["get"][..]),
        ("/sse", &["get"]),
        ("/publish", &["post", "put"]),
        ("/healthz", &["get"]),
        ("/metrics", &["get"]),
        ("/stats", &["get"]),
        ("/openapi.json", &["get"]),
    ] {
        for method in methods {
            let operation = &spec["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is not described");
            let described = reqwest::Client::new()
                .request(method.to_uppercase().parse().unwrap(), server.url(path))
                .send()
                .await
                .unwrap();
            // Every route described exists (no 404 or 405 for it).
            assert!(
                ![404, 405].contains(&described.status().as_u16()),
                "{method} {path}: {}",
                described.status()
            );
        }
    }
    server.stop().await;
}
