//! Bad configuration stops start-up with one clear line naming the variable.

use vault_e2e::binary;

async fn start_with(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(binary("vault-server"))
        .env_clear()
        .env("VAULT_DATA_DIR", dir.path().join("data"))
        .env("VAULT_PORT", "0")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn bad_settings_stop_start_up_with_one_line_naming_the_variable() {
    let cases = [
        ("VAULT_PORT", "70000"),
        ("VLLM_BASE_URL", "not a url"),
        ("VAULT_UPSTREAM_TIMEOUT", "soon"),
        ("VAULT_MODELS_MANIFEST", "/nonexistent/models.json"),
        ("VAULT_DATA_DIR", "/proc/vault-cannot-write-here"),
        ("VAULT_LOG_LEVEL", "info,=[bad"),
    ];
    for (var, value) in cases {
        let (code, stderr) = start_with(&[(var, value)]).await;
        assert_eq!(code, Some(2), "{var}={value}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{var}: {stderr}");
        assert!(lines[0].starts_with(&format!("vault-server: {var}:")), "{var}: {stderr}");
    }
}
