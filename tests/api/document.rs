//! The OpenAPI document says what the service accepts (issue 15, §3.9): each bound it declares
//! is the service's own — the value at the bound is accepted, the one past it refused — and a
//! 405 names its path's methods in `Allow` (RFC 9110). CI's schemathesis run fuzzes the same
//! promises; these tests pin them without Python.

use crate::helpers::*;
use reqwest::{Method, Response};
use serde_json::{json, Value};
use std::collections::BTreeSet;

const MAX_SEATS: u32 = 3;
const MAX_RECHARGE: i64 = 5_000;

async fn app() -> TestApp {
    spawn_app_with(TestDb::create(Backend::Sqlite).await, |s| {
        s.engine.max_seats_per_user = MAX_SEATS;
        s.engine.max_recharge = boxoffice::domain::Money::new(MAX_RECHARGE).expect("positive");
    })
    .await
}

async fn document(app: &TestApp) -> Value {
    let response = app.get("/openapi.json", None).await;
    assert_eq!(response.status().as_u16(), 200);
    body(response).await
}

/// Every 405 carries `Allow` with exactly the methods the document lists for its path.
#[actix_web::test]
async fn a_405_lists_the_methods_of_its_path() {
    let app = app().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        let documented: BTreeSet<String> = item
            .as_object()
            .expect("a path item")
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        let concrete = path
            .split('/')
            .map(|part| if part.starts_with('{') { "1" } else { part })
            .collect::<Vec<_>>()
            .join("/");
        let response = app
            .client
            .request(Method::PATCH, app.url(&concrete))
            .send()
            .await
            .expect("request sent");
        let allow = response
            .headers()
            .get("allow")
            .unwrap_or_else(|| panic!("PATCH {concrete}: no Allow"))
            .to_str()
            .expect("ASCII")
            .to_string();
        let allowed: BTreeSet<String> = allow.split(", ").map(str::to_string).collect();
        assert_eq!(allowed, documented, "PATCH {concrete}: Allow: {allow}");
        assert_error(response, 405, "method_not_allowed", "method not allowed").await;
    }
    assert!(paths.len() >= 17, "every path was tried");
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]["properties"]
}

/// The schema of parameter `name` of `method path`.
fn param<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| &p["schema"])
        .unwrap_or_else(|| panic!("{method} {path} has no {name}"))
}

async fn admin(app: &TestApp, path: &str, body: Value) -> Response {
    app.client
        .post(app.url(path))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

async fn status(response: Response) -> u16 {
    response.status().as_u16()
}

/// What the document declares, as numbers.
#[actix_web::test]
async fn the_document_declares_every_bound() {
    let app = app().await;
    let doc = document(&app).await;
    let ids = ["userId", "concertId", "scheduleId", "reservationId"];
    let mut named = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().expect("a name");
                if ids.contains(&name) {
                    assert_eq!(p["schema"]["minimum"], 1, "{method} {path} {name}");
                    named += 1;
                }
                if name == "Idempotency-Key" {
                    let s = &p["schema"];
                    assert_eq!((&s["minLength"], &s["maxLength"]), (&json!(1), &json!(255)));
                    assert_eq!(s["pattern"], "^[!-~]+$", "{method} {path}");
                }
            }
        }
    }
    assert!(named >= 15, "{named} id parameters");
    let history = "/v1/balance/users/{userId}/history";
    let limit = param(&doc, "get", history, "limit");
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&json!(1), &json!(100))
    );
    assert_eq!(param(&doc, "get", history, "before")["minimum"], 1);

    let reserve = schema(&doc, "ReserveRequest");
    for id in ["userId", "concertId", "scheduleId"] {
        assert_eq!(reserve[id]["minimum"], 1, "{id}");
    }
    let seats = &reserve["seatIds"];
    assert_eq!(seats["minItems"], 1);
    assert_eq!(seats["maxItems"], MAX_SEATS, "the configured limit");
    assert_eq!(seats["uniqueItems"], true);
    assert_eq!(seats["items"]["minimum"], 1);
    assert_eq!(schema(&doc, "PayRequest")["reservationId"]["minimum"], 1);
    let amount = &schema(&doc, "RechargeRequest")["amount"];
    assert_eq!(
        (&amount["minimum"], &amount["maximum"]),
        (&json!(1), &json!(MAX_RECHARGE))
    );

    let user = schema(&doc, "CreateUserRequest");
    assert_eq!(user["balance"]["minimum"], 0);
    let concert = schema(&doc, "CreateConcertRequest");
    assert_eq!(user["name"]["pattern"], concert["name"]["pattern"]);
    let schedules = &concert["schedules"];
    assert_eq!(
        (&schedules["minItems"], &schedules["maxItems"]),
        (&json!(1), &json!(100))
    );
    let schedule = schema(&doc, "ScheduleRequest");
    assert!(schedule["concertAt"]["pattern"].is_string());
    assert_eq!(
        schedule["reservationAt"]["pattern"],
        schedule["concertAt"]["pattern"]
    );
    let seats = &schedule["seats"];
    assert_eq!(
        (&seats["minItems"], &seats["maxItems"]),
        (&json!(1), &json!(20_000))
    );
    let price = &schema(&doc, "SeatRequest")["price"];
    assert_eq!(
        (&price["minimum"], &price["maximum"]),
        (&json!(0), &json!(10_000_000_000_i64))
    );
}

