//! Bodies stream through without being buffered: 100 MiB up and 100 MiB down while the
//! Tollgate process's peak RSS grows by less than 20 MiB.

use http_body_util::BodyExt;

use crate::support::*;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn hundred_mib_up_and_down_in_bounded_memory() {
    let echo = Echo::start().await;
    let routes = "[[routes]]\npath = \"/stream/**\"\nauth = \"public\"\n";
    let gate = GateProcess::spawn(&config(&echo.url(), routes), "");

    // Warm up (pools, allocator arenas), then measure from here.
    let warm = send(
        http::Request::post(gate.url("/stream/up"))
            .body(Repeat::new(4 * MIB).boxed())
            .unwrap(),
    )
    .await;
    assert_eq!(warm.json()["received"], 4 * MIB);
    gate.reset_peak();
    let (base_rss, _) = gate.memory_kib();

    let up = send(
        http::Request::post(gate.url("/stream/up"))
            .body(Repeat::new(100 * MIB).boxed())
            .unwrap(),
    )
    .await;
    assert_eq!(up.status, 200);
    assert_eq!(up.json()["received"], 100 * MIB, "upload truncated");

    let resp = open(&gate.url(&format!("/stream/down?bytes={}", 100 * MIB))).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame.unwrap().into_data() {
            received += d.len() as u64;
        }
    }
    assert_eq!(received, 100 * MIB, "download truncated");

    let (_, peak) = gate.memory_kib();
    let growth_kib = peak.saturating_sub(base_rss);
    eprintln!("RSS base {base_rss} KiB, peak {peak} KiB, growth {growth_kib} KiB");
    assert!(growth_kib < 20 * 1024, "peak RSS grew by {growth_kib} KiB");
}
