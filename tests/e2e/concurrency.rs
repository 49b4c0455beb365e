//! Many requests at once while the CLI writes to the same database.

use std::collections::HashSet;

use vault_e2e::{FakeVllm, Gateway, client};

use crate::support::chat_body;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_during_cli_key_churn_all_succeed_and_are_audited() {
    let fake = FakeVllm::start().await;
    let gateway = std::sync::Arc::new(Gateway::start(&fake.url).await);
    let key = gateway.create_key("user").await;
    let before = gateway.audit_count().await;

    let churn = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                let created = gateway.create_key("user").await;
                let out = gateway.cli(&["revoke-key", &created]).await;
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        })
    };
    let http = client();
    let requests = (0..200).map(|i| {
        let http = http.clone();
        let url = format!("{}/v1/chat/completions", gateway.url);
        let key = key.clone();
        async move {
            let id = format!("load-{i}");
            let response = http
                .post(url)
                .bearer_auth(key)
                .header("x-request-id", &id)
                .json(&chat_body(i % 2 == 0))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            (id, status, body)
        }
    });
    let results = futures_util::future::join_all(requests).await;
    churn.await.unwrap();

    for (id, status, body) in &results {
        assert_eq!(*status, 200, "{id}: {body}");
        assert!(!body.contains("locked"), "{id}: {body}");
    }
    let mut seen = HashSet::new();
    for (id, _, _) in &results {
        let row = gateway.audit_row(id).await.unwrap_or_else(|| panic!("{id} has no audit row"));
        assert_eq!(row.status, 200);
        seen.insert(row.request_id);
    }
    assert_eq!(seen.len(), 200);
    assert!(gateway.audit_count().await >= before + 200);
}
