//! Real-browser tests of the two embedded pages, the dashboard (`GET /`) and the chat (`GET
//! /chat`), of the three transports (EventSource, WebSocket, long polling) from a page, and of
//! the browser client `sluice.js` (tabs sharing a stream, a frozen leader tab, token refresh,
//! reset after a restart of the hub): each test starts the real `sluice` binary and runs one
//! Node script from `tests/browser/` against it, which drives Debian's headless Chromium with
//! playwright-core.
//!
//! The scripts own the browser side (what is clicked and checked, screenshots into
//! `<target>/screenshots/`); `support::browser::run_script` checks the prerequisites, starts the
//! server, runs the script with a time limit and reports its output. Missing prerequisites fail
//! the test with the command that installs them: a browser test that skips itself silently tests
//! nothing.

mod support;

use support::browser::{run_script, Script};
use support::server::{free_port, temp_file};
use support::Server;

#[test]
fn dashboard_in_a_browser() {
    // A short interval, so the charts get several live samples within a second or two.
    run_script("dashboard.mjs", &["--metrics-interval", "250ms"]);
}

#[test]
fn chat_in_a_browser() {
    run_script("chat.mjs", &[]);
}

#[test]
fn sse_websocket_and_long_polling_in_a_browser() {
    run_script("transports.mjs", &["--workers", "2"]);
}

#[test]
fn sluice_js_shares_one_stream_across_tabs_and_refreshes_tokens() {
    // The secret tests/browser/client.mjs signs its tokens with.
    run_script(
        "client.mjs",
        &[
            "--workers",
            "2",
            "--jwt-secret",
            "browser-client-test-secret-0123456789",
        ],
    );
}

#[test]
fn sluice_js_hands_reset_to_the_app_after_a_restart_of_the_memory_store() {
    // Both runs listen on one port, as a restarted hub would; the page's client reconnects to
    // the second with an id of the first.
    let listen = format!("127.0.0.1:{}", free_port());
    let args = ["--listen", listen.as_str(), "--metrics-interval", "1h"];
    let first = Server::spawn(&args);
    let ready = temp_file("reset-ready", b"");
    std::fs::remove_file(&ready).expect("remove the marker before the script creates it");
    let marker = ready.to_str().expect("a UTF-8 temporary path");
    let script = Script::start("reset.mjs", &first.url(""), &[marker]).wait_for_file(&ready);
    // SIGTERM, as a restart would: the memory store goes with the process.
    drop(first);
    let second = Server::spawn(&args);
    // The script publishes the three events once it sees the new run (a new epoch in /stats).
    script.finish();
    drop(second);
    let _ = std::fs::remove_file(&ready);
}

#[test]
fn ten_event_sources_over_https_and_http2_in_a_browser() {
    // A self-signed certificate for localhost; the script launches Chromium ignoring
    // certificate errors, which still negotiates TLS and ALPN as for a trusted one.
    let dir = std::env::temp_dir().join(format!("sluice-browser-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the certificate directory");
    let key = rcgen::KeyPair::generate().expect("a key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .and_then(|params| params.self_signed(&key))
        .expect("a certificate");
    std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write the certificate");
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write the key");
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    let server = support::Server::spawn(&["--tls-cert", &cert, "--tls-key", &key]);
    let base = format!("https://localhost:{}", server.addr.port());
    support::browser::run_script_against("h2streams.mjs", &base);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
