//! Ports for servers a test starts by address: below the kernel's ephemeral range, and never
//! the same one twice in a test binary.
//!
//! Why not port 0's answer: a port the kernel hands out for `bind(0)` and takes back is one it
//! may hand out again at once, as the local port of one of the many outgoing connections the
//! tests open or to another test's listener. A child server then either fails to bind or, worse,
//! the test's readiness probe reaches the other test's server and the test talks to it. Ports
//! from 20,000 to 32,767 are never handed out by the kernel (its ephemeral range starts at
//! 32,768 here and by default), so only this counter gives them out.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 20_000;
const SPAN: u32 = 12_000;

/// A port nothing listens on now and no other caller in this process will be given.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one at a time, but a start that differs per process keeps a leftover
    // child of an earlier run out of the way too.
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start + n) % SPAN;
        let port = u16::try_from(port).expect("FIRST + SPAN is below 65,536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + SPAN);
}
