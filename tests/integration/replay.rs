use prl_integration_tests::{TestApp, quick_spec};
use serde_json::Value;
use std::time::Duration;

/// Every projection table as JSON, in a stable order.
pub(crate) async fn snapshot(app: &TestApp) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for table in prl_api::projections::TABLES {
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]') FROM {table} t"
        );
        let rows: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&app.pool)
            .await
            .unwrap();
        out.push((table.to_string(), rows));
    }
    out
}

#[tokio::test]
async fn replay_rebuilds_exactly_the_incrementally_built_projections() {
    let app = TestApp::spawn().await;
    let _daemon = app.start_daemon("daemon", Duration::from_millis(10));
    let done = app.submit(&quick_spec("completes")).await;
    app.wait_for_status(done, "completed", Duration::from_secs(60))
        .await;
    let cancelled = app.submit(&quick_spec("cancelled")).await;
    app.cancel(cancelled, None).await;
    app.wait_for_status(cancelled, "cancelled", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = snapshot(&app).await;
    assert!(
        before
            .iter()
            .any(|(t, rows)| t == "run_metrics" && rows.as_array().unwrap().len() > 5)
    );
    let applied = prl_api::projections::replay::replay(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        applied as i64,
        app.count("SELECT count(*) FROM events").await
    );
    let after = snapshot(&app).await;
    for ((table, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(old, new, "{table} differs after replay");
    }
}
