//! `GET /sluice.js`: the embedded browser client, byte for byte the file in `clients/js`, with a
//! strong `ETag` that answers `If-None-Match` with 304.

#![allow(clippy::unwrap_used)]

mod support;

#[tokio::test]
async fn the_client_is_served_cacheable_with_a_strong_etag() {
    let server = support::Server::spawn(&[]);
    let client = support::http();
    let response = client.get(server.url("/sluice.js")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert!(header(&response, "cache-control").is_some());
    let etag = header(&response, "etag").unwrap();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "a strong ETag: {etag}"
    );
    let body = response.text().await.unwrap();
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/js/sluice.js"),
    )
    .unwrap();
    assert_eq!(body, file);
    assert!(body.contains("export class Sluice"));

    let again = client
        .get(server.url("/sluice.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag").as_deref(), Some(etag.as_str()));
    assert!(again.text().await.unwrap().is_empty());

    let other = client
        .get(server.url("/sluice.js"))
        .header("if-none-match", "\"0000000000000000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}
