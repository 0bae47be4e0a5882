//! Regression mode and CSV of the `sluice-loadtest` binary: a listening run against a tiny SSE
//! server in this test writes `--out` JSON; compared with itself it passes, compared with a
//! doctored baseline (a connect time far lower than any real one) it exits with status 4, and
//! a baseline of another mode is refused with status 3. `--format csv` prints a header and a row.
//!
//! No timing assertions: the doctored figure is 1 ns, below anything a connection can take.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A server whose every `GET` is an event stream ticking every 20 ms, with ids.
fn ticking_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(socket.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
                if socket.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for id in 1.. {
                    let event = format!("id: {id}\ndata: tick\n\n");
                    if socket.write_all(event.as_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
    });
    addr
}

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice-loadtest"))
        .args(args)
        .output()
        .expect("the harness runs")
}

fn listen(addr: SocketAddr, extra: &[&str]) -> Output {
    let sub = format!("http://{addr}/events");
    let mut args = vec![
        "run", "--target", "custom", "--sub", &sub, "-c", "5", "-d", "1s", "--quiet",
    ];
    args.extend_from_slice(extra);
    harness(&args)
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!("{name}-{}.json", std::process::id()))
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).expect("a results file")
}

#[test]
fn a_doctored_baseline_fails_with_status_4() {
    let server = ticking_server();
    let baseline = scratch("baseline");
    let first = listen(server, &["--out", baseline.to_str().expect("utf-8")]);
    assert_eq!(first.status.code(), Some(0), "{first:?}");

    // Against itself with a threshold no noise reaches: passes, and the table is printed.
    let same = listen(
        server,
        &[
            "--baseline",
            baseline.to_str().expect("utf-8"),
            "--max-regress",
            "1000000000",
        ],
    );
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    assert!(String::from_utf8_lossy(&same.stderr).contains("connect_p99_ms"));

    // A connect time of 1 ns in the baseline: any real run is far worse.
    let mut doctored: serde_json::Value = serde_json::from_str(&text(&baseline)).expect("json");
    doctored["runs"][0]["connections"]["connect_ms"]["p99"] = serde_json::json!(0.000001);
    let doctored_path = scratch("doctored");
    std::fs::write(&doctored_path, doctored.to_string()).expect("write");
    let worse = listen(
        server,
        &[
            "--baseline",
            doctored_path.to_str().expect("utf-8"),
            "--max-regress",
            "50",
        ],
    );
    assert_eq!(worse.status.code(), Some(4), "{worse:?}");
    let stderr = String::from_utf8_lossy(&worse.stderr);
    assert!(stderr.contains("REGRESSED"), "{stderr}");

    // A baseline of another mode cannot be compared: status 3.
    doctored["mode"] = serde_json::json!("storm");
    std::fs::write(&doctored_path, doctored.to_string()).expect("write");
    let other = listen(
        server,
        &[
            "--baseline",
            doctored_path.to_str().expect("utf-8"),
            "--max-regress",
            "50",
        ],
    );
    assert_eq!(other.status.code(), Some(3), "{other:?}");
    let _ = std::fs::remove_file(baseline);
    let _ = std::fs::remove_file(doctored_path);
}

#[test]
fn csv_has_a_header_and_one_row() {
    let server = ticking_server();
    let out = listen(server, &["--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("target,transport,connections,"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("custom,sse,5,"), "{stdout}");
    assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
}
