//! `leo verify` re-hashes an artifact's files and names the bad one; `leo gc` removes only what
//! no recorded artifact needs, and only with --delete. On local or team storage, like the rest.

use leo_e2e::{diamond, output_digest, stage, Sandbox};

#[test]
fn verify_finds_a_corrupted_file_and_gc_removes_only_orphans() {
    let sb = Sandbox::new();
    diamond(&sb, 6, false, false);
    sb.leo_ok(&["run", "diamond.toml"]);
    let status = sb.status(None);
    let report = output_digest(&status, "d", "report");
    let numbers = output_digest(&status, "a", "numbers");
    let ok = sb.leo_ok(&["verify", &report[..19]]);
    assert!(ok.contains("intact (1 files"), "{ok}");

    // Orphans: a manifest, a blob and a record no recorded artifact mentions (an upload that
    // died).
    let root = sb.store_root();
    let orphan_blob = root.join(format!("blobs/sha256/ee/{}", "e".repeat(64)));
    let orphan_manifest = root.join(format!("manifests/sha256/{}.json", "f".repeat(64)));
    let orphan_record = root.join(format!(
        "records/sha256/{}/x.leo-artifact.json",
        "f".repeat(64)
    ));
    for (p, body) in [
        (&orphan_blob, "lost bytes"),
        (&orphan_manifest, "{\"files\":[]}"),
        (&orphan_record, "{}"),
    ] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    // Young objects are left alone by default (they may be an upload in progress).
    assert!(sb.leo_ok(&["gc"]).contains("nothing to collect"));
    let dry = sb.leo_ok(&["gc", "--min-age", "0s"]);
    assert!(
        dry.contains("would remove 1 manifests, 1 blobs and 1 records"),
        "{dry}"
    );
    assert!(
        orphan_blob.exists() && orphan_manifest.exists(),
        "a dry run removed something"
    );
    let done = sb.leo_ok(&["gc", "--delete", "--min-age", "0s"]);
    assert!(
        done.contains("removed 1 manifests, 1 blobs and 1 records"),
        "{done}"
    );
    assert!(!orphan_blob.exists() && !orphan_manifest.exists() && !orphan_record.exists());
    assert!(sb
        .leo_ok(&["gc", "--min-age", "0s"])
        .contains("nothing to collect"));
    // Everything recorded survived: a rerun is all cache hits.
    sb.leo_ok(&["run", "diamond.toml"]);
    let again = sb.status(None);
    for s in ["a", "b", "c", "d"] {
        assert_eq!(stage(&again, s)["status"], "cached", "{s}");
    }

    // Corrupt the file behind `numbers`: verify names it and fails.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(format!("manifests/sha256/{}.json", &numbers[7..])))
            .expect("manifest"),
    )
    .expect("json");
    let sha = manifest["files"][0]["sha256"]
        .as_str()
        .expect("sha")
        .to_string();
    let blob = root.join(format!("blobs/sha256/{}/{sha}", &sha[..2]));
    let len = std::fs::metadata(&blob).expect("blob").len() as usize;
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, vec![b'x'; len]).expect("corrupt the blob");
    let out = sb.leo(&["verify", &numbers]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("n.txt: corrupt"), "{err}");
}
