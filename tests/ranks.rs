//! Multi-process stages: `world_size` ranks in one process group, told their rank, the world
//! size and a rendezvous address; rank 0 speaks for the stage, and one failed rank stops all.

use leo_e2e::*;
use serde_json::Value;

fn workflow(sb: &Sandbox, mode: &str, world_size: u32) -> std::path::PathBuf {
    let plugin = repo_root().join("tests/plugins/ranks.py");
    sb.write(
        "ranks.toml",
        format!(
            "[workflow]\nname = \"ranks\"\n[stages.ranks]\nplugin = \"exec:{}\"\n\
             resources = {{ world_size = {world_size} }}\n\
             params = {{ mode = \"{mode}\", dir = \"{}\" }}\n",
            plugin.display(),
            sb.path().display()
        ),
    )
}

fn seen(sb: &Sandbox, rank: u32) -> Value {
    let path = sb.path().join(format!("seen-rank-{rank}.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("rank {rank} left no {}: {e}", path.display()));
    serde_json::from_str(&text).expect("seen-rank JSON")
}

#[test]
fn ranks_rendezvous_and_rank_0_speaks_for_the_stage() {
    let sb = Sandbox::new();
    workflow(&sb, "exchange", 2);
    sb.leo_ok(&["run", "ranks.toml"]);
    let st = sb.status(None);
    let run = st["run"]["id"].as_str().expect("run id").to_string();
    assert_eq!(stage(&st, "ranks")["status"], "succeeded", "{st}");

    let (r0, r1) = (seen(&sb, 0), seen(&sb, 1));
    let rendezvous = r0["rendezvous"].as_str().expect("a rendezvous address");
    let (addr, port) = rendezvous.rsplit_once(':').expect("HOST:PORT");
    assert_eq!(addr, "127.0.0.1");
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "{rendezvous}");
    for (rank, s) in [(0, &r0), (1, &r1)] {
        let rank_text = rank.to_string();
        assert_eq!(s["rank"], rank, "{s}");
        assert_eq!(s["world_size"], 2, "{s}");
        assert_eq!(s["rendezvous"], rendezvous, "{s}");
        let env = &s["env"];
        for (name, want) in [
            ("LEO_RANK", rank_text.as_str()),
            ("RANK", &rank_text),
            ("LOCAL_RANK", &rank_text),
            ("LEO_WORLD_SIZE", "2"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("LEO_RENDEZVOUS", rendezvous),
            ("MASTER_ADDR", addr),
            ("MASTER_PORT", port),
            ("LEO_RUN_ID", &run),
        ] {
            assert_eq!(env[name], want, "rank {rank}: {name} in {s}");
        }
    }
    assert_eq!(r0["invocation_file"], "invocation.json");
    assert_eq!(r1["invocation_file"], "invocation-rank-1.json");

    // A real rendezvous: the two talked over TCP at the address.
    let reply = std::fs::read_to_string(sb.path().join("reply-rank-1.txt")).expect("rank 1 reply");
    assert_eq!(reply, "hello from rank 0");

    // Rank 0's events are the stage's: its output and metric; rank 1's are not.
    let ranks = stage(&st, "ranks");
    assert_eq!(
        ranks["metrics"],
        serde_json::json!({ "ranks": 2.0 }),
        "{ranks}"
    );
    let files = artifact_files(&sb, &output_digest(&st, "ranks", "result"));
    assert_eq!(
        files,
        serde_json::json!({ "result.txt": "rank 0 heard: hello from rank 1" })
    );

    // Rank 1's output is in the log, prefixed; its log event as text, its other events gone.
    let log = sb.leo_ok(&["logs", &run, "ranks"]);
    assert!(
        log.contains("[rank 1] rank 1 heard: hello from rank 0\n"),
        "{log}"
    );
    assert!(
        log.contains("[rank 1] rank 1 says bye on stderr\n"),
        "{log}"
    );
    assert!(
        log.contains("[rank 1] [warn] a log event of rank 1\n"),
        "{log}"
    );
    assert!(!log.contains("not_rank_0"), "{log}");
    assert!(!log.contains("not-rank-0"), "{log}");
}

#[test]
fn single_process_stages_are_rank_0_of_1_without_rendezvous() {
    let sb = Sandbox::new();
    workflow(&sb, "single", 1);
    sb.leo_ok(&["run", "ranks.toml"]);
    let s = seen(&sb, 0);
    assert_eq!(s["rank"], 0, "{s}");
    assert_eq!(s["world_size"], 1, "{s}");
    assert_eq!(s["rendezvous"], Value::Null, "{s}");
    let env = &s["env"];
    for (name, want) in [
        ("LEO_RANK", "0"),
        ("RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("LEO_WORLD_SIZE", "1"),
        ("WORLD_SIZE", "1"),
        ("LOCAL_WORLD_SIZE", "1"),
    ] {
        assert_eq!(env[name], want, "{name} in {s}");
    }
    for name in ["LEO_RENDEZVOUS", "MASTER_ADDR", "MASTER_PORT"] {
        assert_eq!(env[name], Value::Null, "{name} in {s}");
    }
    assert!(!sb.path().join("seen-rank-1.json").exists());
}

#[test]
fn a_failed_rank_fails_the_attempt_and_stops_the_others() {
    let sb = Sandbox::new();
    workflow(&sb, "fail", 2);
    // Rank 0 ignores SIGTERM: it goes only by the SIGKILL after the grace period.
    let out = sb.leo(&["run", "ranks.toml", "--grace", "1"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = sb.status(None);
    let run = st["run"]["id"].as_str().expect("run id").to_string();
    let attempt = &stage(&st, "ranks")["attempt_list"][0];
    assert_eq!(attempt["status"], "failed", "{attempt}");
    assert_eq!(attempt["exit_code"], 3, "{attempt}");
    let err = attempt["error"].as_str().expect("an error");
    assert!(err.starts_with("rank 1 exited with code 3"), "{err}");
    assert!(err.contains("[rank 1] rank 1 gives up"), "{err}");

    let pid = std::fs::read_to_string(sb.path().join("rank0.pid")).expect("rank 0 started");
    assert!(
        !alive(&pid),
        "rank 0 (pid {pid}) must go with the failed attempt"
    );
    assert_eq!(
        processes_of_run(&run),
        Vec::<String>::new(),
        "leftovers of run {run}"
    );
    let log = sb.leo_ok(&["logs", &run, "ranks"]);
    assert!(log.contains("rank 0 waiting for rank 1\n"), "{log}");
}