/// At each bound the service accepts, one past it it refuses with 400 — and an integer written
/// `7.0` is the integer JSON Schema says it is.
#[actix_web::test]
async fn the_service_accepts_exactly_what_the_document_declares() {
    let app = app().await;
    let user = app.create_user(0).await;
    let token = app.active_token(user).await;
    let concert = app.create_concert(5, 1_000).await;

    let history = |query: &str| format!("/v1/balance/users/{user}/history?{query}");
    for (query, expected) in [
        ("limit=1", 200),
        ("limit=100", 200),
        ("limit=0", 400),
        ("limit=101", 400),
        ("before=1", 200),
        ("before=0", 400),
    ] {
        assert_eq!(
            status(app.get(&history(query), None).await).await,
            expected,
            "{query}"
        );
    }
    assert_eq!(
        status(app.get("/v1/balance/users/0", None).await).await,
        400
    );

    for (amount, expected) in [
        (json!(1), 200),
        (json!(MAX_RECHARGE), 200),
        (json!(7.0), 200),
        (json!(0), 400),
        (json!(MAX_RECHARGE + 1), 400),
    ] {
        assert_eq!(
            status(app.recharge(user, amount.clone()).await).await,
            expected,
            "{amount}"
        );
    }
    let recharge = format!("/v1/balance/users/{user}/recharge");
    for (key, expected) in [
        ("!".repeat(255), 200),
        ("!".repeat(256), 400),
        ("a b".into(), 400),
    ] {
        let response = app
            .client
            .post(app.url(&recharge))
            .header("Idempotency-Key", &key)
            .json(&json!({ "amount": 1 }))
            .send()
            .await
            .expect("request sent");
        assert_eq!(
            status(response).await,
            expected,
            "key of {} bytes",
            key.len()
        );
    }

    let reserve = |seats: Value| json!({ "userId": user, "concertId": concert.id, "scheduleId": concert.schedule, "seatIds": seats });
    let s = &concert.seats;
    for (seats, expected) in [
        (json!([]), 400),
        (json!([0]), 400),
        (json!([s[0], s[1], s[2], s[3]]), 400),
        (json!([s[0] as f64, s[1], s[2]]), 201),
    ] {
        let response = app
            .post("/v1/reservations", Some(token), reserve(seats.clone()))
            .await;
        assert_eq!(status(response).await, expected, "{seats}");
    }
    let paying = json!({ "reservationId": 0 });
    let response = app
        .post(&format!("/v1/payments/users/{user}"), Some(token), paying)
        .await;
    assert_eq!(status(response).await, 400);

    let longest = "a".repeat(200);
    for (name, expected) in [
        (longest.clone(), 201),
        (format!("  {longest}\u{3000}"), 201),
        ("a".repeat(201), 400),
        (" \u{85} ".into(), 400),
        ("a\0b".into(), 400),
    ] {
        let response = admin(&app, "/v1/admin/users", json!({ "name": name })).await;
        assert_eq!(
            status(response).await,
            expected,
            "a name of {} chars",
            name.len()
        );
    }
    for (balance, expected) in [(i64::MAX, 201), (-1, 400)] {
        let response = admin(
            &app,
            "/v1/admin/users",
            json!({ "name": "n", "balance": balance }),
        )
        .await;
        assert_eq!(status(response).await, expected, "{balance}");
    }
    let concert_with = |price: i64| {
        json!({ "name": "c", "schedules": [{ "concertAt": "2099-01-01T20:00:00",
            "reservationAt": "2020-01-01T00:00:00", "seats": [{ "seatNumber": 1, "price": price }] }] })
    };
    for (price, expected) in [(10_000_000_000_i64, 201), (10_000_000_001, 400)] {
        let response = admin(&app, "/v1/admin/concerts", concert_with(price)).await;
        assert_eq!(status(response).await, expected, "{price}");
    }
}

