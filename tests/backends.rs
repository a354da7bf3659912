//! The storage the suite runs on is the one it claims: `.leo/state.db` and `.leo/store` by
//! default; with `LEO_TEST_STORAGE=team`, a PostgreSQL database and an S3 bucket, and neither a
//! state file nor a local store.

use leo_e2e::{diamond, team_storage, Sandbox};

#[test]
fn the_run_state_lives_in_the_configured_backend() {
    let sb = Sandbox::new();
    diamond(&sb, 2, false, false);
    sb.leo_ok(&["run", "diamond.toml"]);
    assert_eq!(sb.status(None)["run"]["status"], "succeeded");
    let state_file = sb.path().join(".leo/state.db");
    if team_storage() {
        let url = sb.state_url().expect("a PostgreSQL URL");
        assert!(url.starts_with("postgres://"));
        assert!(!state_file.exists(), "state went to a file, not PostgreSQL");
        // The same database seen through --state instead of the environment.
        let listed = sb
            .cmd(&["list", "--json", "--state", url])
            .env_remove("LEO_STATE_URL")
            .output()
            .expect("leo list");
        assert!(listed.status.success());
        let runs: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("json");
        assert_eq!(runs.as_array().map(Vec::len), Some(1));
        assert!(
            !sb.path().join(".leo/store").exists(),
            "artifacts went to a local store"
        );
        let manifests = std::fs::read_dir(sb.store_root().join("manifests/sha256"))
            .expect("manifests in the S3 bucket")
            .count();
        assert!(manifests >= 4, "only {manifests} manifests in the bucket");
        let status = sb.status(None);
        assert!(status["run"]["store_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("s3://")));
    } else {
        assert!(state_file.exists());
        assert!(sb.store_root().join("manifests/sha256").exists());
    }
}
