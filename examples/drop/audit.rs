//! The service's own audit (API.md §12, `GET /v1/admin/schedules/{id}/audit`) of each schedule
//! the drop sold, as verdicts beside the generator's SQL checks: the service's SQL and the
//! generator's must agree that the run sold every seat once and kept every balance.

use crate::invariants::{Check, Verdict};
use reqwest::Client;
use serde_json::Value;

/// One verdict per schedule: holds when every check of the audit is ok.
pub async fn checks(client: &Client, base: &str, key: &str, schedules: &[i64]) -> Vec<Check> {
    let mut checks = Vec::with_capacity(schedules.len());
    for &schedule in schedules {
        let url = format!("{base}/v1/admin/schedules/{schedule}/audit");
        let answer = client.get(url).header("X-Admin-Key", key).send().await;
        let report: Result<Value, String> = match answer {
            Ok(r) if r.status().is_success() => r.json().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        checks.push(match report {
            Ok(report) => {
                let ok = report["ok"] == true;
                let broken: Vec<&str> = report
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(_, v)| v.get("ok").is_some_and(|ok| ok == false))
                            .map(|(k, _)| k.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let detail = if ok {
                    format!(
                        "schedule {schedule}: every check ok, {} sold",
                        report["sold"]
                    )
                } else {
                    format!("schedule {schedule}: not ok: {}", broken.join(", "))
                };
                ("the service's audit", Verdict::of(ok), detail)
            }
            Err(e) => (
                "the service's audit",
                Verdict::Fails,
                format!("schedule {schedule}: {e}"),
            ),
        });
    }
    checks
}