/// The names pattern says exactly what the service accepts: trimmed of Unicode white space,
/// 1 to 200 characters, no NUL.
#[actix_web::test]
async fn the_name_pattern_is_the_services_rule() {
    let app = app().await;
    let doc = document(&app).await;
    let pattern = schema(&doc, "CreateUserRequest")["name"]["pattern"]
        .as_str()
        .expect("a pattern")
        .to_string();
    let pattern = regex::Regex::new(&pattern).expect("the pattern compiles");
    let samples = [
        "a".to_string(),
        " a ".into(),
        "a".repeat(200),
        "a".repeat(201),
        format!("\u{2003}{}\u{85}", "b".repeat(200)),
        format!("{}c", "b".repeat(200)),
        "".into(),
        " \t\n".into(),
        "\u{85}".into(),
        "\u{3000}x\u{205F}".into(),
        "\u{FEFF}".into(),
        "\u{1C}".into(),
        "a\0".into(),
        "콘서트".into(),
    ];
    for name in samples {
        let accepted = status(admin(&app, "/v1/admin/users", json!({ "name": name })).await).await;
        assert_eq!(
            pattern.is_match(&name),
            accepted == 201,
            "{name:?} answered {accepted}"
        );
    }
}

/// The plan labels' declared bounds are the service's: lengths, coordinates, and a pattern
/// that matches exactly the grades and rows the route accepts.
#[actix_web::test]
async fn the_seat_plan_bounds_are_the_services_rules() {
    let app = app().await;
    let doc = document(&app).await;
    let seat = schema(&doc, "SeatRequest");
    for (field, max) in [("grade", 32), ("row", 8)] {
        assert_eq!(
            (&seat[field]["minLength"], &seat[field]["maxLength"]),
            (&json!(1), &json!(max)),
            "{field}"
        );
    }
    for axis in ["x", "y"] {
        assert_eq!(
            (&seat[axis]["minimum"], &seat[axis]["maximum"]),
            (&json!(0), &json!(999)),
            "{axis}"
        );
        assert_eq!(seat[axis]["type"], "integer", "{axis} is never null");
    }
    assert_eq!(
        doc["components"]["schemas"]["SeatRequest"]["dependentRequired"],
        json!({ "x": ["y"], "y": ["x"] })
    );
    let concert_with = |seat: Value| {
        let mut full = json!({ "seatNumber": 1, "price": 1 });
        for (k, v) in seat.as_object().expect("an object") {
            full[k] = v.clone();
        }
        json!({ "name": "c", "schedules": [{ "concertAt": "2099-01-01T20:00:00",
            "reservationAt": "2020-01-01T00:00:00", "seats": [full] }] })
    };
    for (field, max) in [("grade", 32), ("row", 8)] {
        let pattern = seat[field]["pattern"].as_str().expect("a pattern");
        let pattern = regex::Regex::new(pattern).expect("the pattern compiles");
        let samples = [
            "V".to_string(),
            "V".repeat(max),
            "V".repeat(max + 1),
            "가".repeat(max),
            String::new(),
            " ".into(),
            "A B".into(),
            "\"\\".into(),
            "A\u{0}".into(),
            "\tA".into(),
            "A\u{7F}".into(),
            "\u{9F}".into(),
            "\u{A0}".into(),
            "\u{2028}".into(),
        ];
        for text in samples {
            let accepted = status(
                admin(
                    &app,
                    "/v1/admin/concerts",
                    concert_with(json!({ field: text })),
                )
                .await,
            )
            .await;
            assert_eq!(
                pattern.is_match(&text),
                accepted == 201,
                "{field} {text:?} answered {accepted}"
            );
        }
    }
    for (x, y, expected) in [
        (json!(0), json!(0), 201),
        (json!(999), json!(999), 201),
        (json!(1000), json!(0), 400),
        (json!(0), json!(-1), 400),
        (json!(null), json!(0), 400),
    ] {
        let response = admin(
            &app,
            "/v1/admin/concerts",
            concert_with(json!({ "x": x, "y": y })),
        )
        .await;
        assert_eq!(status(response).await, expected, "x {x}, y {y}");
    }
    let body = schema(&doc, "SeatBody");
    for field in ["seatGrade", "row", "x", "y"] {
        assert!(body[field].is_object(), "the seat map documents {field}");
    }
    let required = &doc["components"]["schemas"]["SeatBody"]["required"];
    assert_eq!(
        required,
        &json!(["seatId", "seatNumber", "seatStatus", "seatPrice"])
    );
}

