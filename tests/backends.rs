//! The state backend the suite runs on is the one it claims: `.leo/state.db` with SQLite, a
//! PostgreSQL database (and no state file) with `LEO_TEST_STATE=postgres`.

use leo_e2e::{diamond, state_on_postgres, Sandbox};

#[test]
fn the_run_state_lives_in_the_configured_backend() {
    let sb = Sandbox::new();
    diamond(&sb, 2, false, false);
    sb.leo_ok(&["run", "diamond.toml"]);
    assert_eq!(sb.status(None)["run"]["status"], "succeeded");
    let state_file = sb.path().join(".leo/state.db");
    if state_on_postgres() {
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
    } else {
        assert!(state_file.exists());
    }
}
