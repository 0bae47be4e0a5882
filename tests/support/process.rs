//! Child processes of the tests (the server, a Node script): reading their pipes so they never
//! block on a full one, waiting with a deadline, and stopping them by PID: SIGTERM first, so the
//! process can shut down as it would in production, then SIGKILL if it lingers.

use std::io::Read;
use std::process::{Child, Command, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a wait polls the child.
const POLL: Duration = Duration::from_millis(10);

/// Reads a pipe to its end on a thread, so the child never blocks on a full pipe.
pub fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for the child to exit until `deadline`; `None` if it is still running then.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().expect("poll a child process") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// Sends SIGTERM, waits up to `grace` for the exit, then SIGKILLs and reaps. Returns the exit
/// status when the child exited within the grace period.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let _ = Command::new("kill")
        .arg("-s")
        .arg("TERM")
        .arg(child.id().to_string())
        .status();
    if let Some(status) = wait_until(child, Instant::now() + grace) {
        return Some(status);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