/// The proof of work at the join (API.md §11): the challenge's shape and bounds are the
/// service's own, and the join documents its header and both refusals.
#[actix_web::test]
async fn the_join_s_proof_of_work_is_documented_as_served() {
    let app = spawn_app_with(TestDb::create(Backend::Sqlite).await, |s| {
        s.join_pow.bits = 28
    })
    .await;
    let doc = document(&app).await;
    let shape = schema(&doc, "ChallengeResponse");
    let bits = &shape["bits"];
    assert_eq!(
        (&bits["minimum"], &bits["maximum"]),
        (&json!(1), &json!(28))
    );
    let pattern = shape["challenge"]["pattern"].as_str().expect("a pattern");
    let issued = body(app.get("/v1/queue/challenge", None).await).await;
    let challenge = issued["challenge"].as_str().expect("a challenge");
    assert!(regex::Regex::new(pattern)
        .expect("the pattern compiles")
        .is_match(challenge));
    assert_eq!(issued["bits"], 28);
    let join = "/v1/queue-tokens/users/{userId}";
    let solution = param(&doc, "post", join, "X-Queue-Pow");
    assert_eq!(solution["type"], "string");
    let pattern = solution["pattern"].as_str().expect("a pattern");
    let pattern = regex::Regex::new(pattern).expect("the pattern compiles");
    assert!(pattern.is_match(&boxoffice::domain::queue::pow::solve(challenge, 4)));
    assert!(!pattern.is_match(&format!("{challenge}.a.b")));
    let header = doc["paths"][join]["post"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "X-Queue-Pow")
        .expect("the header");
    assert_eq!(header["in"], "header");
    assert_ne!(
        header["required"], true,
        "a live token's second click needs none"
    );
    let forbidden = doc["paths"][join]["post"]["responses"]["403"]["description"]
        .as_str()
        .expect("a 403");
    assert!(forbidden.contains("pow_required") && forbidden.contains("pow_invalid"));
    let off = doc["paths"]["/v1/queue/challenge"]["get"]["responses"]["404"]["description"]
        .as_str()
        .expect("a 404");
    assert!(off.contains("--join-pow-bits 0"), "{off}");
}
