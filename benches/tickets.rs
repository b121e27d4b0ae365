//! Offline verification of a ticket code (API.md §12): what a scanner holding only the public
//! key does per scan, the Ed25519 check over `bo1.<payload>` and the payload read. Target:
//! ≤ 100 µs a code (docs/BENCHMARKS.md).
//!
//! Run: `cargo bench --bench tickets`.

use boxoffice::domain::ticket::{verify, CodeClaims, TicketKeys};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn offline_verification(c: &mut Criterion) {
    let keys = TicketKeys::from_seed([42; 32]);
    let claims = CodeClaims {
        t: 1_099_511_627_777,
        s: 12,
        e: 40_000,
        v: 3,
        i: 1_800_000_000,
    };
    let code = keys.sign(&claims);
    let public = keys.verifying_key();
    c.bench_function("verify_ticket_code_offline", |b| {
        b.iter(|| verify(black_box(&public), black_box(&code)).expect("a valid code"))
    });
    c.bench_function("sign_ticket_code", |b| {
        b.iter(|| keys.sign(black_box(&claims)))
    });
}

criterion_group!(benches, offline_verification);
criterion_main!(benches);
