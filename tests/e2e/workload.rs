//! The request mix the profile-guided release build is trained on (`vault-workload`, run
//! by `scripts/build-release`): a profile only helps the paths it saw, so every request of
//! the mix must get the answer it expects from today's gateway.

use std::net::SocketAddr;

use vault_core::keys::Scope;
use vault_e2e::{TestApp, Upstream};
use vault_workload::{Kind, Phase, Plan};

fn address(app: &TestApp) -> SocketAddr {
    app.url.trim_start_matches("http://").parse().unwrap()
}

fn small_plan() -> Plan {
    Plan { phases: vec![Phase { connections: 1, requests: 40 }, Phase { connections: 8, requests: 160 }] }
}

#[tokio::test]
async fn every_request_of_the_training_mix_gets_the_answer_it_expects() {
    let app = TestApp::spawn().await;
    let key = app.create_key(Scope::User).await;
    let model = vault_workload::first_model(address(&app), &key).await.unwrap();
    let report = vault_workload::run(address(&app), &key, &model, &small_plan()).await.unwrap();

    assert_eq!(report.total(), 200);
    let kinds: Vec<Kind> = report.tallies.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds, Kind::ALL);
    for (kind, tally) in &report.tallies {
        assert_eq!(tally.unexpected, 0, "{}: {:?}", kind.name(), tally.first_unexpected);
        assert!(tally.expected > 0, "no {} was sent", kind.name());
    }
}

#[tokio::test]
async fn answers_a_gateway_gives_without_its_engine_count_as_unexpected() {
    // Nothing listens on port 9 of loopback: every generation fails, refusals still work.
    let app = TestApp::spawn_with(Upstream::Url("http://127.0.0.1:9".into()), &[]).await;
    let key = app.create_key(Scope::User).await;
    let report = vault_workload::run(address(&app), &key, "any-model", &small_plan()).await.unwrap();

    let tally = |wanted: Kind| report.tallies.iter().find(|(kind, _)| *kind == wanted).unwrap().1.clone();
    let chat = tally(Kind::Chat);
    assert_eq!(chat.expected, 0);
    assert!(chat.unexpected > 0);
    assert!(chat.first_unexpected.unwrap().starts_with("503"), "the first failed chat names its status");
    assert_eq!(tally(Kind::WrongKey).unexpected, 0);
    assert_eq!(tally(Kind::NotJson).unexpected, 0);
    assert!(vault_workload::first_model(address(&app), &key).await.is_err(), "no model to train on");
}
