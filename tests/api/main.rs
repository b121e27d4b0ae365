//! Integration tests: the real application on port 0, a fresh database per test, on both stores.

mod helpers;
#[path = "../support/ports.rs"]
mod ports;

mod admin;
mod audit;
mod auth;
mod balance;
mod body_limit;
mod cancel_performance;
mod concerts;
mod concurrency;
mod document;
mod errors;
mod eviction;
mod faults;
mod hygiene;
mod idempotency;
mod limits;
mod live;
mod opening;
mod operations;
mod payments;
mod pipeline;
mod pow;
mod process;
mod queue;
mod queue_scale;
mod refunds;
mod reservations;
mod restart;
mod seat_plan;
mod survival;
mod tickets;
mod waitlist;
mod web;
